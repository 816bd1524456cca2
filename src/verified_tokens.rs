//! Context tokens whose signature this process has already checked.
//!
//! An iframe gets a context token from `AP.context.getToken()` and reuses it for every call to
//! the app's API until it nearly expires (15 minutes), so most API requests carry a token the
//! guard has seen before. Decoding it and computing its HMAC again gives the same answer each
//! time, as long as the key is the same: this cache remembers, per token, its decoded claims and
//! *which tenant snapshot's key* verified it ([`crate::tenants::TenantSnapshot::id`]).
//!
//! What it does not remember is the decision: [`crate::guard::authorize`] still runs every
//! check on every request — tenant installed and enabled, `exp`/`iat`/`nbf` against the
//! request's clock, the route's qsh policy, the license — and only skips the HMAC when the
//! tenant snapshot it found is the one whose key verified these exact bytes. Any change to a
//! tenant (a new secret, an uninstall, a grant) replaces its snapshot, so the next request
//! verifies the signature again.
//!
//! Only context tokens are cached: query-bound tokens are minted per iframe URL and rarely seen
//! twice. Entries are keyed by the signature segment (short, and only known to someone holding
//! the token); a hit also compares the whole token. The cache is bounded: when full, expired
//! tokens are dropped, and if that frees nothing, everything is.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::connect::jwt::Claims;

/// Enough for the context tokens of ~16k concurrently active iframes; at ~0.5 KiB per entry,
/// at most ~8 MiB.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

/// A token already verified: what [`VerifiedTokens::get`] returns.
#[derive(Debug, Clone)]
pub struct KnownToken {
    pub claims: Arc<Claims>,
    /// The [`crate::tenants::TenantSnapshot::id`] whose key verified the signature.
    pub verified_by: u64,
}

struct Entry {
    token: Box<str>,
    known: KnownToken,
    /// `exp` plus leeway: after this, no request can accept the token anyway.
    useless_after: i64,
}

/// See the module documentation. Shared by all workers of the process.
pub struct VerifiedTokens {
    entries: RwLock<HashMap<Box<str>, Entry>>,
    capacity: usize,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for VerifiedTokens {
    /// Tokens are bearer credentials: only the count is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            entries: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The claims of `token` and the snapshot whose key verified it, if this exact token was
    /// verified before.
    pub fn get(&self, token: &str) -> Option<KnownToken> {
        let signature = signature_of(token)?;
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(signature)?;
        (*entry.token == *token).then(|| entry.known.clone())
    }

    /// Remembers that the key of snapshot `verified_by` verified `token`, whose decoded claims
    /// are `claims`. `now` and `leeway_secs` bound how long the entry is worth keeping.
    pub fn insert(
        &self,
        token: &str,
        claims: Arc<Claims>,
        verified_by: u64,
        now: i64,
        leeway_secs: u64,
    ) {
        let Some(signature) = signature_of(token) else {
            return;
        };
        let useless_after = claims
            .exp
            .unwrap_or(now)
            .saturating_add(i64::try_from(leeway_secs).unwrap_or(i64::MAX));
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(signature) {
            entries.retain(|_, e| e.useless_after >= now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            signature.into(),
            Entry {
                token: token.into(),
                known: KnownToken {
                    claims,
                    verified_by,
                },
                useless_after,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The third segment of a compact JWT; `None` when there is none or it is empty.
fn signature_of(token: &str) -> Option<&str> {
    token
        .rsplit_once('.')
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Arc<Claims> {
        Arc::new(Claims {
            iss: Some("client".into()),
            exp: Some(exp),
            iat: Some(exp - 100),
            ..Default::default()
        })
    }

    #[test]
    fn a_hit_needs_the_whole_token_not_just_its_signature() {
        let cache = VerifiedTokens::new(8);
        cache.insert("h.p.sig", claims(1_000), 7, 900, 0);
        let hit = cache.get("h.p.sig").expect("same token");
        assert_eq!(hit.verified_by, 7);
        assert_eq!(hit.claims.exp, Some(1_000));
        // Same signature segment, other header or claims: not the verified token.
        assert!(cache.get("h.other.sig").is_none());
        assert!(cache.get("x.p.sig").is_none());
        assert!(cache.get("h.p.sig2").is_none());
        assert!(cache.get("h.p.").is_none());
        assert!(cache.get("nodots").is_none());
    }

    #[test]
    fn unsigned_tokens_are_never_stored() {
        let cache = VerifiedTokens::new(8);
        cache.insert("h.p.", claims(1_000), 1, 900, 0);
        cache.insert("nodots", claims(1_000), 1, 900, 0);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_newer_verification_replaces_the_older() {
        let cache = VerifiedTokens::new(8);
        cache.insert("h.p.sig", claims(1_000), 1, 900, 0);
        cache.insert("h.p.sig", claims(1_000), 2, 900, 0);
        assert_eq!(cache.get("h.p.sig").map(|k| k.verified_by), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn when_full_expired_tokens_go_first_then_everything() {
        let cache = VerifiedTokens::new(3);
        cache.insert("a.a.old1", claims(100), 1, 50, 10);
        cache.insert("a.a.old2", claims(100), 1, 50, 10);
        cache.insert("a.a.live", claims(1_000), 1, 50, 10);
        // At 200 the first two ended (exp 100 + leeway 10): they make room.
        cache.insert("a.a.new", claims(1_000), 1, 200, 10);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a.a.old1").is_none());
        assert!(cache.get("a.a.live").is_some());
        assert!(cache.get("a.a.new").is_some());

        // Full of live tokens: all are dropped rather than growing past the bound.
        cache.insert("a.a.more", claims(1_000), 1, 200, 10);
        assert_eq!(cache.len(), 3);
        cache.insert("a.a.over", claims(1_000), 1, 200, 10);
        assert_eq!(cache.len(), 1);
        assert!(cache.get("a.a.over").is_some());
    }

    #[test]
    fn debug_shows_no_token() {
        let cache = VerifiedTokens::new(8);
        cache.insert("h.p.secret-signature", claims(1_000), 1, 900, 0);
        let shown = format!("{cache:?}");
        assert!(!shown.contains("secret-signature"), "{shown}");
        assert!(shown.contains("len: 1"), "{shown}");
    }
}

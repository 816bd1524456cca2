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
//! the token); a hit also compares the whole token. The cache is bounded by two generations:
//! new tokens go into the current one; when it holds half the capacity it becomes the previous
//! one and the old previous one is dropped — outside the lock and on a short-lived thread of
//! its own, so no request waits for the freeing of thousands of entries. A token in constant
//! use is verified again once every one or two generations.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::connect::jwt::Claims;

/// At most this many tokens are kept, and at least half as many (the newest): the context
/// tokens of ~8–16k concurrently active iframes. At ~0.5 KiB per entry, at most ~8 MiB.
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
}

type Generation = HashMap<Box<str>, Entry>;

#[derive(Default)]
struct Generations {
    current: Generation,
    previous: Generation,
}

/// See the module documentation. Shared by all workers of the process.
pub struct VerifiedTokens {
    generations: RwLock<Generations>,
    /// Entries per generation: half the capacity.
    per_generation: usize,
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
    /// A cache of at most `capacity` tokens (at least 2).
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            generations: RwLock::new(Generations::default()),
            per_generation: (capacity / 2).max(1),
        }
    }

    /// The claims of `token` and the snapshot whose key verified it, if this exact token was
    /// verified before.
    pub fn get(&self, token: &str) -> Option<KnownToken> {
        let signature = signature_of(token)?;
        let generations = self.generations.read().unwrap_or_else(|e| e.into_inner());
        let entry = generations
            .current
            .get(signature)
            .or_else(|| generations.previous.get(signature))?;
        (*entry.token == *token).then(|| entry.known.clone())
    }

    /// Remembers that the key of snapshot `verified_by` verified `token`, whose decoded claims
    /// are `claims`.
    pub fn insert(&self, token: &str, claims: Arc<Claims>, verified_by: u64) {
        let Some(signature) = signature_of(token) else {
            return;
        };
        let entry = Entry {
            token: token.into(),
            known: KnownToken {
                claims,
                verified_by,
            },
        };
        let retired = {
            let mut generations = self.generations.write().unwrap_or_else(|e| e.into_inner());
            let retired = (generations.current.len() >= self.per_generation
                && !generations.current.contains_key(signature))
            .then(|| {
                // Sized once for the whole generation: no rehashing while it fills.
                let fresh = HashMap::with_capacity(self.per_generation);
                let full = std::mem::replace(&mut generations.current, fresh);
                std::mem::replace(&mut generations.previous, full)
            });
            generations.current.insert(signature.into(), entry);
            retired
        };
        // Freed after the lock is released, and off the request's worker thread: thousands of
        // entries take a millisecond or two to free, a stall for every connection of that worker.
        if let Some(retired) = retired.filter(|r| !r.is_empty()) {
            let spawned = std::thread::Builder::new()
                .name("token-cache-free".into())
                .spawn(move || drop(retired));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a thread to free old tokens; freeing inline");
            }
        }
    }

    pub fn len(&self) -> usize {
        let generations = self.generations.read().unwrap_or_else(|e| e.into_inner());
        generations.current.len() + generations.previous.len()
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
        cache.insert("h.p.sig", claims(1_000), 7);
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
        cache.insert("h.p.", claims(1_000), 1);
        cache.insert("nodots", claims(1_000), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_newer_verification_replaces_the_older() {
        let cache = VerifiedTokens::new(8);
        cache.insert("h.p.sig", claims(1_000), 1);
        cache.insert("h.p.sig", claims(1_000), 2);
        assert_eq!(cache.get("h.p.sig").map(|k| k.verified_by), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn when_full_the_older_generation_goes() {
        let cache = VerifiedTokens::new(4); // two generations of two
        cache.insert("a.a.one", claims(1_000), 1);
        cache.insert("a.a.two", claims(1_000), 1);
        assert_eq!(cache.len(), 2);
        // The current generation is full: it becomes the previous one.
        cache.insert("a.a.three", claims(1_000), 1);
        assert_eq!(cache.len(), 3);
        for token in ["a.a.one", "a.a.two", "a.a.three"] {
            assert!(cache.get(token).is_some(), "{token}");
        }
        cache.insert("a.a.four", claims(1_000), 1);
        // Full again: the first two tokens are dropped, never more than the capacity is kept.
        cache.insert("a.a.five", claims(1_000), 1);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("a.a.one").is_none());
        assert!(cache.get("a.a.two").is_none());
        for token in ["a.a.three", "a.a.four", "a.a.five"] {
            assert!(cache.get(token).is_some(), "{token}");
        }
        // Re-verifying a known token does not rotate.
        cache.insert("a.a.five", claims(1_000), 2);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("a.a.five").map(|k| k.verified_by), Some(2));
    }

    #[test]
    fn debug_shows_no_token() {
        let cache = VerifiedTokens::new(8);
        cache.insert("h.p.secret-signature", claims(1_000), 1);
        let shown = format!("{cache:?}");
        assert!(!shown.contains("secret-signature"), "{shown}");
        assert!(shown.contains("len: 1"), "{shown}");
    }
}

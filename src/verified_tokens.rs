//! Tokens whose signature this process has already checked: Connect context tokens and Forge
//! Invocation Tokens.
//!
//! An iframe gets a context token from `AP.context.getToken()` and reuses it for every call to
//! the app's API until it nearly expires (15 minutes), so most API requests carry a token the
//! guard has seen before; Forge's bridge does the same with the FIT of `requestRemote`. Decoding
//! a token and checking its signature again gives the same answer each time, as long as the key
//! is the same: [`TokenCache`] remembers, per token, what its verification established and *which
//! key* verified it —
//!
//! * for a context token ([`VerifiedTokens`]): its decoded claims and the tenant snapshot whose
//!   shared secret verified it ([`crate::tenants::TenantSnapshot::id`]);
//! * for a FIT ([`VerifiedFits`]): the verified [`Fit`] and the RS256 key of the Forge key set
//!   that verified it, by `kid` *and* identity ([`KnownFit::verified_by`]).
//!
//! What it does not remember is the decision. For a context token [`crate::guard::authorize`]
//! still runs every check on every request — tenant installed and enabled, `exp`/`iat`/`nbf`
//! against the request's clock, the route's qsh policy, the license — and only skips the HMAC
//! when the tenant snapshot it found is the one whose key verified these exact bytes. Any change
//! to a tenant (a new secret, an uninstall, a grant) replaces its snapshot, so the next request
//! verifies the signature again. For a FIT, [`recall_fit`] skips only the RS256 check and the
//! decoding: the times (with leeway, at the request's clock), the audience and environment
//! policy, and after it the installation look-up, the disabled check and the licence decision
//! run on every request. A key the key set no longer holds under that `kid` (rotated,
//! withdrawn, or merely fetched again) verifies nothing from the cache.
//!
//! Only context tokens and FITs are cached: query-bound tokens are minted per iframe URL and
//! rarely seen twice. Entries are keyed by the signature segment (short, and only known to
//! someone holding the token); a hit also compares the whole token. The cache is bounded by two
//! generations: new tokens go into the current one; when it holds half the capacity it becomes
//! the previous one and the old previous one is dropped — outside the lock and on a short-lived
//! thread of its own, so no request waits for the freeing of thousands of entries. A token in
//! constant use is verified again once every one or two generations.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use jsonwebtoken::DecodingKey;

use crate::connect::jwt::{Claims, MAX_TOKEN_LEN};
use crate::forge::fit::{self, Fit, FitError, FitPolicy};

/// At most this many context tokens are kept, and at least half as many (the newest): the
/// context tokens of ~8–16k concurrently active iframes. At ~0.5 KiB per entry, at most ~8 MiB.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

/// At most this many FITs are kept. A FIT and its parsed claims take ~2 KiB (four times a
/// context token), so a quarter of the count keeps the same ~8 MiB bound.
pub const FIT_CAPACITY: usize = 4 * 1024;

/// A token already verified: what [`VerifiedTokens::get`] returns.
#[derive(Debug, Clone)]
pub struct KnownToken {
    pub claims: Arc<Claims>,
    /// The [`crate::tenants::TenantSnapshot::id`] whose key verified the signature.
    pub verified_by: u64,
}

/// Context tokens whose HMAC was checked, with the tenant snapshot whose key checked it.
pub type VerifiedTokens = TokenCache<KnownToken>;

struct Entry<T> {
    token: Box<str>,
    known: T,
}

type Generation<T> = HashMap<Box<str>, Entry<T>>;

struct Generations<T> {
    current: Generation<T>,
    previous: Generation<T>,
}

/// See the module documentation: verified tokens by signature segment, with what their
/// verification established (`T`), in two bounded generations. Shared by all workers of the
/// process.
pub struct TokenCache<T> {
    generations: RwLock<Generations<T>>,
    /// Entries per generation: half the capacity.
    per_generation: usize,
}

impl Default for TokenCache<KnownToken> {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl Default for TokenCache<KnownFit> {
    fn default() -> Self {
        Self::new(FIT_CAPACITY)
    }
}

impl<T: Clone + Send + 'static> std::fmt::Debug for TokenCache<T> {
    /// Tokens are bearer credentials: only the count is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + 'static> TokenCache<T> {
    /// A cache of at most `capacity` tokens (at least 2).
    pub fn new(capacity: usize) -> TokenCache<T> {
        TokenCache {
            generations: RwLock::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
            per_generation: (capacity / 2).max(1),
        }
    }

    /// What the verification of `token` established, if this exact token was verified before.
    pub fn get(&self, token: &str) -> Option<T> {
        let signature = signature_of(token)?;
        let generations = self.generations.read().unwrap_or_else(|e| e.into_inner());
        let entry = generations
            .current
            .get(signature)
            .or_else(|| generations.previous.get(signature))?;
        (*entry.token == *token).then(|| entry.known.clone())
    }

    /// Remembers that `token` was verified, and what that established (`known`).
    pub fn insert(&self, token: &str, known: T) {
        let Some(signature) = signature_of(token) else {
            return;
        };
        let entry = Entry {
            token: token.into(),
            known,
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

/// A Forge Invocation Token already verified: its checked claims, and the key that verified
/// its RS256 signature.
#[derive(Debug, Clone)]
pub struct KnownFit {
    pub fit: Arc<Fit>,
    /// The `kid` of the token's header, under which the key set held [`KnownFit::key`].
    pub kid: Arc<str>,
    /// The key, as the key set held it. Weak: the entry never keeps a withdrawn key usable,
    /// and while it exists the allocation cannot be reused for another key, so comparing
    /// addresses is comparing keys.
    pub key: Weak<DecodingKey>,
}

impl KnownFit {
    /// Whether `current` — what the key set holds under [`KnownFit::kid`] now — is the very key
    /// that verified the token. The key set builds new keys each time it is fetched, so after
    /// a refetch (hourly, or for an unknown `kid`) every FIT is verified again once.
    pub fn verified_by(&self, current: &Arc<DecodingKey>) -> bool {
        std::ptr::eq(self.key.as_ptr(), Arc::as_ptr(current))
    }
}

/// Forge Invocation Tokens whose signature was checked, with the key that checked it.
pub type VerifiedFits = TokenCache<KnownFit>;

/// A FIT verified before, when its signature may be trusted again: this exact token is in
/// `cache`, and `current_key` (the key set's look-up by `kid`, in memory) still holds the key
/// that verified it. `None` when it must be verified in full ([`verify_fit`]); otherwise the
/// checks that depend on the clock and the configuration, run again at `now`
/// ([`fit::check_again`]).
pub fn recall_fit(
    cache: &VerifiedFits,
    token: &str,
    current_key: impl FnOnce(&str) -> Option<Arc<DecodingKey>>,
    policy: &FitPolicy,
    now: i64,
) -> Option<Result<Arc<Fit>, FitError>> {
    let known = cache.get(token)?;
    let current = current_key(&known.kid)?;
    known
        .verified_by(&current)
        .then(|| fit::check_again(&known.fit, policy, now).map(|()| known.fit))
}

/// How a FIT was accepted: recalled from the cache, or verified in full now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitSource {
    Recalled,
    Verified,
}

/// The guard's one way to a verified FIT: [`recall_fit`] with the key set's current key
/// (`current_key`), else the header's `kid` ([`fit::peek_kid`]), the key found for it
/// (`find_key`, which may fetch the key set) and [`verify_fit`].
pub async fn recall_or_verify(
    cache: &VerifiedFits,
    token: &str,
    current_key: impl FnOnce(&str) -> Option<Arc<DecodingKey>>,
    find_key: impl AsyncFnOnce(&str) -> Result<Arc<DecodingKey>, FitError>,
    policy: &FitPolicy,
    now: i64,
) -> Result<(Arc<Fit>, FitSource), FitError> {
    if let Some(recalled) = recall_fit(cache, token, current_key, policy, now) {
        return recalled.map(|fit| (fit, FitSource::Recalled));
    }
    let kid = fit::peek_kid(token)?;
    let key = find_key(&kid).await?;
    verify_fit(cache, token, &kid, &key, policy, now).map(|fit| (fit, FitSource::Verified))
}

/// Verifies a FIT in full with `key`, found under `kid` ([`fit::verify`]), and remembers it
/// in `cache` when it passes.
pub fn verify_fit(
    cache: &VerifiedFits,
    token: &str,
    kid: &str,
    key: &Arc<DecodingKey>,
    policy: &FitPolicy,
    now: i64,
) -> Result<Arc<Fit>, FitError> {
    let verified = Arc::new(fit::verify(token, key, policy, now)?);
    cache.insert(
        token,
        KnownFit {
            fit: verified.clone(),
            kid: kid.into(),
            key: Arc::downgrade(key),
        },
    );
    Ok(verified)
}

/// The last segment of a compact JWT (its signature); `None` when it is empty, or when the token
/// is longer than any token accepted: such a token is never hashed. The segment is found from
/// the end, without scanning the claims: a hit compares the whole token anyway, and a miss is
/// verified in full.
fn signature_of(token: &str) -> Option<&str> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
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

    /// What the guard stores for a context token of snapshot `verified_by`.
    fn known(exp: i64, verified_by: u64) -> KnownToken {
        KnownToken {
            claims: claims(exp),
            verified_by,
        }
    }

    #[test]
    fn a_hit_needs_the_whole_token_not_just_its_signature() {
        let cache = VerifiedTokens::new(8);
        cache.insert("h.p.sig", known(1_000, 7));
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
        cache.insert("h.p.", known(1_000, 1));
        cache.insert("nodots", known(1_000, 1));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_newer_verification_replaces_the_older() {
        let cache = VerifiedTokens::new(8);
        cache.insert("h.p.sig", known(1_000, 1));
        cache.insert("h.p.sig", known(1_000, 2));
        assert_eq!(cache.get("h.p.sig").map(|k| k.verified_by), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn when_full_the_older_generation_goes() {
        let cache = VerifiedTokens::new(4); // two generations of two
        cache.insert("a.a.one", known(1_000, 1));
        cache.insert("a.a.two", known(1_000, 1));
        assert_eq!(cache.len(), 2);
        // The current generation is full: it becomes the previous one.
        cache.insert("a.a.three", known(1_000, 1));
        assert_eq!(cache.len(), 3);
        for token in ["a.a.one", "a.a.two", "a.a.three"] {
            assert!(cache.get(token).is_some(), "{token}");
        }
        cache.insert("a.a.four", known(1_000, 1));
        // Full again: the first two tokens are dropped, never more than the capacity is kept.
        cache.insert("a.a.five", known(1_000, 1));
        assert_eq!(cache.len(), 3);
        assert!(cache.get("a.a.one").is_none());
        assert!(cache.get("a.a.two").is_none());
        for token in ["a.a.three", "a.a.four", "a.a.five"] {
            assert!(cache.get(token).is_some(), "{token}");
        }
        // Re-verifying a known token does not rotate.
        cache.insert("a.a.five", known(1_000, 2));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("a.a.five").map(|k| k.verified_by), Some(2));
    }

    #[test]
    fn debug_shows_no_token() {
        let cache = VerifiedTokens::new(8);
        cache.insert("h.p.secret-signature", known(1_000, 1));
        let shown = format!("{cache:?}");
        assert!(!shown.contains("secret-signature"), "{shown}");
        assert!(shown.contains("len: 1"), "{shown}");
    }
}

#[cfg(test)]
mod fit_tests {
    //! The FIT side: a hit skips only the signature, and only while the key set still holds the
    //! key that verified it.
    use std::collections::HashMap;

    use super::*;
    use crate::forge::ids::{AppId, EnvironmentType};
    use crate::forge::testing::{self, APP_UUID, KID, OTHER_PUBLIC_PEM, PUBLIC_PEM};
    use serde_json::json;

    const NOW: i64 = 1_780_000_000;

    type KeySet = HashMap<String, Arc<DecodingKey>>;

    fn key_set(keys: &[(&str, &str)]) -> KeySet {
        keys.iter()
            .map(|(kid, pem)| {
                let key = DecodingKey::from_rsa_pem(pem.as_bytes()).expect("test key");
                ((*kid).to_owned(), Arc::new(key))
            })
            .collect()
    }

    fn policy() -> FitPolicy {
        FitPolicy {
            app_ids: vec![AppId::parse(APP_UUID).unwrap()],
            environments: vec![EnvironmentType::Production],
            leeway_secs: 30,
        }
    }

    fn token(n: u32) -> String {
        let mut claims = testing::claims(NOW);
        claims["jti"] = json!(format!("jti-{n}"));
        testing::mint(&claims, KID)
    }

    /// What the guard does with a FIT ([`recall_or_verify`], with `keys` as the key set); also
    /// says whether the cache answered.
    fn guard_once(
        cache: &VerifiedFits,
        keys: &KeySet,
        token: &str,
        now: i64,
    ) -> Result<(Arc<Fit>, bool), FitError> {
        let current = |kid: &str| keys.get(kid).cloned();
        let find = async |kid: &str| keys.get(kid).cloned().ok_or(FitError::UnknownKid);
        futures::executor::block_on(recall_or_verify(
            cache,
            token,
            current,
            find,
            &policy(),
            now,
        ))
        .map(|(fit, source)| (fit, source == FitSource::Recalled))
    }

    #[test]
    fn an_oversized_token_is_never_looked_up() {
        assert_eq!(signature_of("h.p.sig"), Some("sig"));
        assert_eq!(signature_of("h.p."), None);
        let long = format!("h.p.{}", "s".repeat(MAX_TOKEN_LEN));
        assert_eq!(signature_of(&long), None, "refused before any hashing");
        let cache = VerifiedFits::default();
        let keys = key_set(&[(KID, PUBLIC_PEM)]);
        assert!(matches!(
            guard_once(&cache, &keys, &long, NOW),
            Err(FitError::Malformed)
        ));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_fit_is_verified_once_then_recalled() {
        let cache = VerifiedFits::default();
        let keys = key_set(&[(KID, PUBLIC_PEM)]);
        let t = token(1);
        let (first, recalled) = guard_once(&cache, &keys, &t, NOW).unwrap();
        assert!(!recalled, "first sight is verified in full");
        let (second, recalled) = guard_once(&cache, &keys, &t, NOW + 1).unwrap();
        assert!(recalled, "second sight comes from the cache");
        assert!(
            Arc::ptr_eq(&first, &second),
            "the same verified claims, no copy"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_recalled_fit_is_still_refused_when_expired_or_out_of_policy() {
        let cache = VerifiedFits::default();
        let keys = key_set(&[(KID, PUBLIC_PEM)]);
        let t = token(1);
        guard_once(&cache, &keys, &t, NOW).unwrap();
        // exp = NOW + 25, leeway 30.
        assert!(guard_once(&cache, &keys, &t, NOW + 55).is_ok());
        assert_eq!(
            guard_once(&cache, &keys, &t, NOW + 56).unwrap_err(),
            FitError::Expired
        );
        let mut development_only = policy();
        development_only.environments = vec![EnvironmentType::Development];
        let current = |kid: &str| keys.get(kid).cloned();
        assert_eq!(
            recall_fit(&cache, &t, current, &development_only, NOW).map(|r| r.map(|_| ())),
            Some(Err(FitError::EnvironmentNotAllowed))
        );
    }

    #[test]
    fn a_key_no_longer_in_the_key_set_verifies_nothing_from_the_cache() {
        let cache = VerifiedFits::default();
        let t = token(1);
        let keys = key_set(&[(KID, PUBLIC_PEM)]);
        guard_once(&cache, &keys, &t, NOW).unwrap();

        // Withdrawn: the kid is gone from the key set.
        let withdrawn = key_set(&[("another-kid", PUBLIC_PEM)]);
        assert_eq!(
            guard_once(&cache, &withdrawn, &t, NOW).unwrap_err(),
            FitError::UnknownKid
        );
        // Replaced under the same kid by another key: the signature is checked and fails.
        let replaced = key_set(&[(KID, OTHER_PUBLIC_PEM)]);
        assert_eq!(
            guard_once(&cache, &replaced, &t, NOW).unwrap_err(),
            FitError::BadSignature
        );
        // The same key material fetched again is another key object: verified again once,
        // then recalled for it.
        let refetched = key_set(&[(KID, PUBLIC_PEM)]);
        let (_, recalled) = guard_once(&cache, &refetched, &t, NOW).unwrap();
        assert!(!recalled, "verified again with the refetched key");
        let (_, recalled) = guard_once(&cache, &refetched, &t, NOW).unwrap();
        assert!(recalled);
        // The old key object no longer matches, even if someone kept it.
        let (_, recalled) = guard_once(&cache, &keys, &t, NOW).unwrap();
        assert!(!recalled);
    }

    #[test]
    fn refused_fits_are_not_remembered_and_the_bound_holds() {
        let keys = key_set(&[(KID, PUBLIC_PEM)]);
        let cache = VerifiedFits::new(4);
        let forged = testing::mint_other(&testing::claims(NOW), KID);
        assert_eq!(
            guard_once(&cache, &keys, &forged, NOW).unwrap_err(),
            FitError::BadSignature
        );
        let expired = token(0);
        assert_eq!(
            guard_once(&cache, &keys, &expired, NOW + 100).unwrap_err(),
            FitError::Expired
        );
        assert!(cache.is_empty(), "a refused FIT is never cached");

        let tokens: Vec<String> = (1..=9).map(token).collect();
        for t in &tokens {
            guard_once(&cache, &keys, t, NOW).unwrap();
            assert!(cache.len() <= 4, "{}", cache.len());
        }
        // The newest are recalled, the oldest verified again.
        assert!(guard_once(&cache, &keys, &tokens[8], NOW).unwrap().1);
        assert!(!guard_once(&cache, &keys, &tokens[0], NOW).unwrap().1);
    }

    #[test]
    fn debug_shows_no_fit() {
        let cache = VerifiedFits::default();
        let keys = key_set(&[(KID, PUBLIC_PEM)]);
        let t = token(1);
        guard_once(&cache, &keys, &t, NOW).unwrap();
        let shown = format!("{cache:?}");
        let (_, signature) = t.rsplit_once('.').unwrap();
        assert!(!shown.contains(signature), "{shown}");
        assert!(shown.contains("len: 1"), "{shown}");
    }
}

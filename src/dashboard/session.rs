//! Dashboard sessions: sign-in with an admin token, the session cookie, CSRF tokens and the
//! one-time message that carries a freshly made access token to the next page.
//!
//! Why a random, server-side session rather than a signed cookie: it can be ended — by
//! sign-out, by revoking the admin token it was opened with, or by changing `ADMIN_TOKEN` —
//! on every instance at once, and it needs no signing key to configure or rotate. The cookie
//! holds 256 random bits; the database holds only their SHA-256.
//!
//! The CSRF token is derived from the cookie's secret (SHA-256 over a label and the secret),
//! so it is bound to the session, needs no storage, and cannot be computed from anything the
//! database holds. The same goes for the key of the one-time message.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::registry::tokens::{self, TokenKind};
use crate::registry::{self, admin_tokens};
use crate::store::{Db, sessions};

/// A session lasts at most this long from sign-in (docs/dashboard.md: at most 12 hours).
pub const LIFETIME: Duration = Duration::hours(12);

/// The cookie's name. With HTTPS it carries the `__Host-` prefix, which browsers only accept
/// with `Secure`, `Path=/` and no `Domain`: a sibling subdomain cannot plant or shadow it.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure { "__Host-ck_dash" } else { "ck_dash" }
}

/// The `Set-Cookie` value for the session cookie: `HttpOnly` (no script reads it),
/// `SameSite=Strict` (no other site's page sends it), `Secure` when the app is served over
/// HTTPS, `Path=/` (the dashboard answers under `APP_BASE_URL`'s path and at the root).
/// `max_age` 0 with an empty value removes it.
pub fn set_cookie(secure: bool, secret: &str, max_age_secs: i64) -> String {
    format!(
        "{}={secret}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

/// A signed-in vendor, as the session middleware found them. Handlers read it from the
/// request extensions (see `dashboard::Signed`).
#[derive(Clone, Debug)]
pub struct Session {
    pub id_hash: String,
    /// The admin token's name, or `env` for `ADMIN_TOKEN`: the actor of the audit trail.
    pub actor: String,
    /// The value every form of this session carries as `csrf_token`.
    pub csrf: String,
    flash_key: [u8; 32],
    /// The sealed one-time message the session row held when the request began.
    flash: Option<String>,
}

impl Session {
    fn from_secret(secret: &str, actor: String) -> Session {
        Session {
            id_hash: tokens::hash(secret),
            actor,
            csrf: hex::encode(derive(secret, b"csrf")),
            flash_key: derive(secret, b"flash"),
            flash: None,
        }
    }

    /// Constant-time comparison of a presented CSRF token with this session's.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        presented.len() == self.csrf.len()
            && bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }

    /// Stores `message` for the next page of this session, encrypted (see `seal`).
    pub async fn set_flash(&self, db: &Db, message: &str) -> sqlx::Result<()> {
        sessions::set_flash(db, &self.id_hash, Some(&seal(&self.flash_key, message))).await
    }

    /// Takes the one-time message, if any (a second call returns `None`).
    pub async fn take_flash(&self, db: &Db) -> sqlx::Result<Option<String>> {
        let Some(sealed) = &self.flash else {
            return Ok(None); // the common case: no query
        };
        Ok(sessions::take_flash(db, &self.id_hash, sealed)
            .await?
            .then(|| open(&self.flash_key, sealed))
            .flatten())
    }
}

fn derive(secret: &str, label: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update([0u8]);
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// Why a sign-in was refused (the page says only "not valid": which check failed is not told).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the admin token is not valid (unknown or revoked)")]
    Invalid,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Checks `token` as the admin API would (`ADMIN_TOKEN`, or an unrevoked token made by
/// `admin-token create`) and opens a session for it. Returns the cookie's secret and the
/// session.
pub async fn sign_in(
    db: &Db,
    env_token: Option<&SecretString>,
    token: &str,
    now: DateTime<Utc>,
) -> Result<(String, Session), SignInError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(SignInError::Invalid);
    }
    let caller = match admin_tokens::authenticate(db, env_token, Some(token)).await {
        Ok(caller) => caller,
        Err(registry::Error::Database(e)) => return Err(e.into()),
        Err(_) => return Err(SignInError::Invalid),
    };
    let admin_token_id = caller.token_id;
    // For ADMIN_TOKEN, its hash: the session ends when the configured value changes.
    let env_token_hash = admin_token_id.is_none().then(|| tokens::hash(token));
    let secret = TokenKind::Session.generate();
    let session = Session::from_secret(&secret, caller.actor);
    sessions::insert(
        db,
        &sessions::NewSession {
            id_hash: &session.id_hash,
            admin_token_id: admin_token_id.as_deref(),
            env_token_hash: env_token_hash.as_deref(),
            actor: &session.actor,
            created_at: now,
            expires_at: now + LIFETIME,
        },
    )
    .await?;
    Ok((secret, session))
}

/// The live session for a cookie's secret: not expired, and its admin token still valid (not
/// revoked; for `ADMIN_TOKEN`, still the configured value). A dead session is deleted.
pub async fn resume(
    db: &Db,
    env_token: Option<&SecretString>,
    secret: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Session>> {
    let id_hash = tokens::hash(secret);
    let Some(row) = sessions::find_live(db, &id_hash, now).await? else {
        return Ok(None);
    };
    let token_valid = match (&row.admin_token_id, &row.env_token_hash) {
        (Some(_), _) => row.token_live,
        (None, Some(h)) => env_token.is_some_and(|e| {
            let current = tokens::hash(e.expose_secret());
            bool::from(current.as_bytes().ct_eq(h.as_bytes()))
        }),
        (None, None) => false,
    };
    if !token_valid {
        sessions::delete(db, &id_hash, now).await?;
        return Ok(None);
    }
    Ok(Some(Session {
        flash: row.flash,
        ..Session::from_secret(secret, row.actor)
    }))
}

/// Ends the session (sign-out).
pub async fn sign_out(db: &Db, session: &Session, now: DateTime<Utc>) -> sqlx::Result<()> {
    sessions::delete(db, &session.id_hash, now).await
}

/// Encrypts a one-time message with `key`: a fresh 16-byte nonce, and the message XORed with
/// SHA-256(key ‖ nonce ‖ counter) blocks (SHA-256 as a PRF in counter mode). Stored as
/// `hex(nonce):hex(ciphertext)`. Confidentiality is all it needs: the row it lives in is
/// already bound to the session, and a tampered message would only show garbage once.
fn seal(key: &[u8; 32], message: &str) -> String {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let ct = xor_stream(key, &nonce, message.as_bytes());
    format!("{}:{}", hex::encode(nonce), hex::encode(ct))
}

fn open(key: &[u8; 32], sealed: &str) -> Option<String> {
    let (nonce, ct) = sealed.split_once(':')?;
    let nonce = hex::decode(nonce).ok()?;
    let ct = hex::decode(ct).ok()?;
    String::from_utf8(xor_stream(key, &nonce, &ct)).ok()
}

fn xor_stream(key: &[u8; 32], nonce: &[u8], data: &[u8]) -> Vec<u8> {
    data.chunks(32)
        .enumerate()
        .flat_map(|(i, chunk)| {
            let mut h = Sha256::new();
            h.update(key);
            h.update(nonce);
            h.update((i as u64).to_be_bytes());
            let block: [u8; 32] = h.finalize().into();
            chunk
                .iter()
                .zip(block)
                .map(|(b, k)| b ^ k)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_round_trips_and_needs_the_key() {
        let key = derive("secret", b"flash");
        let msg = r#"{"id":"x","token":"ckat_0123456789abcdef0123456789abcdef0123456789"}"#;
        let sealed = seal(&key, msg);
        assert!(!sealed.contains("ckat_"));
        assert_eq!(open(&key, &sealed).as_deref(), Some(msg));
        assert_ne!(
            open(&derive("other", b"flash"), &sealed).as_deref(),
            Some(msg)
        );
        assert_ne!(seal(&key, msg), sealed, "a fresh nonce every time");
    }

    #[test]
    fn csrf_is_bound_to_the_session_secret() {
        let a = Session::from_secret("a", "x".into());
        let b = Session::from_secret("b", "x".into());
        assert_ne!(a.csrf, b.csrf);
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
        assert_ne!(
            a.csrf, a.id_hash,
            "the CSRF token does not reveal the stored hash"
        );
    }
}

//! Bearer secrets — vendor access tokens, admin tokens, dashboard session secrets — in one place:
//! how they are generated, how they are stored, how a presented one is compared.
//!
//! Only [`hash`] of a token is stored, so a copy of the database hands out nothing. A fast hash
//! is right here (unlike for passwords): tokens are 256 random bits, there is nothing to
//! brute-force. Stored tokens are found by looking their hash up, so the lookup compares hashes,
//! never the token, and its timing tells an attacker nothing useful; a token from configuration
//! is compared with [`matches`](fn@matches) in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix that makes a leaked admin token recognisable (secret scanners, log reviews).
pub const ADMIN_PREFIX: &str = "ckadm_";

/// Longer presented tokens are not even hashed (ours are at most 70 characters).
pub const MAX_PRESENTED_LEN: usize = 256;

/// The two kinds of token, each with its own shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Gives one site free use: 32 random bytes, URL-safe base64 (43 characters), because it
    /// travels in a URL (`install_url`).
    Access,
    /// Calls the admin API: [`ADMIN_PREFIX`] and 32 random bytes in hex.
    Admin,
    /// A dashboard session's cookie secret: 32 random bytes in hex.
    Session,
}

impl TokenKind {
    /// A new random token of this kind. The plaintext exists only in the return value: the
    /// caller stores [`hash`] of it and shows the token once.
    pub fn generate(self) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        match self {
            TokenKind::Access => URL_SAFE_NO_PAD.encode(bytes),
            TokenKind::Admin => format!("{ADMIN_PREFIX}{}", hex::encode(bytes)),
            TokenKind::Session => hex::encode(bytes),
        }
    }
}

/// The stored form of a token: lower-case hex SHA-256.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares a presented token with a configured one in constant time. Hashing both first makes
/// the comparison independent of their lengths too.
pub fn matches(presented: &str, expected: &SecretString) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_are_random_and_url_safe() {
        let a = TokenKind::Access.generate();
        assert_ne!(a, TokenKind::Access.generate());
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn admin_tokens_are_random_and_prefixed() {
        let a = TokenKind::Admin.generate();
        assert_ne!(a, TokenKind::Admin.generate());
        assert!(a.starts_with(ADMIN_PREFIX));
        assert_eq!(a.len(), ADMIN_PREFIX.len() + 64);
        assert!(a.len() <= MAX_PRESENTED_LEN);
    }

    #[test]
    fn tokens_are_stored_as_hex_sha256() {
        let t = TokenKind::Access.generate();
        let h = hash(&t);
        assert_eq!(h.len(), 64);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!h.contains(&t));
        assert_ne!(h, hash(&TokenKind::Access.generate()));
    }

    #[test]
    fn configured_tokens_compare_exactly() {
        let s = SecretString::from("s3cret-token".to_owned());
        assert!(matches("s3cret-token", &s));
        assert!(!matches("s3cret-toke", &s));
        assert!(!matches("", &s));
    }
}

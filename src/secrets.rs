//! Secrets at rest: tenants' shared secrets (and any later secret column, such as a Forge
//! system token) are stored encrypted with `SECRETS_KEY`.
//!
//! * The AEAD is XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`): its 24-byte nonce is
//!   drawn at random per write without any risk of reuse worth counting, so no nonce counter
//!   has to be kept consistent across instances.
//! * A [`Keyring`] holds one or more keys: the first encrypts, every one decrypts. Rotation is
//!   online: instances are given `SECRETS_KEY=new,old`, then `connect-keeper secrets rotate`
//!   re-encrypts every row under `new`, then `old` can be dropped.
//! * Stored form: `ck1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`. The key id (8 hex digits
//!   of a SHA-256 of the key) names the key without revealing it, so a row says which key it
//!   needs and rotation knows which rows are done.
//! * The associated data is the row's identity ([`Field`] plus the row key, e.g. the client
//!   key): a ciphertext copied into another tenant's row, or another column, does not decrypt.
//! * A value without the `ck1:` prefix is a row written before encryption was switched on (or
//!   while `SECRETS_KEY` is unset) and passes through as it is; it is encrypted on its next
//!   write or by `secrets rotate`.
//!
//! Decryption happens where a secret leaves the database for memory — once per tenant loaded
//! into the cache ([`crate::tenants`]), not per request.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::store::installations::SecretColumn;

/// The prefix of an encrypted value, with the format's version.
const PREFIX: &str = "ck1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// A secret column: its name is part of the associated data, so a value is bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field(&'static str);

impl Field {
    /// `installations.shared_secret`, row key = client key.
    pub const SHARED_SECRET: Field = Field("installations.shared_secret");
    /// `installations.forge_system_token`, row key = the Forge installation id (lower-case
    /// bare uuid), which stays with the token when the row's client key changes.
    pub const FORGE_SYSTEM_TOKEN: Field = Field("installations.forge_system_token");

    /// A column that is not listed here yet (a later table: pass `"table.column"`).
    pub const fn new(table_dot_column: &'static str) -> Field {
        Field(table_dot_column)
    }

    pub fn name(&self) -> &'static str {
        self.0
    }

    fn aad(&self, row_key: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.0.len() + 1 + row_key.len());
        aad.extend_from_slice(self.0.as_bytes());
        aad.push(0);
        aad.extend_from_slice(row_key.as_bytes());
        aad
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// The stored value names a key this process was not given.
    #[error("the secret was encrypted with key {0}, which is not in SECRETS_KEY")]
    UnknownKey(String),
    /// Wrong key, a value moved to another row or column, or a damaged value.
    #[error("the secret does not decrypt (wrong key, another row's value, or damaged)")]
    Undecryptable,
    /// The value has the `ck1:` prefix but not the format.
    #[error("the stored secret is malformed")]
    Malformed,
}

#[derive(Clone)]
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The keys of `SECRETS_KEY`. An empty keyring stores values as they are.
#[derive(Default, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

/// The id of a key: 8 hex digits of SHA-256 over a label and the key. One-way, so the id in
/// every stored value tells nothing about the key.
pub fn key_id(key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"connect-keeper secrets key id\0");
    h.update(key);
    hex::encode(&h.finalize()[..4])
}

/// Parses one key: 32 bytes in standard base64.
pub fn parse_key(b64: &str) -> Result<[u8; 32], String> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|_| "expected 32 bytes in base64 (e.g. `openssl rand -base64 32`)".to_owned())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("expected 32 bytes in base64, got {} bytes", bytes.len()))
}

impl Keyring {
    /// No key: values are stored as they are.
    pub fn empty() -> Keyring {
        Keyring::default()
    }

    /// Keys in order; the first encrypts. Duplicates are dropped.
    pub fn new(keys: &[[u8; 32]]) -> Keyring {
        let mut ring = Keyring::default();
        for key in keys {
            let id = key_id(key);
            if ring.keys.iter().any(|k| k.id == id) {
                continue;
            }
            let cipher = XChaCha20Poly1305::new_from_slice(key).expect("a 32-byte key");
            ring.keys.push(Key { id, cipher });
        }
        ring
    }

    /// `SECRETS_KEY`'s value: one key, or several separated by commas (base64 has none).
    pub fn parse(value: &str) -> Result<Keyring, String> {
        let keys = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_key)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no key given".into());
        }
        Ok(Keyring::new(&keys))
    }

    /// A keyring whose first key is `primary`, followed by this one's keys.
    pub fn with_primary(&self, primary: [u8; 32]) -> Keyring {
        let mut ring = Keyring::new(&[primary]);
        for k in &self.keys {
            if k.id != ring.keys[0].id {
                ring.keys.push(k.clone());
            }
        }
        ring
    }

    /// True when a key is set (values are encrypted).
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The id of the key that encrypts, if any.
    pub fn primary_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    /// The value to store for `plain` in `field` of the row `row_key`: encrypted under the
    /// first key, or `plain` itself when no key is set.
    pub fn seal(&self, field: Field, row_key: &str, plain: &str) -> String {
        let Some(key) = self.keys.first() else {
            return plain.to_owned();
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = field.aad(row_key);
        let ct = key
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any secret-sized message");
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        format!("{PREFIX}{}:{}", key.id, B64.encode(blob))
    }

    /// The plain value of a stored one. A value without the `ck1:` prefix (written before
    /// encryption) is returned as it is.
    pub fn open(&self, field: Field, row_key: &str, stored: &str) -> Result<String, SecretsError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, b64) = rest.split_once(':').ok_or(SecretsError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SecretsError::UnknownKey(id.to_owned()))?;
        let blob = B64.decode(b64).map_err(|_| SecretsError::Malformed)?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretsError::Malformed);
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SecretsError::Malformed)?;
        let aad = field.aad(row_key);
        let plain = key
            .cipher
            .decrypt(&nonce, Payload { msg: ct, aad: &aad })
            .map_err(|_| SecretsError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| SecretsError::Undecryptable)
    }

    /// True when the stored value is not (yet) encrypted under the first key: plain, or
    /// under an older key. Always false without a key.
    pub fn needs_rewrite(&self, stored: &str) -> bool {
        match self.primary_id() {
            None => false,
            Some(id) => stored
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split_once(':'))
                .is_none_or(|(stored_id, _)| stored_id != id),
        }
    }
}

/// Replaces a loaded row's stored shared secret by its plain value, in memory. A value that
/// does not decrypt (a key missing from `SECRETS_KEY`, a damaged or moved value) becomes
/// `None` — the tenant then cannot authenticate, as if uninstalled — and is logged without
/// the value, so a misconfigured key shows up at once instead of as a wave of 401s.
pub fn open_row_secret(keyring: &Keyring, row: &mut crate::store::installations::InstallationRow) {
    let Some(stored) = row.shared_secret.take() else {
        return;
    };
    match keyring.open(Field::SHARED_SECRET, &row.client_key, &stored) {
        Ok(plain) => row.shared_secret = Some(plain),
        Err(e) => {
            tracing::error!(client_key = ?row.client_key, error = %e, "the tenant's shared secret cannot be read");
        }
    }
}

/// True when a stored value is in the encrypted format.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// What one [`rotate`] run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RotateSummary {
    /// Rows looked at.
    pub scanned: u64,
    /// Rows re-encrypted under the first key.
    pub rewritten: u64,
    /// Rows changed by someone else between the read and the write (their new value was
    /// written under the first key already, by whoever changed it with the same keyring).
    pub skipped_concurrent: u64,
    /// Rows that no key of the keyring decrypts: left as they are, counted, logged by key.
    pub undecryptable: u64,
}

/// Re-encrypts every stored secret (shared secrets, Forge system tokens) under the keyring's
/// first key, in batches of `batch` rows, online: each row is replaced only if it still holds
/// the value that was read (compare-and-set), so a concurrent install is never overwritten. The
/// plain value does not change, so caches of running instances stay valid.
pub async fn rotate(
    db: &crate::store::Db,
    keyring: &Keyring,
    batch: usize,
) -> anyhow::Result<RotateSummary> {
    anyhow::ensure!(
        keyring.is_enabled(),
        "SECRETS_KEY is unset: there is no key to encrypt with"
    );
    let mut summary = RotateSummary::default();
    for column in SecretColumn::ALL {
        rotate_column(db, keyring, column, batch, &mut summary).await?;
    }
    Ok(summary)
}

/// The sealed field of a secret column (its name is in the associated data).
fn field_of(column: SecretColumn) -> Field {
    match column {
        SecretColumn::SharedSecret => Field::SHARED_SECRET,
        SecretColumn::ForgeSystemToken => Field::FORGE_SYSTEM_TOKEN,
    }
}

async fn rotate_column(
    db: &crate::store::Db,
    keyring: &Keyring,
    column: SecretColumn,
    batch: usize,
    summary: &mut RotateSummary,
) -> anyhow::Result<()> {
    use crate::store::installations::{replace_secret, secrets_page};
    let field = field_of(column);
    let mut after = String::new();
    loop {
        let rows = secrets_page(db, column, &after, batch).await?;
        let Some(last) = rows.last() else { break };
        after = last.client_key.clone();
        for row in &rows {
            summary.scanned += 1;
            if !keyring.needs_rewrite(&row.stored) {
                continue;
            }
            let plain = match keyring.open(field, &row.row_key, &row.stored) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(client_key = ?row.client_key, error = %e, "cannot re-encrypt a {}", column.what());
                    summary.undecryptable += 1;
                    continue;
                }
            };
            let sealed = keyring.seal(field, &row.row_key, &plain);
            if replace_secret(db, column, &row.client_key, &row.stored, &sealed).await? {
                summary.rewritten += 1;
            } else {
                summary.skipped_concurrent += 1;
            }
        }
        if rows.len() < batch {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: [u8; 32] = [1; 32];
    const K2: [u8; 32] = [2; 32];

    #[test]
    fn round_trip_and_format() {
        let ring = Keyring::new(&[K1]);
        let s = ring.seal(Field::SHARED_SECRET, "ck", "the-secret");
        assert!(s.starts_with(&format!("ck1:{}:", key_id(&K1))), "{s}");
        assert!(!s.contains("the-secret"));
        assert_eq!(
            ring.open(Field::SHARED_SECRET, "ck", &s).unwrap(),
            "the-secret"
        );
        // A fresh nonce per write: the same secret never gives the same stored value.
        assert_ne!(s, ring.seal(Field::SHARED_SECRET, "ck", "the-secret"));
    }

    #[test]
    fn bound_to_the_row_and_the_column() {
        let ring = Keyring::new(&[K1]);
        let s = ring.seal(Field::SHARED_SECRET, "ck-a", "secret");
        assert_eq!(
            ring.open(Field::SHARED_SECRET, "ck-b", &s),
            Err(SecretsError::Undecryptable)
        );
        assert_eq!(
            ring.open(Field::new("forge.system_token"), "ck-a", &s),
            Err(SecretsError::Undecryptable)
        );
    }

    #[test]
    fn every_key_decrypts_the_first_encrypts() {
        let old = Keyring::new(&[K1]);
        let s_old = old.seal(Field::SHARED_SECRET, "ck", "s");
        let both = Keyring::new(&[K2, K1]);
        assert_eq!(both.open(Field::SHARED_SECRET, "ck", &s_old).unwrap(), "s");
        assert!(both.needs_rewrite(&s_old));
        let s_new = both.seal(Field::SHARED_SECRET, "ck", "s");
        assert!(!both.needs_rewrite(&s_new));
        assert_eq!(
            old.open(Field::SHARED_SECRET, "ck", &s_new),
            Err(SecretsError::UnknownKey(key_id(&K2)))
        );
        let promoted = old.with_primary(K2);
        assert_eq!(promoted.primary_id(), Some(key_id(&K2).as_str()));
        assert_eq!(
            promoted.open(Field::SHARED_SECRET, "ck", &s_old).unwrap(),
            "s"
        );
    }

    #[test]
    fn plain_values_pass_through() {
        let ring = Keyring::new(&[K1]);
        assert_eq!(
            ring.open(Field::SHARED_SECRET, "ck", "plain").unwrap(),
            "plain"
        );
        assert!(ring.needs_rewrite("plain"));
        let none = Keyring::empty();
        assert_eq!(none.seal(Field::SHARED_SECRET, "ck", "plain"), "plain");
        assert!(!none.needs_rewrite("plain"));
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let ring = Keyring::new(&[K1]);
        let s = ring.seal(Field::SHARED_SECRET, "ck", "secret");
        let mut bytes = s.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(ring.open(Field::SHARED_SECRET, "ck", &tampered).is_err());
        for bad in ["ck1:", "ck1:nokey", &format!("ck1:{}:@@@", key_id(&K1))] {
            assert!(ring.open(Field::SHARED_SECRET, "ck", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_keys() {
        let b = B64.encode(K1);
        let ring = Keyring::parse(&format!("{}, {b}", B64.encode(K2))).unwrap();
        assert_eq!(ring.primary_id(), Some(key_id(&K2).as_str()));
        assert!(Keyring::parse("short").is_err());
        assert!(Keyring::parse(&B64.encode([0u8; 16])).is_err());
        assert!(Keyring::parse(" , ").is_err());
        assert!(!format!("{ring:?}").contains(&b));
    }
}

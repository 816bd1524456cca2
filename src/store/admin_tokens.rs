//! Admin API bearer tokens made by `connect-keeper admin-token create`.
//!
//! Only the SHA-256 (hex) of a token is stored, so a copy of the database does not hand out
//! admin access. A presented token is hashed and looked up by that hash: the lookup compares
//! hashes, never the token, so its timing tells an attacker nothing useful about the token.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Db;

/// An admin token without its hash (nothing secret).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AdminTokenRow {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, name, created_at, revoked_at, last_used_at";

/// Prefix that makes a leaked admin token recognisable (secret scanners, logs review).
pub const TOKEN_PREFIX: &str = "ckadm_";

/// SHA-256 of a token, lower-case hex.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token: the prefix and 32 random bytes in hex (256 bits).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// Stores a new token and returns its row and the plaintext, which exists only in this return
/// value: the caller shows it once.
pub async fn create(
    db: &Db,
    name: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<(AdminTokenRow, String)> {
    let token = generate();
    let row = AdminTokenRow {
        id: super::new_id(),
        name: name.to_owned(),
        created_at: now,
        revoked_at: None,
        last_used_at: None,
    };
    crate::on_db!(db, |p| {
        sqlx::query(
            "INSERT INTO admin_tokens (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(hash(&token))
        .bind(now)
        .execute(p)
        .await
        .map(|_| ())
    })?;
    Ok((row, token))
}

/// Every token, oldest first, revoked ones included (for the record).
pub async fn list(db: &Db) -> sqlx::Result<Vec<AdminTokenRow>> {
    let sql = format!("SELECT {COLUMNS} FROM admin_tokens ORDER BY created_at, id");
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, AdminTokenRow>(sqlx::AssertSqlSafe(sql.as_str()))
            .fetch_all(p)
            .await
    })
}

pub async fn get(db: &Db, id: &str) -> sqlx::Result<Option<AdminTokenRow>> {
    let sql = format!("SELECT {COLUMNS} FROM admin_tokens WHERE id = $1");
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, AdminTokenRow>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(id)
            .fetch_optional(p)
            .await
    })
}

/// Revokes a token; `None` when there is no such id. Revoking twice keeps the first time.
pub async fn revoke(db: &Db, id: &str, now: DateTime<Utc>) -> sqlx::Result<Option<AdminTokenRow>> {
    crate::on_db!(db, |p| {
        sqlx::query("UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(p)
            .await
            .map(|_| ())
    })?;
    get(db, id).await
}

/// The unrevoked token whose hash is `token_hash`, if any.
pub async fn find_active(db: &Db, token_hash: &str) -> sqlx::Result<Option<AdminTokenRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL");
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, AdminTokenRow>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(token_hash)
            .fetch_optional(p)
            .await
    })
}

/// Notes a use, at most once a minute per token so that busy scripts do not turn every
/// admin read into a write.
pub async fn touch(db: &Db, id: &str, now: DateTime<Utc>) -> sqlx::Result<()> {
    let stale = now - chrono::Duration::seconds(60);
    crate::on_db!(db, |p| {
        sqlx::query(
            "UPDATE admin_tokens SET last_used_at = $2
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(id)
        .bind(now)
        .bind(stale)
        .execute(p)
        .await
        .map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed_to_hex() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        let h = hash(&a);
        assert_eq!(h.len(), 64);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(h, hash(&b));
    }
}

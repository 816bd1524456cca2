//! The `admin_tokens` table: admin API bearer tokens, stored as hashes.
//!
//! SQL only: generating, hashing and checking tokens is [`crate::registry::tokens`], the rules
//! are [`crate::registry::admin_tokens`]. Each change commits together with its audit entry.

use chrono::{DateTime, Utc};

use super::audit::Entry;
use super::{Db, WritePool, row_by_key_in};

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

/// Stores a new token by its hash, with its audit entry, in one transaction.
pub async fn create(
    db: &Db,
    name: &str,
    token_hash: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<AdminTokenRow> {
    let row = AdminTokenRow {
        id: super::new_id(),
        name: name.to_owned(),
        created_at: now,
        revoked_at: None,
        last_used_at: None,
    };
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        sqlx::query(
            "INSERT INTO admin_tokens (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(token_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Entry::new(actor, "admin_token.create", &row.id)
            .details(serde_json::json!({"name": row.name}))
            .write(&mut *tx, now)
            .await?;
        tx.commit().await
    })?;
    Ok(row)
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
    crate::on_db!(db, |p| row_by_key_in(
        p,
        sqlx::AssertSqlSafe(sql.as_str()),
        id
    )
    .await)
}

/// Revokes a token, with its audit entry, in one transaction; `None` when there is no such id.
/// Revoking twice keeps the first time and writes no second audit entry.
pub async fn revoke(
    db: &Db,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<AdminTokenRow>> {
    let sql = format!("SELECT {COLUMNS} FROM admin_tokens WHERE id = $1");
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let by_id = sqlx::AssertSqlSafe(sql.as_str());
        let Some(row) = row_by_key_in::<AdminTokenRow, _>(&mut *tx, by_id, id).await? else {
            return Ok(None);
        };
        if changed > 0 {
            Entry::new(actor, "admin_token.revoke", &row.id)
                .details(serde_json::json!({"name": row.name}))
                .write(&mut *tx, now)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(row))
    })
}

/// The unrevoked token whose hash is `token_hash`, if any.
pub async fn find_active(db: &Db, token_hash: &str) -> sqlx::Result<Option<AdminTokenRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL");
    crate::on_db!(db, |p| {
        row_by_key_in(p, sqlx::AssertSqlSafe(sql.as_str()), token_hash).await
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

//! The `dashboard_sessions` table: who is signed in to the vendor dashboard.
//!
//! Rows are keyed by the SHA-256 of the cookie's secret (see `dashboard::session`), never by
//! the secret itself. [`find_live`] joins the admin token so that a revoked token ends its
//! sessions on the very next request, whichever instance serves it.

use chrono::{DateTime, Utc};

use super::Db;

/// A session as stored, with the state of the admin token it was opened with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id_hash: String,
    pub admin_token_id: Option<String>,
    pub env_token_hash: Option<String>,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub flash: Option<String>,
    /// `true` when `admin_token_id` names a token that exists and is not revoked.
    pub token_live: bool,
}

/// What a new session is opened for.
pub struct NewSession<'a> {
    pub id_hash: &'a str,
    pub admin_token_id: Option<&'a str>,
    pub env_token_hash: Option<&'a str>,
    pub actor: &'a str,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(db: &Db, s: &NewSession<'_>) -> sqlx::Result<()> {
    crate::on_db!(db, |p| {
        sqlx::query(
            "INSERT INTO dashboard_sessions
                 (id_hash, admin_token_id, env_token_hash, actor, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(s.id_hash)
        .bind(s.admin_token_id)
        .bind(s.env_token_hash)
        .bind(s.actor)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(p)
        .await
        .map(|_| ())
    })
}

/// The session with this hash if it has not expired at `now`. Whether its token is still
/// valid is in [`SessionRow::token_live`]; the caller decides (an `ADMIN_TOKEN` session has
/// no row to join).
pub async fn find_live(
    db: &Db,
    id_hash: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<SessionRow>> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, SessionRow>(
            "SELECT s.id_hash, s.admin_token_id, s.env_token_hash, s.actor, s.created_at,
                    s.expires_at, s.flash,
                    (t.id IS NOT NULL AND t.revoked_at IS NULL) AS token_live
             FROM dashboard_sessions s
             LEFT JOIN admin_tokens t ON t.id = s.admin_token_id
             WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(p)
        .await
    })
}

/// Ends a session (sign-out, or found dead). Also drops every expired session, so the table
/// does not grow with abandoned sign-ins.
pub async fn delete(db: &Db, id_hash: &str, now: DateTime<Utc>) -> sqlx::Result<()> {
    crate::on_db!(db, |p| {
        sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1 OR expires_at <= $2")
            .bind(id_hash)
            .bind(now)
            .execute(p)
            .await
            .map(|_| ())
    })
}

/// Sets (or with `None` clears) the session's one-time message.
pub async fn set_flash(db: &Db, id_hash: &str, flash: Option<&str>) -> sqlx::Result<()> {
    crate::on_db!(db, |p| {
        sqlx::query("UPDATE dashboard_sessions SET flash = $2 WHERE id_hash = $1")
            .bind(id_hash)
            .bind(flash)
            .execute(p)
            .await
            .map(|_| ())
    })
}

/// Takes the one-time message `flash` that [`find_live`] read with the session: clears it only
/// if it is still the same, so of two pages loaded at once only one shows it (on either
/// backend, without a lock). True when this call took it.
pub async fn take_flash(db: &Db, id_hash: &str, flash: &str) -> sqlx::Result<bool> {
    let cleared = crate::on_db!(db, |p| {
        sqlx::query("UPDATE dashboard_sessions SET flash = NULL WHERE id_hash = $1 AND flash = $2")
            .bind(id_hash)
            .bind(flash)
            .execute(p)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(cleared == 1)
}

//! The `access_tokens` table: vendor-issued codes that grant one site free use
//! (docs/licensing.md#access-tokens).
//!
//! Only a SHA-256 of a token is stored, so a database dump gives nobody a usable token; the
//! token itself is shown once, when made. Rows are never deleted; revocation sets `revoked_at`.
//! The rules (who may redeem what, and the answers) live in [`crate::registry::grants`]; this
//! module only makes each change atomic with its audit entry.

use chrono::{DateTime, Utc};

use super::audit::Entry;
use super::grants::{GrantRow, Revoke};
use super::{Db, WritePool, row_by_key_in};
use crate::domain::GrantKind;

#[derive(Clone, sqlx::FromRow)]
pub struct AccessTokenRow {
    pub id: String,
    /// Lower-case hex SHA-256 of the token.
    pub token_hash: String,
    pub note: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Bound in advance to this site, or `None` for any one site.
    pub client_key: Option<String>,
    pub redeemed_by: Option<String>,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub changed_at: DateTime<Utc>,
}

/// The hash is not a secret, but there is no reason for it to travel into logs either.
impl std::fmt::Debug for AccessTokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenRow")
            .field("id", &self.id)
            .field("client_key", &self.client_key)
            .field("expires_at", &self.expires_at)
            .field("redeemed_by", &self.redeemed_by)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// A token to store.
#[derive(Debug, Clone, Copy)]
pub struct NewAccessToken<'a> {
    pub token_hash: &'a str,
    pub note: Option<&'a str>,
    pub expires_at: Option<DateTime<Utc>>,
    pub client_key: Option<&'a str>,
    pub created_by: &'a str,
}

/// Stores a new token with its audit entry, in one transaction.
pub async fn insert(
    db: &Db,
    new: NewAccessToken<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<AccessTokenRow> {
    let id = super::new_id();
    let details = serde_json::json!({"expires_at": new.expires_at});
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        let row = sqlx::query_as::<_, AccessTokenRow>(
            "INSERT INTO access_tokens (id, token_hash, note, created_by, created_at, expires_at,
                                        client_key, changed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $5)
             RETURNING *",
        )
        .bind(&id)
        .bind(new.token_hash)
        .bind(new.note)
        .bind(new.created_by)
        .bind(now)
        .bind(new.expires_at)
        .bind(new.client_key)
        .fetch_one(&mut *tx)
        .await?;
        Entry::new(new.created_by, "access_token.create", &id)
            .tenant(new.client_key)
            .reason(new.note)
            .details(details)
            .write(&mut *tx, now)
            .await?;
        tx.commit().await?;
        Ok(row)
    })
}

/// One token by its id.
const BY_ID: &str = "SELECT * FROM access_tokens WHERE id = $1";

pub async fn get(db: &Db, id: &str) -> sqlx::Result<Option<AccessTokenRow>> {
    super::row_by_key::<AccessTokenRow>(db, BY_ID, id).await
}

/// Finds a token by the hash of what the caller presented (an indexed equality lookup on a
/// hash: the presented text itself is never compared with anything).
pub async fn by_hash(db: &Db, token_hash: &str) -> sqlx::Result<Option<AccessTokenRow>> {
    super::row_by_key::<AccessTokenRow>(
        db,
        "SELECT * FROM access_tokens WHERE token_hash = $1",
        token_hash,
    )
    .await
}

/// Every token, newest first (ids are UUIDv7).
pub async fn list(db: &Db) -> sqlx::Result<Vec<AccessTokenRow>> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, AccessTokenRow>("SELECT * FROM access_tokens ORDER BY id DESC")
            .fetch_all(p)
            .await
    })
}

/// Redeems token `id` for `client_key` if, at `now`, it is still unredeemed, unrevoked,
/// unexpired and not bound to another site — checked and changed in one conditional UPDATE,
/// so two sites redeeming at once cannot both win. The winner gets an `access_token` grant
/// (from `now` until the token expires, the token's note as reason) and an audit entry, in
/// the same transaction. `None` when the token was not claimable: the caller re-reads it to
/// say why.
pub async fn claim(
    db: &Db,
    id: &str,
    client_key: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<GrantRow>> {
    let grant_id = super::new_id();
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        let claimed: Option<(Option<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "UPDATE access_tokens SET redeemed_by = $2, redeemed_at = $3, changed_at = $3
             WHERE id = $1 AND redeemed_by IS NULL AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > $3)
               AND (client_key IS NULL OR client_key = $2)
             RETURNING note, expires_at",
        )
        .bind(id)
        .bind(client_key)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((note, expires_at)) = claimed else {
            return Ok(None);
        };
        let grant = sqlx::query_as::<_, GrantRow>(super::grants::INSERT_GRANT)
            .bind(&grant_id)
            .bind(client_key)
            .bind(GrantKind::AccessToken.as_str())
            .bind(now)
            .bind(expires_at)
            .bind(note.as_deref())
            .bind(actor)
            .bind(now)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        Entry::new(actor, "access_token.redeem", id)
            .tenant(Some(client_key))
            .reason(note.as_deref())
            .details(serde_json::json!({"grant_id": grant_id, "ends_at": expires_at}))
            .write(&mut *tx, now)
            .await?;
        tx.commit().await?;
        Ok(Some(grant))
    })
}

/// Revokes a token and the grant it created (if redeemed), with one audit entry, atomically.
/// Revoking twice changes nothing the second time. `None` when there is no such id;
/// otherwise the token as it now is and its grant, if any.
pub async fn revoke(
    db: &Db,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<(AccessTokenRow, Option<GrantRow>)>> {
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        let changed = Revoke::AccessToken.mark(&mut *tx, id, actor, now).await?;
        let Some(token) = row_by_key_in::<AccessTokenRow, _>(&mut *tx, BY_ID, id).await? else {
            return Ok(None);
        };
        Revoke::GrantOfToken.mark(&mut *tx, id, actor, now).await?;
        let of_token = "SELECT * FROM grants WHERE access_token_id = $1";
        let grant = row_by_key_in::<GrantRow, _>(&mut *tx, of_token, id).await?;
        if changed > 0 {
            let site = token.redeemed_by.as_deref().or(token.client_key.as_deref());
            Entry::new(actor, "access_token.revoke", id)
                .tenant(site)
                .details(serde_json::json!({"grant_id": grant.as_ref().map(|g| &g.id)}))
                .write(&mut *tx, now)
                .await?;
        }
        tx.commit().await?;
        Ok(Some((token, grant)))
    })
}

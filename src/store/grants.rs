//! The `grants` table: free use, trial extensions and redeemed access tokens. Rows are never
//! deleted; revocation sets `revoked_at`.

use chrono::{DateTime, Utc};

use super::audit::Entry;
use super::installations::InstallationRow;
use super::{Db, WritePool, row_by_key_in};
use crate::domain::GrantKind;
use crate::licensing::GrantFacts;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRow {
    pub id: String,
    pub client_key: String,
    pub kind: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub access_token_id: Option<String>,
    pub changed_at: DateTime<Utc>,
}

impl GrantRow {
    /// `None` for a kind this version does not know (a newer instance wrote it): ignored.
    pub fn facts(&self) -> Option<GrantFacts> {
        Some(GrantFacts {
            kind: GrantKind::parse(&self.kind)?,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            revoked_at: self.revoked_at,
        })
    }
}

/// Every grant of a tenant, oldest first.
const FOR_CLIENT: &str = "SELECT * FROM grants WHERE client_key = $1 ORDER BY created_at, id";

pub async fn for_client(db: &Db, client_key: &str) -> sqlx::Result<Vec<GrantRow>> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, GrantRow>(FOR_CLIENT)
            .bind(client_key)
            .fetch_all(p)
            .await
    })
}

/// One grant by its id.
const BY_ID: &str = "SELECT * FROM grants WHERE id = $1";

pub async fn get(db: &Db, id: &str) -> sqlx::Result<Option<GrantRow>> {
    super::row_by_key::<GrantRow>(db, BY_ID, id).await
}

/// Client keys with a grant whose end fell in `(after, until]`: their license view may have
/// changed just by time passing.
pub async fn ended_between(
    db: &Db,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> sqlx::Result<Vec<String>> {
    crate::on_db!(db, |p| {
        sqlx::query_scalar::<_, String>(
            "SELECT DISTINCT client_key FROM grants WHERE ends_at > $1 AND ends_at <= $2
             UNION SELECT client_key FROM installations
                   WHERE mp_trial_end > $1 AND mp_trial_end <= $2",
        )
        .bind(after)
        .bind(until)
        .fetch_all(p)
        .await
    })
}

/// The grant of one access token (a token makes at most one; a unique index says so too).
pub async fn for_access_token(db: &Db, access_token_id: &str) -> sqlx::Result<Option<GrantRow>> {
    super::row_by_key::<GrantRow>(
        db,
        "SELECT * FROM grants WHERE access_token_id = $1",
        access_token_id,
    )
    .await
}

/// What an insert did.
#[derive(Debug)]
pub enum Inserted {
    Made(Box<GrantRow>),
    /// There is no such installation.
    NoInstallation,
    /// Refused: the unrevoked free grant with no end of this id already gives the site free
    /// use for good, so a new free grant would change nothing.
    Covered(String),
}

/// Inserts a free grant (open-ended when `ends_at` is `None`) starting at `now`, with its
/// audit entry, in one transaction — unless the site already has an unrevoked free grant with
/// no end (decided inside the transaction, so two requests at once cannot both pass). The rules
/// (validation, licence view, caches) are in [`crate::registry::grants`]; call that, not this,
/// from routes and commands.
pub async fn insert_free(
    db: &Db,
    client_key: &str,
    ends_at: Option<DateTime<Utc>>,
    reason: Option<&str>,
    actor: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Inserted> {
    let g = NewGrant {
        client_key,
        kind: GrantKind::Free,
        starts_at: now,
        reason,
        created_by: actor,
    };
    insert(db, g, "grant.create", now, |_, grants| {
        let for_good = grants.iter().find(|g| {
            g.kind == GrantKind::Free.as_str() && g.ends_at.is_none() && g.revoked_at.is_none()
        });
        match for_good {
            Some(existing) => Err(existing.id.clone()),
            None => Ok(ends_at),
        }
    })
    .await
}

/// Inserts a trial extension from `starts_at`, with its audit entry ([`Inserted::Made`] or
/// [`Inserted::NoInstallation`]).
///
/// Its end is computed by `ends_at` from the installation and its grants **as read inside the
/// same write transaction**, with the installation locked (`FOR UPDATE` on PostgreSQL; SQLite's
/// write transaction holds the database lock). Two extensions made at the same moment (two
/// staff members, the CLI and the admin API, two instances) therefore both count: the second
/// starts from the end the first one made.
pub async fn insert_trial_extension(
    db: &Db,
    client_key: &str,
    starts_at: DateTime<Utc>,
    reason: Option<&str>,
    actor: &str,
    now: DateTime<Utc>,
    ends_at: impl FnOnce(&InstallationRow, &[GrantRow]) -> DateTime<Utc>,
) -> sqlx::Result<Inserted> {
    let g = NewGrant {
        client_key,
        kind: GrantKind::TrialExtension,
        starts_at,
        reason,
        created_by: actor,
    };
    insert(
        db,
        g,
        "trial_extension.create",
        now,
        |installation, grants| Ok(Some(ends_at(installation, grants))),
    )
    .await
}

struct NewGrant<'a> {
    client_key: &'a str,
    kind: GrantKind,
    starts_at: DateTime<Utc>,
    reason: Option<&'a str>,
    created_by: &'a str,
}

/// Also used by [`super::access_tokens::claim`] inside its transaction.
pub(super) const INSERT_GRANT: &str =
    "INSERT INTO grants (id, client_key, kind, starts_at, ends_at, reason,
                                created_by, created_at, access_token_id, changed_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8)
     RETURNING *";

/// Inserts a grant and its audit entry in one write transaction. The grant's end is computed
/// by `ends_at` from the installation and its grants as read inside that transaction, with the
/// installation locked (`FOR UPDATE` on PostgreSQL; on SQLite the write transaction holds the
/// database lock), so that a decision based on them cannot be overtaken by a concurrent one;
/// `ends_at` may refuse instead with the id of the grant in the way ([`Inserted::Covered`]).
async fn insert(
    db: &Db,
    g: NewGrant<'_>,
    action: &str,
    now: DateTime<Utc>,
    ends_at: impl FnOnce(&InstallationRow, &[GrantRow]) -> Result<Option<DateTime<Utc>>, String>,
) -> sqlx::Result<Inserted> {
    let read_installation = match db {
        Db::Postgres(_) => "SELECT * FROM installations WHERE client_key = $1 FOR UPDATE",
        Db::Sqlite(_) => "SELECT * FROM installations WHERE client_key = $1",
    };
    let id = super::new_id();
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        let Some(installation) = sqlx::query_as::<_, InstallationRow>(read_installation)
            .bind(g.client_key)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Inserted::NoInstallation);
        };
        let grants = sqlx::query_as::<_, GrantRow>(FOR_CLIENT)
            .bind(g.client_key)
            .fetch_all(&mut *tx)
            .await?;
        let ends_at = match ends_at(&installation, &grants) {
            Ok(end) => end,
            // Dropping the transaction rolls it back: nothing was written.
            Err(existing) => return Ok(Inserted::Covered(existing)),
        };
        let details = serde_json::json!({"starts_at": g.starts_at, "ends_at": ends_at});
        let row = sqlx::query_as::<_, GrantRow>(INSERT_GRANT)
            .bind(&id)
            .bind(g.client_key)
            .bind(g.kind.as_str())
            .bind(g.starts_at)
            .bind(ends_at)
            .bind(g.reason)
            .bind(g.created_by)
            .bind(now)
            .bind(None::<String>)
            .fetch_one(&mut *tx)
            .await?;
        Entry::new(g.created_by, action, &id)
            .tenant(Some(g.client_key))
            .reason(g.reason)
            .details(details)
            .write(&mut *tx, now)
            .await?;
        tx.commit().await?;
        Ok(Inserted::Made(Box::new(row)))
    })
}

/// Revokes a grant: it is kept, with `revoked_at`/`revoked_by` set, and bumps `changed_at` so
/// every instance drops the tenant from its cache. Revoking the grant of a redeemed access
/// token revokes that token too, so the site cannot redeem it again. Revoking an already
/// revoked grant changes nothing and writes no audit entry. `None` when there is no such id.
pub async fn revoke(
    db: &Db,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<GrantRow>> {
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        let changed = Revoke::Grant.mark(&mut *tx, id, actor, now).await?;
        let Some(row) = row_by_key_in::<GrantRow, _>(&mut *tx, BY_ID, id).await? else {
            return Ok(None);
        };
        if changed > 0 {
            if let Some(token_id) = &row.access_token_id {
                Revoke::AccessToken
                    .mark(&mut *tx, token_id, actor, now)
                    .await?;
            }
            Entry::new(actor, "grant.revoke", &row.id)
                .tenant(Some(&row.client_key))
                .details(serde_json::json!({"kind": row.kind}))
                .write(&mut *tx, now)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(row))
    })
}

/// The revocations of grants and access tokens: each marks the unrevoked rows it names with
/// `revoked_at`, `revoked_by` and `changed_at` (so every instance drops the tenant from its cache).
#[derive(Clone, Copy, Debug)]
pub(super) enum Revoke {
    /// The grant with this id.
    Grant,
    /// The grant a redeemed access token made, by the token's id.
    GrantOfToken,
    /// The access token with this id.
    AccessToken,
}

impl Revoke {
    /// Marks the rows inside the caller's transaction; how many it marked (0: no such row, or
    /// revoked already).
    pub(super) async fn mark<'c, E>(
        self,
        exec: E,
        id: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<u64>
    where
        E: sqlx::Executor<'c>,
        for<'q> <E::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<E::Database>,
        for<'q> &'q str: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
        for<'q> DateTime<Utc>: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
        <E::Database as sqlx::Database>::QueryResult: super::RowsAffected,
    {
        use super::RowsAffected;
        let sql = match self {
            Revoke::Grant => {
                "UPDATE grants SET revoked_at = $2, revoked_by = $3, changed_at = $2
                 WHERE id = $1 AND revoked_at IS NULL"
            }
            Revoke::GrantOfToken => {
                "UPDATE grants SET revoked_at = $2, revoked_by = $3, changed_at = $2
                 WHERE access_token_id = $1 AND revoked_at IS NULL"
            }
            Revoke::AccessToken => {
                "UPDATE access_tokens SET revoked_at = $2, revoked_by = $3, changed_at = $2
                 WHERE id = $1 AND revoked_at IS NULL"
            }
        };
        let done = sqlx::query(sql)
            .bind(id)
            .bind(now)
            .bind(actor)
            .execute(exec)
            .await?;
        Ok(done.count())
    }
}

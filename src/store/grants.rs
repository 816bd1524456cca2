//! The `grants` table: free use, trial extensions and redeemed access tokens. Rows are never
//! deleted; revocation sets `revoked_at`.

use chrono::{DateTime, Utc};

use super::Db;
use crate::licensing::{GrantFacts, GrantKind};

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
pub async fn for_client(db: &Db, client_key: &str) -> sqlx::Result<Vec<GrantRow>> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, GrantRow>(
            "SELECT * FROM grants WHERE client_key = $1 ORDER BY created_at, id",
        )
        .bind(client_key)
        .fetch_all(p)
        .await
    })
}

pub async fn get(db: &Db, id: &str) -> sqlx::Result<Option<GrantRow>> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, GrantRow>("SELECT * FROM grants WHERE id = $1")
            .bind(id)
            .fetch_optional(p)
            .await
    })
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

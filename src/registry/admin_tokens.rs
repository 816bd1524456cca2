//! Admin API bearer tokens: making, listing and revoking them (admin API and CLI), and
//! deciding who presents one ([`authenticate`], called by the admin scope's middleware).
//!
//! Two sources of admin access: the `ADMIN_TOKEN` of the configuration (actor `env`) and tokens
//! made here (actor: the token's name). How tokens look, are stored and compared is
//! [`crate::registry::tokens`].

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use utoipa::ToSchema;

use crate::registry::error::{Entity, Error};
use crate::registry::tokens::{self, TokenKind};
use crate::store::Db;
use crate::store::admin_tokens::{self, AdminTokenRow};

/// The actor of changes made with the configured `ADMIN_TOKEN`.
pub const ENV_ACTOR: &str = "env";

/// An admin token as listed (never the token itself).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<AdminTokenRow> for AdminToken {
    fn from(r: AdminTokenRow) -> Self {
        AdminToken {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
        }
    }
}

/// A newly made admin token: the only time `token` is shown.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedAdminToken {
    pub id: String,
    pub token: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Makes an admin token named `name`, recording who made it in the same transaction. The
/// plaintext is returned once.
pub async fn create(
    db: &Db,
    name: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<CreatedAdminToken, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::invalid("name", "must be 1 to 100 characters"));
    }
    let token = TokenKind::Admin.generate();
    let row = admin_tokens::create(db, name, &tokens::hash(&token), actor, now).await?;
    Ok(CreatedAdminToken {
        id: row.id,
        token,
        name: row.name,
        created_at: row.created_at,
    })
}

pub async fn list(db: &Db) -> Result<Vec<AdminToken>, Error> {
    Ok(admin_tokens::list(db)
        .await?
        .into_iter()
        .map(AdminToken::from)
        .collect())
}

/// Revokes an admin token (effective on the next request to any instance), recording who did
/// it in the same transaction; 404 when unknown.
pub async fn revoke(
    db: &Db,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<AdminToken, Error> {
    let row = admin_tokens::revoke(db, id, actor, now)
        .await?
        .ok_or_else(|| Error::not_found(Entity::AdminToken, id))?;
    Ok(row.into())
}

/// Who presented an admin token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Recorded in the audit trail: [`ENV_ACTOR`] or the admin token's name.
    pub actor: String,
    /// The admin token's id; `None` for the configured `ADMIN_TOKEN`.
    pub token_id: Option<String>,
}

/// Who presents `presented` (the bearer token, if any): [`ENV_ACTOR`] for the configured
/// token, else an unrevoked admin token, whose use is noted. Refused with
/// [`Error::Unauthenticated`] otherwise.
pub async fn authenticate(
    db: &Db,
    configured: Option<&SecretString>,
    presented: Option<&str>,
) -> Result<Caller, Error> {
    let Some(token) = presented else {
        return Err(Error::Unauthenticated(
            "an admin bearer token is required: Authorization: Bearer <token>",
        ));
    };
    if configured.is_some_and(|c| tokens::matches(token, c)) {
        return Ok(Caller {
            actor: ENV_ACTOR.to_owned(),
            token_id: None,
        });
    }
    let found = if token.len() <= tokens::MAX_PRESENTED_LEN {
        admin_tokens::find_active(db, &tokens::hash(token)).await?
    } else {
        None // longer than any token we make: not worth a query
    };
    match found {
        Some(row) => {
            if let Err(e) = admin_tokens::touch(db, &row.id, crate::store::now()).await {
                tracing::warn!(error = %e, "could not record admin token use");
            }
            Ok(Caller {
                actor: row.name,
                token_id: Some(row.id),
            })
        }
        None => Err(Error::Unauthenticated(
            "the admin token is not valid (unknown or revoked)",
        )),
    }
}

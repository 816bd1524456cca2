//! The vendor's licence operations (docs/licensing.md#grants, docs/admin-api.md), shared by
//! the admin API, the CLI, the redeem route and the `installed` callback: trial extensions,
//! free grants, revocation, and access tokens.
//!
//! Every change is one transaction with its audit entry (see [`crate::store::grants`] and
//! [`crate::store::access_tokens`]), then recomputes the tenant's materialised license view
//! ([`license_view::refresh`]) and drops the tenant from this process's cache
//! ([`Target::tenant_changed`]); other processes notice through `changed_at` within seconds.

use chrono::{DateTime, Duration, Utc};

use crate::licensing;
use crate::registry::error::{Entity, Error, Refusal};
use crate::registry::installations::resolve_key;
use crate::registry::license_view;
use crate::registry::tokens::{self, TokenKind};
use crate::registry::views::AccessToken;
use crate::state::AppState;
use crate::store::access_tokens::{self, AccessTokenRow, NewAccessToken};
use crate::store::grants::{self, GrantRow};
use crate::store::{Db, installations};

/// Trial extensions are 1..=365 days (docs/admin-api.md#extend-a-trial).
pub const MAX_TRIAL_DAYS: u32 = 365;
/// The rule on a trial extension's days, in the same words everywhere (admin API, CLI,
/// dashboard).
pub const TRIAL_DAYS_RULE: &str = "must be a whole number from 1 to 365";
/// Longest free text accepted for a reason or a note.
pub const MAX_TEXT: usize = 1000;

/// Where an operation runs: the database and, in a server, this process's tenant cache.
///
/// The CLI passes a [`Db`] (it has no cache; running servers notice through their pollers);
/// the admin API and the routes pass the [`AppState`] so the change applies here at once.
pub trait Target: Sync {
    fn db(&self) -> &Db;
    /// Called after a tenant's grants or tokens changed.
    fn tenant_changed(&self, client_key: &str) -> impl Future<Output = ()> + Send;
}

impl Target for Db {
    fn db(&self) -> &Db {
        self
    }
    async fn tenant_changed(&self, _client_key: &str) {}
}

impl Target for AppState {
    fn db(&self) -> &Db {
        &self.db
    }
    async fn tenant_changed(&self, client_key: &str) {
        self.tenants.invalidate(client_key).await;
    }
}

/// Extends the tenant's effective trial end by `days` (1..=365), counted from the later of
/// `now` and the current effective trial end (the Marketplace trial end or the latest
/// unrevoked extension, whichever is later). The grant starts at `now`, so a site whose trial
/// already ran out is licensed again at once.
#[tracing::instrument(skip_all, fields(client_key))]
pub async fn extend_trial(
    to: &impl Target,
    client_key: &str,
    days: u32,
    reason: Option<&str>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<GrantRow, Error> {
    tracing::Span::current().record("client_key", client_key);
    if !(1..=MAX_TRIAL_DAYS).contains(&days) {
        return Err(invalid("days", TRIAL_DAYS_RULE));
    }
    let reason = text("reason", reason)?;
    let given = client_key;
    let resolved = resolve_key(to.db(), given).await?;
    let client_key = resolved.as_str();
    let grant = grants::insert_trial_extension(
        to.db(),
        client_key,
        now,
        reason,
        actor,
        now,
        |installation, grants| {
            let facts: Vec<_> = grants.iter().filter_map(GrantRow::facts).collect();
            let current_end =
                licensing::view(&installation.observations(), &facts, now).effective_trial_end;
            extended_trial_end(current_end, now, days)
        },
    )
    .await?;
    let grants::Inserted::Made(grant) = grant else {
        return Err(Error::not_found(Entity::Installation, given));
    };
    let grant = *grant;
    changed(to, client_key).await;
    Ok(grant)
}

/// Parses a number of days typed by a person (the CLI's `--days`, the dashboard's form) under
/// [`TRIAL_DAYS_RULE`].
pub fn parse_trial_days(raw: &str) -> Result<u32, Error> {
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|d| (1..=MAX_TRIAL_DAYS).contains(d))
        .ok_or_else(|| invalid("days", TRIAL_DAYS_RULE))
}

/// The new effective trial end: `days` after the later of `now` and the current end.
pub fn extended_trial_end(
    current_end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    days: u32,
) -> DateTime<Utc> {
    current_end.map_or(now, |end| end.max(now)) + Duration::days(i64::from(days))
}

/// Grants free use from `now` until `ends_at` (for good when `None`; a past end is refused).
/// Refused with [`Error::Conflict`], naming the grant, while the site has an unrevoked free
/// grant with no end: a second one would change nothing, and revoking one of two would then
/// silently leave the site free. To give free use an end, revoke that grant and grant again.
#[tracing::instrument(skip_all, fields(client_key))]
pub async fn grant_free(
    to: &impl Target,
    client_key: &str,
    ends_at: Option<DateTime<Utc>>,
    reason: Option<&str>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<GrantRow, Error> {
    tracing::Span::current().record("client_key", client_key);
    if ends_at.is_some_and(|e| e <= now) {
        return Err(invalid("ends_at", "must be in the future"));
    }
    let reason = text("reason", reason)?;
    let resolved = resolve_key(to.db(), client_key).await?;
    let grant = match grants::insert_free(to.db(), &resolved, ends_at, reason, actor, now).await? {
        grants::Inserted::Made(grant) => *grant,
        grants::Inserted::NoInstallation => {
            return Err(Error::not_found(Entity::Installation, client_key));
        }
        grants::Inserted::Covered(existing) => {
            return Err(Error::Conflict(format!(
                "installation {client_key:?} already has free use with no end (grant {existing}); \
                 revoke that grant first to give free use an end"
            )));
        }
    };
    let client_key = resolved.as_str();
    changed(to, client_key).await;
    Ok(grant)
}

/// Revokes a grant (kept, `revoked_at` set). Revoking a redeemed access token's grant ends
/// that site's free use and revokes the token. Idempotent: a revoked grant is returned as is.
#[tracing::instrument(skip_all, fields(grant_id = id))]
pub async fn revoke_grant(
    to: &impl Target,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<GrantRow, Error> {
    let grant = grants::revoke(to.db(), id, actor, now)
        .await?
        .ok_or_else(|| Error::not_found(Entity::Grant, id))?;
    changed(to, &grant.client_key).await;
    Ok(grant)
}

/// Makes an access token ([`TokenKind::Access`]). Only its hash is stored; the token is
/// returned here once and can never be shown again. `client_key` binds it in advance to one
/// (existing) site; `expires_at`, if given, must be in the future.
#[tracing::instrument(skip_all, fields(client_key))]
pub async fn create_access_token(
    to: &impl Target,
    note: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
    client_key: Option<&str>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(AccessTokenRow, String), Error> {
    if let Some(key) = client_key {
        tracing::Span::current().record("client_key", key);
    }
    if expires_at.is_some_and(|e| e <= now) {
        return Err(invalid("expires_at", "must be in the future"));
    }
    let note = text("note", note)?;
    let db = to.db();
    let resolved = match client_key {
        Some(given) => Some(resolve_key(db, given).await?),
        None => None,
    };
    let client_key = resolved.as_deref();
    if let Some(key) = client_key
        && !installations::exists(db, key).await?
    {
        return Err(Error::not_found(Entity::Installation, key));
    }
    let token = TokenKind::Access.generate();
    let hash = tokens::hash(&token);
    let row = access_tokens::insert(
        db,
        NewAccessToken {
            token_hash: &hash,
            note,
            expires_at,
            client_key,
            created_by: actor,
        },
        now,
    )
    .await?;
    Ok((row, token))
}

/// Every access token, newest first (never the tokens: only their hashes are stored).
pub async fn list_access_tokens(db: &Db) -> Result<Vec<AccessToken>, Error> {
    Ok(access_tokens::list(db)
        .await?
        .iter()
        .map(AccessToken::from)
        .collect())
}

/// Revokes an access token and the grant it created, ending the redeeming site's free use.
/// Idempotent.
#[tracing::instrument(skip_all, fields(token_id = id))]
pub async fn revoke_access_token(
    to: &impl Target,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<AccessTokenRow, Error> {
    let (token, grant) = access_tokens::revoke(to.db(), id, actor, now)
        .await?
        .ok_or_else(|| Error::not_found(Entity::AccessToken, id))?;
    if let Some(g) = grant {
        changed(to, &g.client_key).await;
    }
    Ok(token)
}

/// Redeems `token` for the site `client_key`: an `access_token` grant from `now` until the
/// token expires. Unknown, expired or revoked: a [`Refusal`] (400), nothing changes. Already
/// redeemed by another site, or bound in advance to another: 409. Redeemed again by the same
/// site: the existing grant (idempotent).
#[tracing::instrument(skip_all, fields(client_key))]
pub async fn redeem_access_token(
    to: &impl Target,
    token: &str,
    client_key: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<GrantRow, Error> {
    tracing::Span::current().record("client_key", client_key);
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::invalid("token", "is required"));
    }
    if token.len() > tokens::MAX_PRESENTED_LEN {
        return Err(Refusal::Unknown.into());
    }
    let db = to.db();
    if installations::get(db, client_key).await?.is_none() {
        return Err(Error::not_found(Entity::Installation, client_key));
    }
    let hash = tokens::hash(token);
    // Two rounds at most: if another redeemer changed the token between the read and the
    // claim, the second read explains why the claim failed.
    for _ in 0..2 {
        let row = access_tokens::by_hash(db, &hash)
            .await?
            .ok_or(Refusal::Unknown)?;
        match redeemable(&row, client_key, now)? {
            Redeemable::AlreadyMine => {
                if let Some(grant) = grants::for_access_token(db, &row.id).await? {
                    return Ok(grant);
                }
                // Redeemed but without a grant cannot happen (one transaction); say so.
                return Err(Error::Database(sqlx::Error::RowNotFound));
            }
            Redeemable::Yes => {
                if let Some(grant) =
                    access_tokens::claim(db, &row.id, client_key, actor, now).await?
                {
                    tracing::info!(token_id = %row.id, "access token redeemed");
                    changed(to, client_key).await;
                    return Ok(grant);
                }
            }
        }
    }
    Err(Refusal::RedeemedByOther.into())
}

/// What [`redeemable`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemable {
    Yes,
    /// This site redeemed it before: answer its grant again.
    AlreadyMine,
}

/// The redeem rules for one token row, in order: revoked; redeemed (by this site or
/// another); bound to another site; expired.
pub fn redeemable(
    row: &AccessTokenRow,
    client_key: &str,
    now: DateTime<Utc>,
) -> Result<Redeemable, Refusal> {
    if row.revoked_at.is_some() {
        return Err(Refusal::Revoked);
    }
    match row.redeemed_by.as_deref() {
        Some(by) if by == client_key => return Ok(Redeemable::AlreadyMine),
        Some(_) => return Err(Refusal::RedeemedByOther),
        None => {}
    }
    if row.client_key.as_deref().is_some_and(|k| k != client_key) {
        return Err(Refusal::BoundToOther);
    }
    if row.expires_at.is_some_and(|e| e <= now) {
        return Err(Refusal::Expired);
    }
    Ok(Redeemable::Yes)
}

async fn changed(to: &impl Target, client_key: &str) {
    if let Err(e) = license_view::refresh(to.db(), client_key).await {
        // The grant is stored; the view is also recomputed by the periodic sweep.
        tracing::warn!(client_key, error = %e, "license view refresh failed");
    }
    to.tenant_changed(client_key).await;
}

fn invalid(field: &'static str, why: impl Into<String>) -> Error {
    Error::invalid(field, why)
}

/// Trims free text; empty means none; over [`MAX_TEXT`] characters is refused.
fn text<'a>(field: &'static str, value: Option<&'a str>) -> Result<Option<&'a str>, Error> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) if v.chars().count() > MAX_TEXT => Err(invalid(
            field,
            format!("must be at most {MAX_TEXT} characters"),
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(day: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap() + Duration::days(day)
    }

    #[test]
    fn a_trial_extension_counts_from_the_later_of_now_and_the_current_end() {
        // no known trial end: from now
        assert_eq!(extended_trial_end(None, t(0), 10), t(10));
        // a trial that ends later: from its end
        assert_eq!(extended_trial_end(Some(t(5)), t(0), 10), t(15));
        // a trial that already ended: from now
        assert_eq!(extended_trial_end(Some(t(-3)), t(0), 10), t(10));
        // a second extension counts from the first one's end
        let first = extended_trial_end(None, t(0), 30);
        assert_eq!(extended_trial_end(Some(first), t(1), 30), t(60));
    }

    fn token() -> AccessTokenRow {
        AccessTokenRow {
            id: "tok".into(),
            token_hash: tokens::hash("x"),
            note: None,
            created_by: "cli".into(),
            created_at: t(0),
            expires_at: None,
            client_key: None,
            redeemed_by: None,
            redeemed_at: None,
            revoked_at: None,
            revoked_by: None,
            changed_at: t(0),
        }
    }

    #[test]
    fn redeem_rules_in_order() {
        let now = t(1);
        assert_eq!(redeemable(&token(), "a", now).unwrap(), Redeemable::Yes);

        let mine = AccessTokenRow {
            redeemed_by: Some("a".into()),
            ..token()
        };
        assert_eq!(
            redeemable(&mine, "a", now).unwrap(),
            Redeemable::AlreadyMine
        );
        assert!(matches!(
            redeemable(&mine, "b", now),
            Err(Refusal::RedeemedByOther)
        ));

        let bound = AccessTokenRow {
            client_key: Some("a".into()),
            ..token()
        };
        assert_eq!(redeemable(&bound, "a", now).unwrap(), Redeemable::Yes);
        assert!(matches!(
            redeemable(&bound, "b", now),
            Err(Refusal::BoundToOther)
        ));

        let expired = AccessTokenRow {
            expires_at: Some(now),
            ..token()
        };
        assert!(matches!(
            redeemable(&expired, "a", now),
            Err(Refusal::Expired)
        ));
        // the same site redeeming again after expiry still gets its grant back
        let expired_mine = AccessTokenRow {
            redeemed_by: Some("a".into()),
            ..expired.clone()
        };
        assert_eq!(
            redeemable(&expired_mine, "a", now).unwrap(),
            Redeemable::AlreadyMine
        );

        // revoked beats everything, even this site's own redemption
        let revoked = AccessTokenRow {
            revoked_at: Some(t(0)),
            ..mine
        };
        assert!(matches!(
            redeemable(&revoked, "a", now),
            Err(Refusal::Revoked)
        ));
    }

    #[test]
    fn free_text_is_trimmed_and_bounded() {
        assert_eq!(text("reason", Some("  ")).unwrap(), None);
        assert_eq!(text("reason", Some(" ok ")).unwrap(), Some("ok"));
        let long = "x".repeat(MAX_TEXT + 1);
        assert!(text("reason", Some(&long)).is_err());
    }
}

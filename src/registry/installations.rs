//! Reading the registry: a page of installations, every matching one (for exports), one
//! installation with its history, and the summary counts.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use futures::Stream;

use crate::registry::error::{Entity, Error};
use crate::registry::list_query::ListRequest;
use crate::registry::views::{
    self, Installation, InstallationDetail, InstallationPage, LicenseCounts, StatusCounts, Summary,
};
use crate::store::grants::GrantRow;
use crate::store::installations::InstallationRow;
use crate::store::listing::{self, After, Filter, GroupColumn, Sort};
use crate::store::{Db, audit, events, grants, installations};

/// Rows per database round trip while exporting: large enough to amortise the query, small
/// enough that memory stays flat however many rows there are.
pub const EXPORT_BATCH: u32 = 1000;

async fn with_grants(db: &Db, rows: &[InstallationRow]) -> Result<Vec<Installation>, Error> {
    let keys: Vec<String> = rows.iter().map(|r| r.client_key.clone()).collect();
    let mut by_key: HashMap<String, Vec<GrantRow>> = HashMap::new();
    for g in listing::grants_for(db, &keys).await? {
        by_key.entry(g.client_key.clone()).or_default().push(g);
    }
    Ok(rows
        .iter()
        .map(|r| {
            let g = by_key.get(&r.client_key).map(Vec::as_slice).unwrap_or(&[]);
            Installation::from_row(r, g)
        })
        .collect())
}

/// One page of installations, with the cursor of the next one and the total.
pub async fn list(db: &Db, req: &ListRequest) -> Result<InstallationPage, Error> {
    // The page and the total are independent: run them side by side (separate pool
    // connections), so a filter that scans costs one scan of latency, not two.
    let (rows, total) = tokio::try_join!(
        listing::page(db, &req.filter, req.sort, req.after.as_ref(), req.limit + 1),
        listing::count(db, &req.filter),
    )?;
    let mut rows = rows;
    let more = rows.len() > req.limit as usize;
    rows.truncate(req.limit as usize);
    let next_cursor = match rows.last() {
        Some(last) if more => Some(crate::registry::list_query::encode_cursor(
            req.sort,
            &req.sort.key_of(last),
        )),
        _ => None,
    };
    let items = with_grants(db, &rows).await?;
    Ok(InstallationPage {
        items,
        next_cursor,
        total,
    })
}

/// Every installation matching `filter` in `sort` order, fetched [`EXPORT_BATCH`] rows at a
/// time by keyset, so the caller can stream any number of them in constant memory.
pub fn all_matching(
    db: Db,
    filter: Filter,
    sort: Sort,
) -> impl Stream<Item = Result<Vec<Installation>, Error>> {
    async_stream::try_stream! {
        let mut after: Option<After> = None;
        loop {
            let rows = listing::page(&db, &filter, sort, after.as_ref(), EXPORT_BATCH).await?;
            let Some(last) = rows.last() else { break };
            after = Some(sort.key_of(last));
            let done = rows.len() < EXPORT_BATCH as usize;
            yield with_grants(&db, &rows).await?;
            if done {
                break;
            }
        }
    }
}

/// The registry key of the installation `given` names: a Connect clientKey (or an internal
/// key) as it is, else a Forge installation id (ARI or bare uuid) — so every route and
/// command that takes a clientKey also takes an installation id. A value that names nothing
/// comes back unchanged, for the caller's own lookup to answer 404.
pub async fn resolve_key(db: &Db, given: &str) -> Result<String, Error> {
    if installations::exists(db, given).await? {
        return Ok(given.to_owned());
    }
    if let Some(id) = crate::forge::ids::InstallationId::parse(given)
        && let Some(key) = crate::store::forge::client_key_by_installation(db, &id.as_key()).await?
    {
        return Ok(key);
    }
    Ok(given.to_owned())
}

/// One installation with its history and audit trail; 404 when unknown. `client_key` may
/// also be a Forge installation id ([`resolve_key`]).
pub async fn detail(db: &Db, client_key: &str) -> Result<InstallationDetail, Error> {
    let given = client_key;
    let resolved = resolve_key(db, given).await?;
    let client_key = resolved.as_str();
    let row = installations::get(db, client_key)
        .await?
        .ok_or_else(|| Error::not_found(Entity::Installation, given))?;
    let grants = grants::for_client(db, client_key).await?;
    let events = events::for_client(db, client_key).await?;
    let audit = audit::for_client(db, client_key).await?;
    Ok(InstallationDetail {
        installation: Installation::from_row(&row, &grants),
        events: events.iter().map(views::event).collect(),
        audit: audit.iter().map(views::audit_entry).collect(),
    })
}

/// Counts by status and license state, and trials ending within 7 days of `now`.
pub async fn summary(db: &Db, now: DateTime<Utc>) -> Result<Summary, Error> {
    let mut by_status = StatusCounts::default();
    let mut total = 0;
    for (status, n) in listing::counts_by(db, GroupColumn::Status).await? {
        total += n;
        match status.as_str() {
            "installed" => by_status.installed += n,
            "enabled" => by_status.enabled += n,
            "disabled" => by_status.disabled += n,
            "uninstalled" => by_status.uninstalled += n,
            _ => {}
        }
    }
    let mut by_license = LicenseCounts::default();
    for (state, n) in listing::counts_by(db, GroupColumn::LicenseState).await? {
        match state.as_str() {
            "active" => by_license.active += n,
            "trial" => by_license.trial += n,
            "free" => by_license.free += n,
            "unlicensed" => by_license.unlicensed += n,
            _ => {}
        }
    }
    let trials_ending_in_7_days = listing::trials_ending(db, now, now + Duration::days(7)).await?;
    Ok(Summary {
        total,
        by_status,
        by_license,
        trials_ending_in_7_days,
        generated_at: now,
    })
}

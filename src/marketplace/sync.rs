//! One sync run: take the lease, stage every page (joined) as it arrives, swap the run in,
//! refresh the licence views of the installations it changed, give the lease back.

use std::collections::HashSet;
use std::time::Duration;

use super::client::{Client, resolve_next};
use super::join::{dedup_batch, join, join_values};
use super::parser::parse_license;
use super::{MAX_PAGES, MarketplaceError, SyncError, SyncSummary};
use crate::config::MarketplaceCredentials;
use crate::metrics::Metrics;
use crate::store::marketplace::{self as store, StagedLicense};
use crate::store::{self as db_store, Db, leases};

/// Name of the cluster-wide lease that allows one sync at a time.
const LEASE: &str = "marketplace_sync";
/// Lifetime of the lease; renewed every [`LEASE_RENEW`] while pages arrive, so a crashed
/// instance blocks syncs for at most this long.
const LEASE_TTL: Duration = Duration::from_secs(300);
const LEASE_RENEW: Duration = Duration::from_secs(60);
/// Licenses joined and written together: a few pages per statement and transaction (fewer
/// commits, each an fsync on SQLite) while memory stays small (~1.5 MiB of rows).
const STAGE_BATCH: usize = 500;
/// Licenses per installation lookup query (up to ~8 binds each; see
/// [`crate::store::marketplace::stage_rows`] on why statements stay small).
const LOOKUP_BATCH: usize = 100;

/// One full sync (see the module documentation of [`crate::marketplace`] for what it
/// guarantees): counted in `marketplace_syncs_total` by outcome. A success is logged; a
/// failure is reported once by the caller, where it surfaces: the scheduler logs it, the admin
/// route answers it (and its request line logs it), the dashboard shows and logs it, the CLI
/// prints it.
#[tracing::instrument(skip_all)]
pub async fn sync_once(
    db: &Db,
    client: &Client,
    metrics: &Metrics,
) -> Result<SyncSummary, SyncError> {
    let result = sync_inner(db, client).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    metrics
        .marketplace_syncs
        .with_label_values(&[outcome])
        .inc();
    match &result {
        Ok(s) => tracing::info!(
            fetched = s.fetched,
            matched = s.matched,
            unmatched = s.unmatched,
            "Marketplace sync finished"
        ),
        Err(SyncError::InProgress) => tracing::info!("Marketplace sync already running"),
        Err(_) => {}
    }
    result
}

async fn sync_inner(db: &Db, client: &Client) -> Result<SyncSummary, SyncError> {
    let creds = client.credentials().ok_or(SyncError::NotConfigured)?;
    let holder = db_store::new_id();
    let now = db_store::now();
    if !leases::try_acquire(
        db,
        LEASE,
        &holder,
        now,
        crate::license_reader::later(now, LEASE_TTL),
    )
    .await?
    {
        return Err(SyncError::InProgress);
    }
    let run = Run {
        db,
        client,
        creds,
        holder: &holder,
        run_id: db_store::new_id(),
    };
    let result = run.execute().await;
    if result.is_err() {
        if let Err(e) = store::discard(db, &run.run_id).await {
            tracing::warn!(error = %e, "could not discard the failed run's staged rows");
        }
    }
    if let Err(e) = leases::release(db, LEASE, &holder).await {
        tracing::warn!(error = %e, "could not release the sync lease; it expires on its own");
    }
    result
}

struct Run<'a> {
    db: &'a Db,
    client: &'a Client,
    creds: &'a MarketplaceCredentials,
    holder: &'a str,
    run_id: String,
}

impl Run<'_> {
    async fn execute(&self) -> Result<SyncSummary, SyncError> {
        let db = self.db;
        let base = self.client.base();
        // Only the lease holder stages, so anything left there is from a run that died.
        let started = std::time::Instant::now();
        store::clear_staging(db).await?;
        let mut url = self.client.first_page(self.creds);
        let mut seen = HashSet::from([url.clone()]);
        let mut fetched = 0u64;
        let mut batch = Vec::with_capacity(STAGE_BATCH + 50);
        let mut renewed = std::time::Instant::now();
        for page_no in 1.. {
            if page_no > MAX_PAGES {
                return Err(MarketplaceError::TooManyPages.into());
            }
            if renewed.elapsed() >= LEASE_RENEW {
                self.renew().await?;
                renewed = std::time::Instant::now();
            }
            let page = self.client.fetch_page(self.creds, &url, page_no).await?;
            fetched += page.licenses.len() as u64;
            batch.extend(page.licenses.iter().map(parse_license));
            if batch.len() >= STAGE_BATCH {
                self.stage(std::mem::take(&mut batch)).await?;
            }
            let Some(next) = page.links.and_then(|l| l.next) else {
                break;
            };
            url = resolve_next(base, &next.href)?;
            if !seen.insert(url.clone()) {
                return Err(MarketplaceError::Loop.into());
            }
        }
        self.stage(batch).await?;
        self.renew().await?;
        let staged = started.elapsed();
        let finished_at = db_store::now();
        let swapped = store::swap(db, &self.run_id, finished_at).await?;
        let swap_done = started.elapsed();
        if let Err(e) = store::discard(db, &self.run_id).await {
            tracing::warn!(error = %e, "could not remove the run's staged rows");
        }
        let changed = store::changed_at(db, finished_at).await?;
        if let Err(e) = crate::registry::license_view::refresh_many(db, &changed).await {
            // The sweeper and the next change of each tenant recompute it; the sync itself
            // (the license data) is done.
            tracing::error!(error = %e, "refreshing the license views after the sync failed");
        }
        tracing::info!(
            pages = seen.len(),
            staged_ms = staged.as_millis() as u64,
            swap_ms = (swap_done - staged).as_millis() as u64,
            changed_installations = changed.len(),
            total_ms = started.elapsed().as_millis() as u64,
            "Marketplace sync phases"
        );
        Ok(SyncSummary {
            fetched,
            matched: swapped.matched,
            unmatched: swapped.unmatched,
            finished_at,
        })
    }

    async fn renew(&self) -> Result<(), SyncError> {
        let until = crate::license_reader::later(db_store::now(), LEASE_TTL);
        if leases::renew(self.db, LEASE, self.holder, until).await? {
            Ok(())
        } else {
            Err(SyncError::LeaseLost)
        }
    }

    /// Joins and stages a batch of parsed licenses: one lookup query per [`LOOKUP_BATCH`]
    /// rows, one transaction.
    async fn stage(&self, mut rows: Vec<StagedLicense>) -> Result<(), SyncError> {
        let started = std::time::Instant::now();
        for chunk in rows.chunks_mut(LOOKUP_BATCH) {
            let candidates = store::candidates(self.db, &join_values(chunk)).await?;
            for row in chunk.iter_mut() {
                row.client_key = join(row, &candidates).map(|(c, _)| c.client_key.clone());
            }
        }
        let rows = dedup_batch(rows);
        let joined = started.elapsed();
        store::stage_rows(self.db, &self.run_id, db_store::now(), &rows).await?;
        tracing::debug!(
            rows = rows.len(),
            join_us = joined.as_micros() as u64,
            insert_us = (started.elapsed() - joined).as_micros() as u64,
            "staged a batch"
        );
        Ok(())
    }
}

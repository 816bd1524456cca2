//! Marketplace license sync (`POST /admin/marketplace/sync` and `connect-keeper sync
//! marketplace`; docs/licensing.md#marketplace-sync, docs/protocol.md#marketplace-reporting-api).
//!
//! One run reads every page of
//! `{MARKETPLACE_URL}/rest/2/vendors/{vendorId}/reporting/licenses?addon={APP_KEY}&hosting=cloud&withDataInsights=true&limit=50`
//! with HTTP basic auth, following `_links.next.href`, and joins each license to an
//! installation in a fixed order (see [`join::join`]). Pages are staged in the database as
//! they arrive, so memory stays flat whatever the number of licenses; only when the last page
//! has arrived does one transaction make the run live ([`crate::store::marketplace::swap`]).
//! A Marketplace that refuses the credentials, fails, times out or sends garbage therefore
//! leaves every stored row as it was.
//!
//! One run at a time across instances: the run holds the `marketplace_sync` lease (renewed
//! while it works); a second caller gets [`SyncError::InProgress`].
//!
//! By job: [`client`] talks HTTP to the Marketplace, [`parser`] reads its pages and licenses,
//! [`join`](mod@join) finds each license's installation, [`sync`] runs one sync and [`scheduler`] runs
//! them in the background. The HTTP route is `routes::admin::marketplace_sync`.
//!
//! Decisions where the Marketplace's documentation is silent:
//! * The winner among several rows of one installation: latest `lastUpdated`; on a tie a
//!   non-evaluation row beats an evaluation (the conversion and its trial row are often
//!   updated the same day), then an `active` row beats others, then the later
//!   `maintenanceEndDate`, then the larger license key (only for determinism).
//! * Among several installations matching at the same join level (a site reinstalled under a
//!   new clientKey after an import), an installed one beats an uninstalled one, then the most
//!   recently installed.
//! * `mp_trial_start`/`mp_trial_end` are set for evaluation rows only (`evaluationStartDate`/
//!   `EndDate` when present, else the maintenance dates); other rows carry no trial.
//! * The stored table mirrors the Marketplace: a license no longer reported is removed, and an
//!   installation that no longer matches any row loses its `mp_*` data.
//! * A license without any id is kept under `sha256:<hash of its JSON>`.

pub mod client;
pub mod join;
pub mod parser;
pub mod scheduler;
pub mod sync;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use client::Client;
pub use join::{JoinKey, dedup_batch, join, join_values};
pub use parser::{normalize_host, normalize_sen, parse_date, parse_license, rank_key, user_count};
pub use scheduler::spawn_periodic;
pub use sync::sync_once;

/// Safety stop: 10,000 pages of 50 = 500,000 licenses, far beyond any app.
pub const MAX_PAGES: usize = 10_000;

/// The answer of `POST /admin/marketplace/sync` and `sync marketplace`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct SyncSummary {
    /// License rows received, over all pages.
    pub fetched: u64,
    /// Distinct licenses stored with an installation.
    pub matched: u64,
    /// Distinct licenses stored without one.
    pub unmatched: u64,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "Marketplace credentials are not configured (MARKETPLACE_VENDOR_ID, MARKETPLACE_USER, MARKETPLACE_API_TOKEN)"
    )]
    NotConfigured,
    #[error("a Marketplace sync is already running")]
    InProgress,
    #[error("another instance took over the sync lease; this run was abandoned")]
    LeaseLost,
    #[error(transparent)]
    Marketplace(#[from] MarketplaceError),
    #[error("database error during the Marketplace sync")]
    Database(#[from] sqlx::Error),
}

impl SyncError {
    fn outcome(&self) -> &'static str {
        match self {
            SyncError::NotConfigured => "not_configured",
            SyncError::InProgress | SyncError::LeaseLost => "in_progress",
            SyncError::Marketplace(_) => "marketplace_error",
            SyncError::Database(_) => "database_error",
        }
    }
}

/// Why a Marketplace request failed. Messages are safe for clients and logs (no credentials).
#[derive(Debug, thiserror::Error)]
pub enum MarketplaceError {
    #[error("the Marketplace refused the credentials (HTTP {0})")]
    Refused(u16),
    #[error("the Marketplace answered HTTP {0}")]
    Status(u16),
    #[error("the Marketplace did not answer in time")]
    Timeout,
    #[error("the Marketplace could not be reached")]
    Network,
    #[error("the Marketplace sent an invalid page: {0}")]
    Malformed(String),
    #[error("the Marketplace's next-page links loop")]
    Loop,
    #[error("more than {MAX_PAGES} pages: stopped")]
    TooManyPages,
    #[error("a next-page link leaves MARKETPLACE_URL: not followed")]
    ForeignLink,
}

impl MarketplaceError {
    fn retryable(&self) -> bool {
        match self {
            MarketplaceError::Status(s) => *s >= 500 || *s == 429,
            MarketplaceError::Timeout | MarketplaceError::Network => true,
            _ => false,
        }
    }

    fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            MarketplaceError::Timeout
        } else if e.is_decode() || e.is_body() {
            MarketplaceError::Malformed("unreadable body".into())
        } else {
            MarketplaceError::Network
        }
    }
}

//! SQL of the Marketplace license sync ([`crate::marketplace`]): `marketplace_licenses`, the
//! staging table of a run, and the `mp_*` columns of `installations`.
//!
//! A run stages every page in `marketplace_licenses_staging` (one short transaction per few
//! pages, so lifecycle writes are never held up behind a slow Marketplace), then [`swap`]s in
//! one transaction. A failed run only ever wrote staging rows, which [`discard`] removes: the
//! live tables keep what the last good run left.

use chrono::{DateTime, Utc};

use super::{Db, WritePool};

/// One license row as staged (already matched to an installation, or not).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StagedLicense {
    pub license_key: String,
    pub addon_key: Option<String>,
    pub addon_license_id: Option<String>,
    pub app_entitlement_id: Option<String>,
    pub app_entitlement_number: Option<String>,
    pub license_id: Option<String>,
    pub host_license_id: Option<String>,
    pub cloud_id: Option<String>,
    pub cloud_site_hostname: Option<String>,
    pub hosting: Option<String>,
    pub license_type: Option<String>,
    pub tier: Option<String>,
    pub user_count: Option<i64>,
    pub status: Option<String>,
    pub maintenance_start: Option<DateTime<Utc>>,
    pub maintenance_end: Option<DateTime<Utc>>,
    pub evaluation_start: Option<DateTime<Utc>>,
    pub evaluation_end: Option<DateTime<Utc>>,
    pub company: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub technical_contact: Option<String>,
    pub billing_contact: Option<String>,
    pub last_updated: Option<DateTime<Utc>>,
    pub client_key: Option<String>,
    pub raw: String,
    pub trial_start: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub rank_key: String,
}

/// The columns shared by `marketplace_licenses` and its staging table, in bind order.
const LICENSE_COLUMNS: [&str; 26] = [
    "license_key",
    "addon_key",
    "addon_license_id",
    "app_entitlement_id",
    "app_entitlement_number",
    "license_id",
    "host_license_id",
    "cloud_id",
    "cloud_site_hostname",
    "hosting",
    "license_type",
    "tier",
    "user_count",
    "status",
    "maintenance_start",
    "maintenance_end",
    "evaluation_start",
    "evaluation_end",
    "company",
    "country",
    "region",
    "technical_contact",
    "billing_contact",
    "last_updated",
    "client_key",
    "raw",
];

/// Staging-only columns, bound after [`LICENSE_COLUMNS`] and `run_id`, `synced_at`.
const STAGING_EXTRA: [&str; 3] = ["trial_start", "trial_end", "rank_key"];

/// An installation as far as joining licenses needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Candidate {
    pub client_key: String,
    pub app_key: String,
    pub cloud_id: Option<String>,
    pub entitlement_id: Option<String>,
    pub entitlement_number: Option<String>,
    pub host_license_entitlement_id: Option<String>,
    pub host_license_entitlement_number: Option<String>,
    pub service_entitlement_number: Option<String>,
    pub host_license_sen: Option<String>,
    pub base_host: String,
    pub status: String,
    pub installed_at: DateTime<Utc>,
}

/// The join values of one page of licenses (each list deduplicated by the caller).
#[derive(Clone, Debug, Default)]
pub struct JoinValues {
    pub cloud_ids: Vec<String>,
    pub entitlement_ids: Vec<String>,
    pub entitlement_numbers: Vec<String>,
    /// Every spelling to look for (`SEN-123` and `123`).
    pub sens: Vec<String>,
    pub hosts: Vec<String>,
}

const CANDIDATE_COLUMNS: &str = "client_key, app_key, cloud_id, entitlement_id, entitlement_number,
    host_license_entitlement_id, host_license_entitlement_number, service_entitlement_number,
    host_license_sen, base_host, status, installed_at";

/// Every installation that shares any join value with a batch: one indexed query per batch
/// instead of up to four per license. PostgreSQL gets one array per list and a UNION of
/// index scans (an OR of `= ANY($n)` is planned as a sequential scan that compares every row
/// with every array element: ~45 ms instead of ~1 ms for 100 licenses over 10,000
/// installations); SQLite, which has no arrays, an `IN` list of placeholders per value, which
/// it runs as a multi-index OR.
pub async fn candidates(db: &Db, v: &JoinValues) -> sqlx::Result<Vec<Candidate>> {
    if let Db::Postgres(p) = db {
        let sql = [
            ("cloud_id", 1),
            ("entitlement_id", 2),
            ("host_license_entitlement_id", 2),
            ("entitlement_number", 3),
            ("host_license_entitlement_number", 3),
            ("service_entitlement_number", 4),
            ("host_license_sen", 4),
            ("base_host", 5),
        ]
        .iter()
        .map(|(col, n)| {
            format!("SELECT {CANDIDATE_COLUMNS} FROM installations WHERE {col} = ANY(${n})")
        })
        .collect::<Vec<_>>()
        .join(" UNION ");
        return sqlx::query_as::<_, Candidate>(sqlx::AssertSqlSafe(sql))
            .bind(&v.cloud_ids)
            .bind(&v.entitlement_ids)
            .bind(&v.entitlement_numbers)
            .bind(&v.sens)
            .bind(&v.hosts)
            .fetch_all(p)
            .await;
    }
    fn list<'a>(
        binds: &mut Vec<&'a str>,
        clauses: &mut Vec<String>,
        values: &'a [String],
        columns: &[&str],
    ) {
        if values.is_empty() {
            return;
        }
        let first = binds.len() + 1;
        binds.extend(values.iter().map(String::as_str));
        let placeholders = (first..first + values.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        for col in columns {
            clauses.push(format!("{col} IN ({placeholders})"));
        }
    }
    let mut binds: Vec<&str> = Vec::new();
    let mut clauses: Vec<String> = Vec::new();
    list(&mut binds, &mut clauses, &v.cloud_ids, &["cloud_id"]);
    list(
        &mut binds,
        &mut clauses,
        &v.entitlement_ids,
        &["entitlement_id", "host_license_entitlement_id"],
    );
    list(
        &mut binds,
        &mut clauses,
        &v.entitlement_numbers,
        &["entitlement_number", "host_license_entitlement_number"],
    );
    list(
        &mut binds,
        &mut clauses,
        &v.sens,
        &["service_entitlement_number", "host_license_sen"],
    );
    list(&mut binds, &mut clauses, &v.hosts, &["base_host"]);
    if clauses.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {CANDIDATE_COLUMNS} FROM installations WHERE {}",
        clauses.join(" OR ")
    );
    crate::on_db!(db, |p| {
        let mut q = sqlx::query_as::<_, Candidate>(sqlx::AssertSqlSafe(sql.as_str()));
        for b in &binds {
            q = q.bind(*b);
        }
        q.fetch_all(p).await
    })
}

/// Removes every staged row (a run that died without cleaning up). Only the holder of the
/// sync lease calls this.
pub async fn clear_staging(db: &Db) -> sqlx::Result<()> {
    crate::on_db!(db, |p| {
        sqlx::query("DELETE FROM marketplace_licenses_staging")
            .execute(p)
            .await
            .map(|_| ())
    })
}

/// Removes a failed run's rows.
pub async fn discard(db: &Db, run_id: &str) -> sqlx::Result<()> {
    crate::on_db!(db, |p| {
        sqlx::query("DELETE FROM marketplace_licenses_staging WHERE run_id = $1")
            .bind(run_id)
            .execute(p)
            .await
            .map(|_| ())
    })
}

/// Rows per INSERT statement (31 binds each). Small on purpose: SQLite looks each `$N` up by
/// a linear scan of the statement's parameters, so binding costs grow with the square of
/// their number (500 rows a statement took ~0.5 s; 50 rows take ~5 ms per 500).
const ROWS_PER_STATEMENT: usize = 50;

/// Stages rows with distinct `license_key`s, in one transaction. A license seen again in
/// the same run (pages shift while they are read) keeps the row with the higher `rank_key`.
pub async fn stage_rows(
    db: &Db,
    run_id: &str,
    synced_at: DateTime<Utc>,
    rows: &[StagedLicense],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = stage_sql(chunk.len());
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for r in chunk {
                q = q
                    .bind(run_id)
                    .bind(synced_at)
                    .bind(&r.license_key)
                    .bind(&r.addon_key)
                    .bind(&r.addon_license_id)
                    .bind(&r.app_entitlement_id)
                    .bind(&r.app_entitlement_number)
                    .bind(&r.license_id)
                    .bind(&r.host_license_id)
                    .bind(&r.cloud_id)
                    .bind(&r.cloud_site_hostname)
                    .bind(&r.hosting)
                    .bind(&r.license_type)
                    .bind(&r.tier)
                    .bind(r.user_count)
                    .bind(&r.status)
                    .bind(r.maintenance_start)
                    .bind(r.maintenance_end)
                    .bind(r.evaluation_start)
                    .bind(r.evaluation_end)
                    .bind(&r.company)
                    .bind(&r.country)
                    .bind(&r.region)
                    .bind(&r.technical_contact)
                    .bind(&r.billing_contact)
                    .bind(r.last_updated)
                    .bind(&r.client_key)
                    .bind(&r.raw)
                    .bind(r.trial_start)
                    .bind(r.trial_end)
                    .bind(&r.rank_key);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await
    })
}

/// The upsert of `n` staged rows (placeholders only; every value is bound).
fn stage_sql(n: usize) -> String {
    let columns: Vec<&str> = ["run_id", "synced_at"]
        .into_iter()
        .chain(LICENSE_COLUMNS)
        .chain(STAGING_EXTRA)
        .collect();
    let width = columns.len();
    let values = (0..n)
        .map(|r| {
            let ph = (1..=width)
                .map(|c| format!("${}", r * width + c))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({ph})")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let updates = columns
        .iter()
        .filter(|c| !matches!(**c, "run_id" | "license_key"))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO marketplace_licenses_staging ({}) VALUES {values}
         ON CONFLICT (run_id, license_key) DO UPDATE SET {updates}
         WHERE excluded.rank_key > marketplace_licenses_staging.rank_key",
        columns.join(", ")
    )
}

/// `installations.mp_*` ← the winning staged row (alias `w`).
const MP_FROM_WINNER: [(&str, &str); 15] = [
    ("mp_license_id", "w.license_key"),
    ("mp_license_type", "w.license_type"),
    ("mp_tier", "w.tier"),
    ("mp_user_count", "w.user_count"),
    ("mp_status", "w.status"),
    ("mp_maintenance_start", "w.maintenance_start"),
    ("mp_maintenance_end", "w.maintenance_end"),
    ("mp_trial_start", "w.trial_start"),
    ("mp_trial_end", "w.trial_end"),
    ("mp_company", "w.company"),
    ("mp_country", "w.country"),
    ("mp_region", "w.region"),
    ("mp_technical_contact", "w.technical_contact"),
    ("mp_billing_contact", "w.billing_contact"),
    ("mp_last_updated", "w.last_updated"),
];

/// What a swap did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swapped {
    pub matched: u64,
    pub unmatched: u64,
}

/// Makes a complete run live, atomically: `marketplace_licenses` becomes exactly the run's
/// rows; each matched installation gets its winner (highest `rank_key`, then highest
/// `license_key`) in `mp_*`; installations that no longer match any row lose their `mp_*`.
/// `changed_at` moves to `now` only where the Marketplace data actually changed, so other
/// instances reload just those tenants.
pub async fn swap(db: &Db, run_id: &str, now: DateTime<Utc>) -> sqlx::Result<Swapped> {
    let cols = LICENSE_COLUMNS.join(", ");
    let insert = format!(
        "INSERT INTO marketplace_licenses ({cols}, synced_at)
         SELECT {cols}, $2 FROM marketplace_licenses_staging WHERE run_id = $1"
    );
    let clear_sets = MP_FROM_WINNER
        .iter()
        .map(|(c, _)| format!("{c} = NULL"))
        .collect::<Vec<_>>()
        .join(", ");
    let clear = format!(
        "UPDATE installations SET {clear_sets}, mp_synced_at = NULL, changed_at = $2
         WHERE mp_license_id IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM marketplace_licenses_staging s
             WHERE s.run_id = $1 AND s.client_key = installations.client_key)"
    );
    let sets = MP_FROM_WINNER
        .iter()
        .map(|(c, w)| format!("{c} = {w}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Null-safe equality written out: `IS NOT DISTINCT FROM` is not in older SQLite.
    let unchanged = MP_FROM_WINNER
        .iter()
        .map(|(c, w)| {
            format!("(installations.{c} = {w} OR (installations.{c} IS NULL AND {w} IS NULL))")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let update = format!(
        "UPDATE installations SET {sets}, mp_synced_at = $2,
             changed_at = CASE WHEN {unchanged} AND w.last_updated IS NOT NULL
                               THEN installations.changed_at ELSE $2 END
         FROM (SELECT s.*, ROW_NUMBER() OVER (PARTITION BY s.client_key
                                              ORDER BY s.rank_key DESC, s.license_key DESC) AS rn
               FROM marketplace_licenses_staging s
               WHERE s.run_id = $1 AND s.client_key IS NOT NULL) w
         WHERE w.client_key = installations.client_key AND w.rn = 1"
    );
    let counts = "SELECT COUNT(client_key), COUNT(*) FROM marketplace_licenses_staging
                  WHERE run_id = $1";
    crate::on_db!(db, |p| {
        let mut tx = p.begin_write().await?;
        sqlx::query("DELETE FROM marketplace_licenses")
            .execute(&mut *tx)
            .await?;
        for sql in [&insert, &clear, &update] {
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(run_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let (matched, total): (i64, i64) = sqlx::query_as(counts)
            .bind(run_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Swapped {
            matched: u64::try_from(matched).unwrap_or_default(),
            unmatched: u64::try_from(total - matched).unwrap_or_default(),
        })
    })
}

/// Installations whose license data a swap at `at` changed (their `changed_at` is `at`).
pub async fn changed_at(db: &Db, at: DateTime<Utc>) -> sqlx::Result<Vec<String>> {
    crate::on_db!(db, |p| {
        sqlx::query_scalar::<_, String>(
            "SELECT client_key FROM installations WHERE changed_at = $1",
        )
        .bind(at)
        .fetch_all(p)
        .await
    })
}

/// When the last successful sync finished (its rows' `synced_at`), if any row exists.
pub async fn last_synced_at(db: &Db) -> sqlx::Result<Option<DateTime<Utc>>> {
    crate::on_db!(db, |p| {
        sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT MAX(synced_at) FROM marketplace_licenses",
        )
        .fetch_one(p)
        .await
    })
}

/// How many stored licenses are joined to an installation, and how many are not (the
/// dashboard's view of the last sync).
pub async fn match_counts(db: &Db) -> sqlx::Result<(i64, i64)> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT COUNT(client_key), COUNT(*) - COUNT(client_key) FROM marketplace_licenses",
        )
        .fetch_one(p)
        .await
    })
}

/// One stored license, for tests and the admin side.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LicenseRow {
    pub license_key: String,
    pub addon_key: Option<String>,
    pub license_id: Option<String>,
    pub cloud_id: Option<String>,
    pub cloud_site_hostname: Option<String>,
    pub license_type: Option<String>,
    pub tier: Option<String>,
    pub user_count: Option<i64>,
    pub status: Option<String>,
    pub last_updated: Option<DateTime<Utc>>,
    pub client_key: Option<String>,
    pub synced_at: DateTime<Utc>,
}

/// Every stored license, ordered by key (tests and small admin listings).
pub async fn all(db: &Db) -> sqlx::Result<Vec<LicenseRow>> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, LicenseRow>(
            "SELECT license_key, addon_key, license_id, cloud_id, cloud_site_hostname,
                    license_type, tier, user_count, status, last_updated, client_key, synced_at
             FROM marketplace_licenses ORDER BY license_key",
        )
        .fetch_all(p)
        .await
    })
}

/// Licenses matched to one installation, newest first.
pub async fn for_client(db: &Db, client_key: &str) -> sqlx::Result<Vec<LicenseRow>> {
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, LicenseRow>(
            "SELECT license_key, addon_key, license_id, cloud_id, cloud_site_hostname,
                    license_type, tier, user_count, status, last_updated, client_key, synced_at
             FROM marketplace_licenses WHERE client_key = $1
             ORDER BY last_updated DESC, license_key DESC",
        )
        .bind(client_key)
        .fetch_all(p)
        .await
    })
}

//! All SQL lives under this module.
//!
//! One [`Db`] enum over the two concrete sqlx pools. Query text is written once with `$n`
//! placeholders (sqlx's SQLite driver binds `$n` by number too) and run on either pool with
//! [`on_db!`]; a per-backend branch appears only where the dialects really differ.
//! Timestamps are `DateTime<Utc>` truncated to microseconds (PostgreSQL's precision); SQLite
//! stores them as RFC 3339 text with a `+00:00` offset, which sorts and compares correctly.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::DatabaseUrl;

pub mod access_tokens;
pub mod admin_tokens;
pub mod audit;
pub mod events;
pub mod grants;
pub mod host_license;
pub mod installations;
pub mod leases;
pub mod listing;
pub mod marketplace;

/// Runs the same expression against whichever pool `$db` holds:
/// `on_db!(db, |pool| sqlx::query("…").execute(pool).await)`.
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// Connects (creating a SQLite file and its folder when missing). Does not migrate.
    pub async fn connect(url: &DatabaseUrl) -> anyhow::Result<Db> {
        match url {
            DatabaseUrl::Sqlite(u) => {
                let opts = sqlite_options(u)?;
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await
                    .with_context(|| format!("opening SQLite database {u}"))?;
                Ok(Db::Sqlite(pool))
            }
            DatabaseUrl::Postgres(secret) => {
                let opts = PgConnectOptions::from_str(secret.expose_secret())
                    .context("parsing DATABASE_URL")?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await
                    .context("connecting to PostgreSQL")?;
                Ok(Db::Postgres(pool))
            }
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(p) => sqlx::migrate!("migrations/sqlite").run(p).await?,
            Db::Postgres(p) => sqlx::migrate!("migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        on_db!(self, |p| sqlx::query("SELECT 1")
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        on_db!(self, |p| p.close().await)
    }
}

/// `sqlite://rel/path.db`, `sqlite:///abs/path.db`, `sqlite:rel.db`, optional `?query`.
fn sqlite_options(url: &str) -> anyhow::Result<SqliteConnectOptions> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .context("not a sqlite URL")?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() {
        anyhow::bail!("DATABASE_URL={url:?}: no file name");
    }
    let base = if path == ":memory:" {
        SqliteConnectOptions::from_str("sqlite::memory:")?
    } else {
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the database folder {}", dir.display()))?;
        }
        SqliteConnectOptions::new().filename(path)
    };
    Ok(base
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL is durable for committed transactions across a process kill
        // (only an OS crash can lose the last ones); FULL for belt and braces.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true))
}

/// Starting a write transaction the same way on both backends.
///
/// On SQLite it is `BEGIN IMMEDIATE`: a deferred transaction that reads and then writes fails
/// at once with SQLITE_BUSY when another connection wrote in between (WAL mode does not wait
/// on a lock upgrade, whatever the busy timeout), so every read-then-write transaction must
/// take the write lock up front. Use `p.begin_write()` inside [`on_db!`].
pub trait WritePool {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send;
}

impl WritePool for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl WritePool for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.begin().await
    }
}

/// The current time at the database's precision.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// True when the error is a unique-constraint violation (by kind, not constraint name).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

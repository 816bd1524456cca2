//! All SQL lives under this module.
//!
//! One [`Db`] enum over the two concrete sqlx pools. Query text is written once with `$n`
//! placeholders (sqlx's SQLite driver binds `$n` by number too) and run on either pool with
//! `on_db!`; a per-backend branch appears only where the dialects really differ.
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
use sqlx::{ConnectOptions, Connection};

use crate::config::DatabaseUrl;

pub mod access_tokens;
pub mod admin_tokens;
pub mod audit;
pub mod charts;
pub mod events;
pub mod forge;
pub mod forge_events;
pub mod forge_license;
pub mod grants;
pub mod host_license;
pub mod installations;
pub mod leases;
pub mod license_reads;
pub mod lifecycle_tokens;
pub mod listing;
pub mod marketplace;
pub mod sessions;

/// Runs the same expression against whichever pool `$db` holds:
/// `on_db!(db, |pool| sqlx::query("…").execute(pool).await)`. Crate-internal: SQL lives in
/// `store/`, and the few other modules that need a pool reach it through here.
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// The one row a `SELECT * FROM … WHERE <unique column> = $1` finds, if any: the look-up by
/// key that every table has, written once for both backends.
pub(crate) async fn row_by_key<R>(db: &Db, sql: &'static str, key: &str) -> sqlx::Result<Option<R>>
where
    R: Send
        + Unpin
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    on_db!(db, |p| row_by_key_in(p, sql, key).await)
}

/// [`row_by_key`] on any executor: inside a write transaction, give it `&mut *tx`.
pub(crate) async fn row_by_key_in<'c, R, E>(
    exec: E,
    sql: impl sqlx::SqlSafeStr,
    key: &str,
) -> sqlx::Result<Option<R>>
where
    E: sqlx::Executor<'c>,
    R: Send + Unpin + for<'r> sqlx::FromRow<'r, <E::Database as sqlx::Database>::Row>,
    for<'q> <E::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<E::Database>,
    for<'q> &'q str: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
{
    sqlx::query_as::<_, R>(sql)
        .bind(key)
        .fetch_optional(exec)
        .await
}

/// How many rows a statement changed, for code generic over the backend (each backend's query
/// result has the count, but as an inherent method).
pub(crate) trait RowsAffected {
    fn count(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn count(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn count(&self) -> u64 {
        self.rows_affected()
    }
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
                // One plain connection first, with a short timeout: the pool would retry a
                // refused connection until its acquire timeout and then report only "pool
                // timed out"; this says why, at once.
                let shown = describe(url);
                match tokio::time::timeout(PG_CONNECT_TIMEOUT, opts.connect()).await {
                    Err(_) => anyhow::bail!(
                        "connecting to PostgreSQL {shown}: no answer within {} s",
                        PG_CONNECT_TIMEOUT.as_secs()
                    ),
                    Ok(Err(e)) => {
                        anyhow::bail!("connecting to PostgreSQL {shown}: {}", first_cause(&e))
                    }
                    Ok(Ok(conn)) => {
                        let _ = conn.close().await;
                    }
                }
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("connecting to PostgreSQL {shown}: {}", first_cause(&e))
                    })?;
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

    /// True once the pool was closed (the server is shutting down): background loops end then.
    pub fn is_closed(&self) -> bool {
        on_db!(self, |p| p.is_closed())
    }
}

/// How long the first PostgreSQL connection may take before start-up (or a CLI command) gives
/// up: a reachable server answers in milliseconds.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The first underlying cause of a sqlx error, said once. sqlx's errors repeat their source in
/// their own text ("error returned from database: X" whose source is X), and a PostgreSQL
/// error's text adds the line of the server's C source ("… at line 948"), which tells a user
/// nothing.
pub fn first_cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Tls(t) => format!("TLS: {t}"),
        sqlx::Error::Configuration(c) => c.to_string(),
        other => other.to_string(),
    }
}

/// The file of a `sqlite:` URL (`sqlite://rel/path.db`, `sqlite:///abs/path.db`,
/// `sqlite:rel.db`, optional `?query`); `:memory:` for an in-memory database.
fn sqlite_path(url: &str) -> anyhow::Result<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .context("not a sqlite URL")?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() {
        anyhow::bail!("DATABASE_URL={url:?}: no file name");
    }
    Ok(path)
}

/// The database a URL opens, for people: a SQLite file as an absolute path (a relative URL
/// depends on the working directory), a PostgreSQL URL with its password replaced by `***`.
pub fn describe(url: &DatabaseUrl) -> String {
    match url {
        DatabaseUrl::Sqlite(u) => match sqlite_path(u) {
            Ok(":memory:") | Err(_) => u.clone(),
            Ok(path) => match std::path::absolute(path) {
                Ok(abs) => format!("sqlite://{}", abs.display()),
                Err(_) => u.clone(),
            },
        },
        DatabaseUrl::Postgres(_) => format!("{url:?}"),
    }
}

/// Fails, naming the file, when a SQLite URL points at a file that does not exist. Commands
/// other than `serve` and `migrate` call it first: a mistyped URL or another working directory
/// must not create an empty database that then looks like an empty registry.
/// (PostgreSQL never creates a database on connect; a missing one fails in [`Db::connect`].)
pub fn require_existing(url: &DatabaseUrl) -> anyhow::Result<()> {
    let DatabaseUrl::Sqlite(u) = url else {
        return Ok(());
    };
    let path = sqlite_path(u)?;
    if path != ":memory:" && !Path::new(path).exists() {
        anyhow::bail!(
            "no SQLite database at {} (from {u}): check --database-url / DATABASE_URL and \
             the working directory, or create it with `connect-keeper migrate`",
            describe(url).trim_start_matches("sqlite://")
        );
    }
    Ok(())
}

fn sqlite_options(url: &str) -> anyhow::Result<SqliteConnectOptions> {
    let path = sqlite_path(url)?;
    let base = if path == ":memory:" {
        SqliteConnectOptions::from_str("sqlite::memory:")?
    } else {
        create_private(Path::new(path))?;
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

/// Creates a missing SQLite file readable by its owner only (0600), and missing folders on
/// its way 0700: the file holds every tenant's shared secret. SQLite gives its `-wal` and
/// `-shm` files the main file's mode. An existing file or folder is left as it is.
fn create_private(file: &Path) -> anyhow::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .with_context(|| format!("creating the database folder {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating the database file {}", file.display())),
    }
}

/// Starting a write transaction the same way on both backends.
///
/// On SQLite it is `BEGIN IMMEDIATE`: a deferred transaction that reads and then writes fails
/// at once with SQLITE_BUSY when another connection wrote in between (WAL mode does not wait
/// on a lock upgrade, whatever the busy timeout), so every read-then-write transaction must
/// take the write lock up front. Use `p.begin_write()` inside `on_db!`.
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

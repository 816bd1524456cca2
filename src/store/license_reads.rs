//! The claim and schedule SQL shared by the background licence readers
//! (`crate::license_reader`): each source keeps its next read time, failure count and last
//! error in its own columns of `installations` (`Schedule`), and is claimed the same way.
//!
//! Taking work is an `UPDATE … WHERE next <= now` that moves the next read time to a claim
//! deadline *before* the read, so two instances polling the same database never read the same
//! installation at the same moment, and a claim that is never completed (the process died)
//! simply becomes due again at the deadline.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::Db;

/// Where one source keeps its schedule, and which rows it can read.
pub(crate) struct Schedule {
    /// The next read time (`NULL`: never read, due at once).
    pub next_at: &'static str,
    /// Consecutive failures.
    pub failures: &'static str,
    /// The last failure's text (`NULL` after a success).
    pub last_error: &'static str,
    /// The rows that can be read at all, as SQL; `$1` is the current time.
    pub readable: &'static str,
    /// The columns a claim returns (`*` or a list).
    pub returning: &'static str,
}

/// The outcome of one read, written at once by the source's `record`, which ends with
/// `set_schedule!`.
#[derive(Clone, Debug)]
pub struct Record<L> {
    /// `None`: the read failed (licence columns kept). `Some(None)`: it answered without a
    /// licence (a free app): the licence columns are cleared and the check time set ("read,
    /// no licence reported").
    pub license: Option<Option<L>>,
    pub checked_at: DateTime<Utc>,
    /// The next read (and the end of the claim, until then).
    pub next_at: DateTime<Utc>,
    pub failures: i32,
    pub last_error: Option<String>,
}

/// A row type a claim can return on either backend.
pub(crate) trait ClaimedRow:
    for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> ClaimedRow for T where
    T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

/// Which rows a claim takes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Claim<'a> {
    /// Up to this many due rows (never read, or next read `<= now`), oldest due first.
    Due(i64),
    /// This one row when it is due, or with `force` at once.
    One { client_key: &'a str, force: bool },
}

/// Claims readable rows until `until` and returns them. A row is taken once: `Claim::One`
/// gives back nothing when the row is not readable, not due, or claimed elsewhere.
pub(crate) async fn claim<R: ClaimedRow>(
    db: &Db,
    s: &Schedule,
    which: Claim<'_>,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> sqlx::Result<Vec<R>> {
    let (next, readable) = (s.next_at, s.readable);
    let due = format!("({next} IS NULL OR {next} <= $1)");
    // `$1` now, `$2` until, then the claim's own parameters. For `Due` the due test is
    // repeated in the outer WHERE: on PostgreSQL a concurrent claimer's UPDATE re-checks it
    // against the row it waited for, so each row is claimed once.
    let rows = match which {
        Claim::Due(_) => format!(
            "client_key IN (
                 SELECT client_key FROM installations WHERE {readable} AND {due}
                 ORDER BY {next} IS NOT NULL, {next}, client_key
                 LIMIT $3)
             AND {readable} AND {due}"
        ),
        Claim::One { .. } => format!("client_key = $3 AND {readable} AND ($4 OR {due})"),
    };
    let sql = format!(
        "UPDATE installations SET {next} = $2 WHERE {rows} RETURNING {}",
        s.returning
    );
    crate::on_db!(db, |p| {
        let q = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(now)
            .bind(until);
        let q = match which {
            Claim::Due(limit) => q.bind(limit),
            Claim::One { client_key, force } => q.bind(client_key).bind(force),
        };
        q.fetch_all(p).await
    })
}

/// `UPDATE` of a schedule's next read, failures and last error (`$1` client key, `$2`..`$4`).
pub(crate) fn set_schedule_sql(s: &Schedule) -> String {
    format!(
        "UPDATE installations SET {} = $2, {} = $3, {} = $4 WHERE client_key = $1",
        s.next_at, s.failures, s.last_error
    )
}

/// Writes a read's schedule (next read, failures, last error of a [`Record`]) inside the
/// read's record transaction, so the licence and its schedule commit together. A macro
/// rather than a function because it runs on either backend's transaction (inside `on_db!`):
/// a function generic over the executor makes the reader's future fail the `Send` check
/// `tokio::spawn` needs.
macro_rules! set_schedule {
    ($tx:expr, $schedule:expr, $client_key:expr, $rec:expr) => {{
        let sql = $crate::store::license_reads::set_schedule_sql($schedule);
        let rec = $rec;
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind($client_key)
            .bind(rec.next_at)
            .bind(rec.failures)
            .bind(rec.last_error.as_deref())
            .execute(&mut *$tx)
            .await
    }};
}
pub(crate) use set_schedule;

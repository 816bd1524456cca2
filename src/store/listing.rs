//! The registry's list queries: filters, sort orders and keyset pagination over
//! `installations`, plus the summary counts.
//!
//! Keyset, not OFFSET: every page is an index range scan that starts after the last row seen,
//! so a deep page costs what the first one does, and rows inserted while a client pages
//! through cannot shift the ones it has not seen yet (each row is returned exactly once).
//! The key is always `(sort column, client_key)`, which is unique.

use chrono::{DateTime, Utc};

use super::Db;
use super::grants::GrantRow;
use super::installations::InstallationRow;
use crate::domain::LicenseState;
use crate::domain::Status;

crate::domain::text_enum! {
    /// The sort orders of `GET /admin/installations`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub enum Sort {
        #[default]
        InstalledAt => "installed_at",
        InstalledAtDesc => "-installed_at",
        /// By `effective_trial_end` (extensions included), soonest first; rows without one last.
        TrialEnd => "trial_end",
        BaseUrl => "base_url",
    }
}

impl Sort {
    /// The position of `row` in this order, for the next page's cursor.
    pub fn key_of(self, row: &InstallationRow) -> After {
        let value = match self {
            Sort::InstalledAt | Sort::InstalledAtDesc => KeyValue::Time(row.installed_at),
            Sort::TrialEnd => match row.effective_trial_end {
                Some(t) => KeyValue::Time(t),
                None => KeyValue::Null,
            },
            Sort::BaseUrl => KeyValue::Text(row.site.base_url.clone()),
        };
        After {
            value,
            client_key: row.client_key.clone(),
        }
    }
}

/// Which rows to list. Empty vectors mean "any".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub statuses: Vec<Status>,
    pub licenses: Vec<LicenseState>,
    pub products: Vec<String>,
    pub flavours: Vec<crate::domain::Flavour>,
    /// Case-insensitive substring of the base URL, the company, or the contacts (whose JSON
    /// holds the e-mail addresses).
    pub q: Option<String>,
    /// `effective_trial_end` strictly before this instant.
    pub trial_ends_before: Option<DateTime<Utc>>,
    /// `license.corroborated` equal to this.
    pub corroborated: Option<bool>,
}

/// The sort-column value of a row; `Null` only for `trial_end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyValue {
    Time(DateTime<Utc>),
    Text(String),
    Null,
}

/// "Start after this row": the decoded cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct After {
    pub value: KeyValue,
    pub client_key: String,
}

/// Which dialect a statement is built for (only the `q` filter differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of(db: &Db) -> Backend {
        match db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Usage {
    Page,
    Count,
}

/// A bind value; the SQL is built at run time, so values travel beside it.
#[derive(Clone, Debug)]
enum Arg {
    Text(String),
    Time(DateTime<Utc>),
    Bool(bool),
}

#[derive(Default)]
struct Sql {
    conditions: Vec<String>,
    args: Vec<Arg>,
}

impl Sql {
    /// Adds a bind value and returns its placeholder.
    fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    fn placeholders(&mut self, values: impl IntoIterator<Item = String>) -> String {
        let list: Vec<String> = values.into_iter().map(|v| self.arg(Arg::Text(v))).collect();
        list.join(", ")
    }

    /// The WHERE conditions of `filter`. `usage` says what the statement is for: a page walks
    /// its sort index (see `0006_admin_sort.sql`), a count uses the filter index.
    fn filter(filter: &Filter, backend: Backend, usage: Usage) -> Sql {
        let mut sql = Sql::default();
        // SQLite without ANALYZE statistics believes an equality on `status` is selective
        // and would search the filter index, then sort every match; `+column` (a no-op
        // expression) keeps it on the sort index, which holds these columns too.
        // PostgreSQL plans from its statistics and is left alone.
        let col = |name: &str| match (backend, usage) {
            (Backend::Sqlite, Usage::Page) => format!("+{name}"),
            _ => name.to_owned(),
        };
        if !filter.statuses.is_empty() {
            let p = sql.placeholders(filter.statuses.iter().map(|s| s.as_str().to_owned()));
            sql.conditions.push(format!("{} IN ({p})", col("status")));
        }
        if !filter.licenses.is_empty() {
            let p = sql.placeholders(filter.licenses.iter().map(|s| s.as_str().to_owned()));
            sql.conditions
                .push(format!("{} IN ({p})", col("license_state")));
        }
        if !filter.products.is_empty() {
            let p = sql.placeholders(filter.products.iter().cloned());
            sql.conditions
                .push(format!("{} IN ({p})", col("product_type")));
        }
        if !filter.flavours.is_empty() {
            let p = sql.placeholders(filter.flavours.iter().map(|f| f.as_str().to_owned()));
            sql.conditions.push(format!("{} IN ({p})", col("flavour")));
        }
        if let Some(q) = filter.q.as_deref().filter(|q| !q.is_empty()) {
            // Case-insensitive: SQLite's LIKE already is (for ASCII), PostgreSQL needs ILIKE.
            // Not LOWER(col) LIKE …: that costs a function call per row and column, and the
            // substring search is a full scan either way (~3x slower at 100k rows).
            let like = match backend {
                Backend::Sqlite => "LIKE",
                Backend::Postgres => "ILIKE",
            };
            if backend == Backend::Sqlite && q.chars().count() >= TRIGRAM {
                // The trigram index (0009_installation_search.sql) narrows the rows to those
                // containing `q`, ignoring case; the LIKE test below still decides, so the
                // answer is exactly the scan's. `client_key IN (…)` lets SQLite fetch those
                // few rows by primary key instead of walking a sort index.
                let m = sql.arg(Arg::Text(fts_phrase(q)));
                sql.conditions.push(format!(
                    "client_key IN (SELECT client_key FROM installation_search_ids WHERE id IN
                       (SELECT rowid FROM installation_search WHERE installation_search MATCH {m}))"
                ));
            }
            let p = sql.arg(Arg::Text(like_pattern(q)));
            sql.conditions.push(format!(
                "(base_url {like} {p} ESCAPE '\\'
                  OR mp_company {like} {p} ESCAPE '\\'
                  OR mp_technical_contact {like} {p} ESCAPE '\\'
                  OR mp_billing_contact {like} {p} ESCAPE '\\')"
            ));
        }
        if let Some(t) = filter.trial_ends_before {
            let p = sql.arg(Arg::Time(t));
            sql.conditions.push(format!("effective_trial_end < {p}"));
        }
        if let Some(c) = filter.corroborated {
            let p = sql.arg(Arg::Bool(c));
            sql.conditions.push(format!("license_corroborated = {p}"));
        }
        sql
    }

    fn where_clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        }
    }
}

/// The shortest `q` the trigram index can look up; shorter ones scan.
const TRIGRAM: usize = 3;

/// `q` as one FTS5 string (a phrase of its trigrams, i.e. the substring): inside double quotes
/// every character is text (`*`, `OR`, `:`, `^`, parentheses), and a `"` is written twice.
fn fts_phrase(q: &str) -> String {
    format!("\"{}\"", q.replace('"', "\"\""))
}

/// `%q%`, with LIKE's wildcards in `q` taken literally.
fn like_pattern(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 2);
    out.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

async fn fetch_rows(db: &Db, sql: &str, args: &[Arg]) -> sqlx::Result<Vec<InstallationRow>> {
    crate::on_db!(db, |p| {
        let mut q = sqlx::query_as::<_, InstallationRow>(sqlx::AssertSqlSafe(sql));
        for a in args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Time(t) => q.bind(*t),
                Arg::Bool(b) => q.bind(*b),
            };
        }
        q.fetch_all(p).await
    })
}

/// Up to `limit` rows in `sort` order after `after` (from the start when `None`).
pub async fn page(
    db: &Db,
    filter: &Filter,
    sort: Sort,
    after: Option<&After>,
    limit: u32,
) -> sqlx::Result<Vec<InstallationRow>> {
    match sort {
        Sort::InstalledAt => range(db, filter, "installed_at", false, after, limit).await,
        Sort::InstalledAtDesc => range(db, filter, "installed_at", true, after, limit).await,
        Sort::BaseUrl => range(db, filter, "base_url", false, after, limit).await,
        Sort::TrialEnd => trial_end_page(db, filter, after, limit).await,
    }
}

/// One keyset range over a NOT NULL column, `(column, client_key)` ascending or descending.
async fn range(
    db: &Db,
    filter: &Filter,
    column: &str,
    desc: bool,
    after: Option<&After>,
    limit: u32,
) -> sqlx::Result<Vec<InstallationRow>> {
    let mut sql = Sql::filter(filter, Backend::of(db), Usage::Page);
    if let Some(after) = after {
        let v = match &after.value {
            KeyValue::Time(t) => sql.arg(Arg::Time(*t)),
            KeyValue::Text(s) => sql.arg(Arg::Text(s.clone())),
            // Never produced for these NOT NULL columns (the cursor decoder refuses it).
            KeyValue::Null => sql.arg(Arg::Text(String::new())),
        };
        let k = sql.arg(Arg::Text(after.client_key.clone()));
        let op = if desc { "<" } else { ">" };
        sql.conditions
            .push(format!("({column}, client_key) {op} ({v}, {k})"));
    }
    let dir = if desc { "DESC" } else { "ASC" };
    let text = format!(
        "SELECT * FROM installations {} ORDER BY {column} {dir}, client_key {dir} LIMIT {limit}",
        sql.where_clause()
    );
    fetch_rows(db, &text, &sql.args).await
}

/// `trial_end` order: rows with an effective trial end by `(effective_trial_end, client_key)`,
/// then the rows without one by `client_key`. Two index-friendly ranges instead of one
/// `NULLS LAST` sort, which SQLite cannot serve from an index.
async fn trial_end_page(
    db: &Db,
    filter: &Filter,
    after: Option<&After>,
    limit: u32,
) -> sqlx::Result<Vec<InstallationRow>> {
    let mut rows = Vec::new();
    let null_after = match after {
        Some(After {
            value: KeyValue::Null,
            client_key,
        }) => Some(client_key.clone()),
        _ => {
            let mut sql = Sql::filter(filter, Backend::of(db), Usage::Page);
            sql.conditions
                .push("effective_trial_end IS NOT NULL".to_owned());
            if let Some(After {
                value: KeyValue::Time(t),
                client_key,
            }) = after
            {
                let v = sql.arg(Arg::Time(*t));
                let k = sql.arg(Arg::Text(client_key.clone()));
                sql.conditions
                    .push(format!("(effective_trial_end, client_key) > ({v}, {k})"));
            }
            let text = format!(
                "SELECT * FROM installations {} ORDER BY effective_trial_end, client_key LIMIT {limit}",
                sql.where_clause()
            );
            rows = fetch_rows(db, &text, &sql.args).await?;
            if rows.len() as u32 >= limit {
                return Ok(rows);
            }
            None
        }
    };
    let mut sql = Sql::filter(filter, Backend::of(db), Usage::Page);
    sql.conditions
        .push("effective_trial_end IS NULL".to_owned());
    if let Some(k) = null_after {
        let k = sql.arg(Arg::Text(k));
        sql.conditions.push(format!("client_key > {k}"));
    }
    let rest = limit - rows.len() as u32;
    let text = format!(
        "SELECT * FROM installations {} ORDER BY client_key LIMIT {rest}",
        sql.where_clause()
    );
    rows.extend(fetch_rows(db, &text, &sql.args).await?);
    Ok(rows)
}

/// How many rows match `filter` (the `total` of a list answer).
pub async fn count(db: &Db, filter: &Filter) -> sqlx::Result<i64> {
    let sql = Sql::filter(filter, Backend::of(db), Usage::Count);
    let text = format!("SELECT COUNT(*) FROM installations {}", sql.where_clause());
    crate::on_db!(db, |p| {
        let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(text.as_str()));
        for a in &sql.args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Time(t) => q.bind(*t),
                Arg::Bool(b) => q.bind(*b),
            };
        }
        q.fetch_one(p).await
    })
}

/// Client keys per grants lookup on PostgreSQL (see [`grants_for`]).
const GRANTS_CHUNK: usize = 100;

/// The grants of several tenants in one query (a page's worth), oldest first.
pub async fn grants_for(db: &Db, client_keys: &[String]) -> sqlx::Result<Vec<GrantRow>> {
    if client_keys.is_empty() {
        return Ok(Vec::new());
    }
    match db {
        // Small array parameters. One Bind message carrying a whole export batch (1000 keys,
        // ~30 KB, as an IN list or one array) took a steady ~40 ms against an empty table —
        // the signature of Nagle's algorithm meeting a delayed ACK (sqlx does not set
        // TCP_NODELAY). In chunks of 100 the same lookup takes ~1 ms; this was most of a
        // 100k-row CSV export's time (5.8 s -> 1.8 s).
        Db::Postgres(p) => {
            let mut out = Vec::new();
            for chunk in client_keys.chunks(GRANTS_CHUNK) {
                out.extend(
                    sqlx::query_as::<_, GrantRow>(
                        "SELECT * FROM grants WHERE client_key = ANY($1) ORDER BY created_at, id",
                    )
                    .bind(chunk)
                    .fetch_all(p)
                    .await?,
                );
            }
            out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(out)
        }
        // SQLite has no arrays; a list of placeholders (at most one export batch, far under
        // its 32766 limit) is cheap there.
        Db::Sqlite(p) => {
            let mut sql = Sql::default();
            let list = sql.placeholders(client_keys.iter().cloned());
            let text = format!(
                "SELECT * FROM grants WHERE client_key IN ({list}) ORDER BY created_at, id"
            );
            let mut q = sqlx::query_as::<_, GrantRow>(sqlx::AssertSqlSafe(text.as_str()));
            for a in &sql.args {
                if let Arg::Text(s) = a {
                    q = q.bind(s.as_str());
                }
            }
            q.fetch_all(p).await
        }
    }
}

/// `(value, count)` pairs of `GROUP BY column` over the whole table.
pub async fn counts_by(db: &Db, column: GroupColumn) -> sqlx::Result<Vec<(String, i64)>> {
    let col = match column {
        GroupColumn::Status => "status",
        GroupColumn::LicenseState => "license_state",
    };
    let text = format!("SELECT {col}, COUNT(*) FROM installations GROUP BY {col}");
    crate::on_db!(db, |p| {
        sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(text.as_str()))
            .fetch_all(p)
            .await
    })
}

#[derive(Clone, Copy, Debug)]
pub enum GroupColumn {
    Status,
    LicenseState,
}

/// Installations in trial whose effective trial end falls in `[from, until)`.
pub async fn trials_ending(
    db: &Db,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> sqlx::Result<i64> {
    crate::on_db!(db, |p| {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM installations
             WHERE license_state = 'trial' AND effective_trial_end >= $1
               AND effective_trial_end < $2",
        )
        .bind(from)
        .bind(until)
        .fetch_one(p)
        .await
    })
}

/// Synthetic installations for benchmarks (`connect-keeper dev seed`). Never used by the
/// service itself.
#[doc(hidden)]
pub mod seed {
    use chrono::{DateTime, Duration, Utc};

    use crate::store::Db;

    const COLUMNS: &str = "client_key, app_key, base_url, base_host, product_type,
        shared_secret, status, installed_at, updated_at, changed_at, mp_license_id,
        mp_license_type, mp_tier, mp_user_count, mp_status, mp_trial_start, mp_trial_end,
        mp_company, mp_country, mp_region, mp_technical_contact, mp_synced_at, license_state,
        license_source, effective_trial_end, host_next_check_at, license_corroborated";
    const NCOLS: usize = 27;

    /// Inserts `count` installations with varied status, product, license state, Marketplace
    /// data and trial ends, in batches inside transactions. Keys are `seed-{run}-{n}`.
    pub async fn installations(db: &Db, count: u64, now: DateTime<Utc>) -> sqlx::Result<u64> {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        // 400 rows x 27 values stays under SQLite's 32766 bind values per statement.
        let batch: u64 = 400;
        let mut done = 0;
        while done < count {
            let n = batch.min(count - done);
            let tuples: Vec<String> = (0..n as usize)
                .map(|j| {
                    let ps: Vec<String> =
                        (1..=NCOLS).map(|c| format!("${}", j * NCOLS + c)).collect();
                    format!("({})", ps.join(", "))
                })
                .collect();
            let text = format!(
                "INSERT INTO installations ({COLUMNS}) VALUES {}",
                tuples.join(", ")
            );
            let rows: Vec<Synthetic> = (done..done + n)
                .map(|i| Synthetic::new(&run, i, now))
                .collect();
            crate::on_db!(db, |p| {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(text.as_str()));
                for r in &rows {
                    let source = match r.license_state {
                        "unlicensed" if r.mp_status.is_none() => None,
                        _ => Some("marketplace"),
                    };
                    q = q
                        .bind(r.client_key.as_str())
                        .bind("connect-keeper-app")
                        .bind(r.base_url.as_str())
                        .bind(r.base_host.as_str())
                        .bind(r.product)
                        .bind("seed-secret-not-real")
                        .bind(r.status)
                        .bind(r.installed_at)
                        .bind(r.installed_at)
                        .bind(r.installed_at)
                        .bind(r.mp_license_id.as_deref())
                        .bind(r.mp_license_type)
                        .bind(r.mp_tier)
                        .bind(r.mp_user_count)
                        .bind(r.mp_status)
                        .bind(r.mp_trial_start)
                        .bind(r.mp_trial_end)
                        .bind(r.mp_company.as_deref())
                        .bind(r.mp_country)
                        .bind(r.mp_region)
                        .bind(r.mp_technical_contact.as_deref())
                        .bind(r.mp_status.map(|_| now))
                        .bind(r.license_state)
                        .bind(source)
                        .bind(r.mp_trial_end)
                        // not due: a server started on seeded data must not try to reach
                        // 100k made-up sites at once
                        .bind(now + chrono::Duration::days(1))
                        // the Marketplace is the only outside source a seeded row has
                        .bind(
                            r.mp_status
                                .is_some_and(|s| s.eq_ignore_ascii_case("active")),
                        );
                }
                q.execute(p).await.map(|_| ())
            })?;
            done += n;
        }
        Ok(done)
    }

    struct Synthetic {
        client_key: String,
        base_url: String,
        base_host: String,
        product: &'static str,
        status: &'static str,
        installed_at: DateTime<Utc>,
        mp_license_id: Option<String>,
        mp_license_type: Option<&'static str>,
        mp_tier: Option<&'static str>,
        mp_user_count: Option<i64>,
        mp_status: Option<&'static str>,
        mp_trial_start: Option<DateTime<Utc>>,
        mp_trial_end: Option<DateTime<Utc>>,
        mp_company: Option<String>,
        mp_country: Option<&'static str>,
        mp_region: Option<&'static str>,
        mp_technical_contact: Option<String>,
        license_state: &'static str,
    }

    impl Synthetic {
        fn new(run: &str, i: u64, now: DateTime<Utc>) -> Synthetic {
            let host = format!("site-{run}-{i}.atlassian.net");
            let product = if i % 3 == 0 { "confluence" } else { "jira" };
            let status = [
                "enabled",
                "enabled",
                "enabled",
                "installed",
                "disabled",
                "uninstalled",
            ][(i % 6) as usize];
            // spread over ~3 years, a few seconds apart, with collisions to exercise the
            // client_key tie-break
            let installed_at = now - Duration::seconds(((i / 2) * 900) as i64);
            let has_mp = i % 4 != 0;
            let trial = has_mp && i % 5 == 0;
            let (license_type, tier, users) = if trial {
                ("EVALUATION", "Evaluation", None)
            } else {
                let n = [10, 25, 50, 100][(i % 4) as usize];
                (
                    "COMMERCIAL",
                    ["10 Users", "25 Users", "50 Users", "100 Users"][(i % 4) as usize],
                    Some(n),
                )
            };
            let trial_end = trial.then(|| now + Duration::days((i % 60) as i64 - 20));
            let license_state = match (has_mp, trial) {
                (false, _) => "unlicensed",
                (true, true) if trial_end.is_some_and(|t| t > now) => "trial",
                (true, true) => "unlicensed",
                (true, false) => "active",
            };
            Synthetic {
                client_key: format!("seed-{run}-{i:07}"),
                base_url: format!("https://{host}"),
                base_host: host.clone(),
                product,
                status,
                installed_at,
                mp_license_id: has_mp.then(|| format!("SEN-{i}")),
                mp_license_type: has_mp.then_some(license_type),
                mp_tier: has_mp.then_some(tier),
                mp_user_count: if has_mp { users } else { None },
                // an evaluation past its end is `inactive` in the Marketplace's reports
                mp_status: has_mp.then_some(if license_state == "unlicensed" {
                    "inactive"
                } else {
                    "active"
                }),
                mp_trial_start: trial_end.map(|t| t - Duration::days(30)),
                mp_trial_end: trial_end,
                mp_company: has_mp.then(|| format!("Company {i} GmbH")),
                mp_country: has_mp.then_some(["Germany", "United States", "Japan"][(i % 3) as usize]),
                mp_region: has_mp.then_some(["EMEA", "Americas", "APAC"][(i % 3) as usize]),
                mp_technical_contact: has_mp.then(|| {
                    serde_json::json!({"name": format!("Admin {i}"), "email": format!("admin{i}@{host}"), "phone": null})
                        .to_string()
                }),
                license_state,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("Acme"), "%Acme%");
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn fts_phrase_quotes_everything() {
        assert_eq!(fts_phrase("acme"), "\"acme\"");
        assert_eq!(fts_phrase("a\"b OR c*"), "\"a\"\"b OR c*\"");
    }

    #[test]
    fn only_sqlite_queries_of_three_characters_use_the_trigram_index() {
        let with = |q: &str, backend| {
            let f = Filter {
                q: Some(q.into()),
                ..Filter::default()
            };
            Sql::filter(&f, backend, Usage::Page).where_clause()
        };
        let w = with("acm", Backend::Sqlite);
        assert!(w.contains("MATCH $1") && w.contains("LIKE $2"), "{w}");
        // characters, not bytes
        assert!(!with("äé", Backend::Sqlite).contains("MATCH"));
        assert!(with("äéö", Backend::Sqlite).contains("MATCH"));
        assert!(!with("acme", Backend::Postgres).contains("MATCH"));
    }

    #[test]
    fn filter_sql_numbers_placeholders_in_order() {
        let f = Filter {
            statuses: vec![Status::Enabled, Status::Disabled],
            licenses: vec![LicenseState::Trial],
            products: vec!["jira".into()],
            flavours: vec![],
            q: Some("x".into()),
            trial_ends_before: Some(Utc::now()),
            corroborated: Some(false),
        };
        let sql = Sql::filter(&f, Backend::Postgres, Usage::Page);
        let w = sql.where_clause();
        assert!(w.contains("status IN ($1, $2)"), "{w}");
        assert!(w.contains("license_state IN ($3)"), "{w}");
        assert!(w.contains("product_type IN ($4)"), "{w}");
        assert!(w.contains("ILIKE $5"), "{w}");
        assert!(w.contains("effective_trial_end < $6"), "{w}");
        assert!(w.contains("license_corroborated = $7"), "{w}");
        assert_eq!(sql.args.len(), 7);
        assert_eq!(
            Sql::filter(&Filter::default(), Backend::Sqlite, Usage::Page).where_clause(),
            ""
        );
        let sqlite = Sql::filter(&f, Backend::Sqlite, Usage::Page).where_clause();
        assert!(
            sqlite.contains(" LIKE $5") && !sqlite.contains("ILIKE"),
            "{sqlite}"
        );
        assert!(sqlite.contains("+status IN ($1, $2)"), "{sqlite}");
        let count = Sql::filter(&f, Backend::Sqlite, Usage::Count).where_clause();
        assert!(
            count.contains(" status IN ($1, $2)") && !count.contains('+'),
            "{count}"
        );
    }

    #[test]
    fn sorts_round_trip() {
        for s in Sort::ALL {
            assert_eq!(Sort::parse(s.as_str()), Some(s));
        }
        assert_eq!(Sort::parse("installed"), None);
    }
}

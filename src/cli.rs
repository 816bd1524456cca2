//! The command line (contract §2). Each command is a thin layer over the same functions the
//! admin API calls ([`crate::registry::vendor`] and the grant rules), working on the database
//! directly: it connects and migrates itself, so it also works on a fresh database. Changes are
//! recorded in the audit log with the actor `cli`.
//!
//! Output: data on stdout (tables for a terminal, or `--format json|csv` for scripts), notes
//! and errors on stderr. `main` turns an error into a message on stderr and a non-zero exit.

use std::io::{self, Write};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;

use crate::config::Config;
use crate::registry::vendor::{self, Installation, InstallationDetail, ListRequest};
use crate::startup::Application;
use crate::store::Db;

/// The actor recorded in the audit log for changes made with the CLI.
pub const CLI_ACTOR: &str = "cli";

#[derive(Debug, Parser)]
#[command(
    name = "connect-keeper",
    version,
    about = "Atlassian Connect app backend and installation registry"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// True for the server; every other command is a short-lived tool whose stdout is data.
    pub fn is_server(&self) -> bool {
        matches!(self.command, None | Some(Command::Serve))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Admin API bearer tokens.
    #[command(subcommand)]
    AdminToken(AdminTokenCommand),
    /// The installation registry.
    #[command(subcommand)]
    Installations(InstallationsCommand),
    /// Development helpers (benchmark data).
    #[command(subcommand, hide = true)]
    Dev(DevCommand),
}

/// Output of list commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum ListFormat {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// `{"items": […]}`.
    Json,
    /// A header row, then one row per item.
    Csv,
}

/// Output of commands that show or create one thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum ItemFormat {
    /// Readable text.
    #[default]
    Text,
    /// JSON.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Make a new admin token and print it once (only its SHA-256 is stored).
    Create {
        /// A name for the token, recorded as the actor of its changes.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: ItemFormat,
    },
    /// List admin tokens (never the tokens themselves).
    List {
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// Revoke an admin token by id; it stops working at once.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum InstallationsCommand {
    /// List installations (all matching rows).
    List(ListArgs),
    /// One installation with its license, customer, grants, history and audit trail.
    Show {
        client_key: String,
        #[arg(long, value_enum, default_value_t)]
        format: ItemFormat,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// installed, enabled, disabled, uninstalled (comma-separated).
    #[arg(long)]
    status: Option<String>,
    /// active, trial, free, unlicensed (comma-separated).
    #[arg(long)]
    license: Option<String>,
    /// jira, confluence (comma-separated).
    #[arg(long)]
    product: Option<String>,
    /// Substring of the base URL, company or contact e-mail.
    #[arg(long)]
    q: Option<String>,
    /// Effective trial end before this date (YYYY-MM-DD).
    #[arg(long)]
    trial_ends_before: Option<String>,
    /// installed_at, -installed_at, trial_end, base_url.
    #[arg(long, allow_hyphen_values = true)]
    sort: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    limit: Option<u64>,
    #[arg(long, value_enum, default_value_t)]
    format: ListFormat,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Insert N synthetic installations (benchmarks only; never on a real database).
    Seed {
        #[arg(long)]
        count: u64,
    },
}

/// Runs a parsed command. Errors are printed by `main` on stderr with a non-zero exit.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let db = Db::connect(&config.database_url).await?;
            db.migrate().await?;
            println!("migrations applied ({})", db.backend());
            Ok(())
        }
        Command::AdminToken(cmd) => admin_token(&config, cmd).await,
        Command::Installations(cmd) => installations(&config, cmd).await,
        Command::Dev(DevCommand::Seed { count }) => {
            let db = open(&config).await?;
            let started = std::time::Instant::now();
            let n = crate::store::listing::seed::installations(&db, count, crate::store::now())
                .await?;
            println!("seeded {n} installations in {:.1?}", started.elapsed());
            Ok(())
        }
    };
    // `connect-keeper installations list | head` closes stdout early: not an error.
    match result {
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), "connect-keeper listening");
    app.run_until_stopped().await?;
    Ok(())
}

/// Connects and migrates, so every command works on a fresh database.
async fn open(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database_url).await?;
    db.migrate().await.context("applying migrations")?;
    Ok(db)
}

/// Logging for the short-lived commands: warnings and errors on stderr only, so stdout
/// carries nothing but the command's output (a token, a table, JSON).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

// ---------------------------------------------------------------------------------------
// admin-token
// ---------------------------------------------------------------------------------------

async fn admin_token(config: &Config, cmd: AdminTokenCommand) -> anyhow::Result<()> {
    let db = open(config).await?;
    let now = crate::store::now();
    let mut out = io::stdout().lock();
    match cmd {
        AdminTokenCommand::Create { name, format } => {
            let created = vendor::create_admin_token(&db, &name, CLI_ACTOR, now).await?;
            match format {
                ItemFormat::Json => {
                    serde_json::to_writer(&mut out, &created)?;
                    writeln!(out)?;
                }
                ItemFormat::Text => {
                    writeln!(out, "{}", created.token)?;
                    eprintln!(
                        "admin token {:?} created (id {}). It is shown only this once; \
                         use it as `Authorization: Bearer <token>`.",
                        created.name, created.id
                    );
                }
            }
        }
        AdminTokenCommand::List { format } => {
            let items = vendor::list_admin_tokens(&db).await?;
            let rows = items
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        short_time(Some(t.created_at)),
                        short_time(t.last_used_at),
                        short_time(t.revoked_at),
                    ]
                })
                .collect();
            print_list(
                &mut out,
                format,
                &items,
                &["ID", "NAME", "CREATED", "LAST_USED", "REVOKED"],
                rows,
            )?;
        }
        AdminTokenCommand::Revoke { id } => {
            let t = vendor::revoke_admin_token(&db, &id, CLI_ACTOR, now).await?;
            writeln!(out, "admin token {} ({}) revoked", t.id, t.name)?;
        }
    }
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// installations
// ---------------------------------------------------------------------------------------

fn list_request(args: &ListArgs) -> anyhow::Result<ListRequest> {
    let mut req = ListRequest::default();
    if let Some(s) = &args.status {
        req.filter.statuses = vendor::parse_statuses(s).map_err(flag_error)?;
    }
    if let Some(s) = &args.license {
        req.filter.licenses = vendor::parse_licenses(s).map_err(flag_error)?;
    }
    if let Some(s) = &args.product {
        req.filter.products = vendor::parse_products(s).map_err(flag_error)?;
    }
    req.filter.q = args.q.clone().filter(|q| !q.trim().is_empty());
    if let Some(s) = &args.trial_ends_before {
        req.filter.trial_ends_before =
            Some(vendor::parse_date_param("trial_ends_before", s).map_err(flag_error)?);
    }
    if let Some(s) = &args.sort {
        req.sort = vendor::parse_sort(s).map_err(flag_error)?;
    }
    Ok(req)
}

/// `status: unknown value…` → `--status: unknown value…` (the CLI's name for the field).
fn flag_error(e: crate::error::ApiError) -> anyhow::Error {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((field, why)) => anyhow::anyhow!("--{}: {why}", field.replace('_', "-")),
        None => anyhow::anyhow!(text),
    }
}

const INSTALLATION_COLUMNS: [&str; 12] = [
    "CLIENT_KEY",
    "BASE_URL",
    "PRODUCT",
    "STATUS",
    "LICENSE",
    "TIER",
    "USERS",
    "TRIAL_START",
    "TRIAL_END",
    "COMPANY",
    "CONTACT",
    "INSTALLED",
];

fn installation_cells(i: &Installation) -> Vec<String> {
    let l = &i.license;
    let c = i.customer.as_ref();
    vec![
        i.client_key.clone(),
        i.base_url.clone(),
        i.product_type.clone(),
        i.status.clone(),
        l.state.clone(),
        l.tier.clone().unwrap_or_default(),
        l.user_count.map(|n| n.to_string()).unwrap_or_default(),
        day(l.trial_start),
        day(l.effective_trial_end.or(l.trial_end)),
        c.and_then(|c| c.company.clone()).unwrap_or_default(),
        c.and_then(|c| c.technical_contact.as_ref())
            .and_then(|t| t.email.clone())
            .unwrap_or_default(),
        short_time(Some(i.installed_at)),
    ]
}

async fn installations(config: &Config, cmd: InstallationsCommand) -> anyhow::Result<()> {
    let db = open(config).await?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    match cmd {
        InstallationsCommand::List(args) => {
            let req = list_request(&args)?;
            let max = args.limit.unwrap_or(u64::MAX);
            let mut stream = Box::pin(vendor::all_matching(db.clone(), req.filter, req.sort));
            let mut written: u64 = 0;
            let now = crate::store::now();
            // Table output must see every row to size its columns; JSON and CSV stream.
            let mut table: Vec<Vec<String>> = Vec::new();
            let mut csv_out = (args.format == ListFormat::Csv).then(|| csv::Writer::from_writer(Vec::new()));
            match args.format {
                ListFormat::Json => write!(out, "{{\"items\":[")?,
                ListFormat::Csv => {
                    if let Some(w) = csv_out.as_mut() {
                        w.write_record(vendor::CSV_HEADER)?;
                    }
                }
                ListFormat::Table => {}
            }
            'pages: while let Some(batch) = stream.next().await {
                for i in batch? {
                    if written >= max {
                        break 'pages;
                    }
                    match args.format {
                        ListFormat::Json => {
                            if written > 0 {
                                write!(out, ",")?;
                            }
                            serde_json::to_writer(&mut out, &i)?;
                        }
                        ListFormat::Csv => {
                            if let Some(w) = csv_out.as_mut() {
                                w.write_record(vendor::csv_record(&i, now))?;
                                out.write_all(&std::mem::take(w.get_mut()))?;
                            }
                        }
                        ListFormat::Table => table.push(installation_cells(&i)),
                    }
                    written += 1;
                }
            }
            match args.format {
                ListFormat::Json => writeln!(out, "]}}")?,
                ListFormat::Csv => {
                    if let Some(mut w) = csv_out {
                        w.flush()?;
                        out.write_all(w.get_ref())?;
                    }
                }
                ListFormat::Table => {
                    write_table(&mut out, &INSTALLATION_COLUMNS, &table)?;
                    eprintln!("{written} installation(s)");
                }
            }
        }
        InstallationsCommand::Show { client_key, format } => {
            let d = vendor::detail(&db, &client_key).await?;
            match format {
                ItemFormat::Json => {
                    serde_json::to_writer_pretty(&mut out, &d)?;
                    writeln!(out)?;
                }
                ItemFormat::Text => write_detail(&mut out, &d)?,
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn write_detail(out: &mut impl Write, d: &InstallationDetail) -> io::Result<()> {
    let i = &d.installation;
    let l = &i.license;
    let mut kv: Vec<(&str, String)> = vec![
        ("client_key", i.client_key.clone()),
        ("base_url", i.base_url.clone()),
        ("display_url", i.display_url.clone().unwrap_or_default()),
        ("product", i.product_type.clone()),
        ("status", i.status.clone()),
        ("installed_at", short_time(Some(i.installed_at))),
        ("updated_at", short_time(Some(i.updated_at))),
        ("uninstalled_at", short_time(i.uninstalled_at)),
        ("last_seen_at", short_time(i.last_seen_at)),
        ("cloud_id", i.cloud_id.clone().unwrap_or_default()),
        ("entitlement", i.entitlement_number.clone().unwrap_or_default()),
        (
            "license",
            format!(
                "{} (source: {})",
                l.state,
                l.source.as_deref().unwrap_or("none")
            ),
        ),
        ("license_type", l.license_type.clone().unwrap_or_default()),
        ("tier", l.tier.clone().unwrap_or_default()),
        (
            "user_count",
            l.user_count.map(|n| n.to_string()).unwrap_or_default(),
        ),
        ("trial", format!("{} → {}", day(l.trial_start), day(l.trial_end))),
        ("effective_trial_end", short_time(l.effective_trial_end)),
        ("lic_last_seen", l.lic_last_seen.clone().unwrap_or_default()),
        ("marketplace_status", l.marketplace_status.clone().unwrap_or_default()),
        ("synced_at", short_time(l.synced_at)),
    ];
    if let Some(c) = &i.customer {
        kv.push(("company", c.company.clone().unwrap_or_default()));
        kv.push((
            "country",
            [c.country.clone(), c.region.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
        ));
        for (label, contact) in [
            ("technical_contact", &c.technical_contact),
            ("billing_contact", &c.billing_contact),
        ] {
            if let Some(ct) = contact {
                let parts: Vec<String> = [&ct.name, &ct.email, &ct.phone]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                kv.push((label, parts.join(" · ")));
            }
        }
    }
    let width = kv.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &kv {
        let v = if v.is_empty() { "-" } else { v };
        writeln!(out, "{k:<width$}  {v}")?;
    }
    writeln!(out, "\ngrants:")?;
    let rows: Vec<Vec<String>> = i
        .grants
        .iter()
        .map(|g| {
            vec![
                g.id.clone(),
                g.kind.clone(),
                short_time(Some(g.starts_at)),
                short_time(g.ends_at),
                short_time(g.revoked_at),
                g.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    write_table(out, &["ID", "KIND", "STARTS", "ENDS", "REVOKED", "REASON"], &rows)?;
    writeln!(out, "\nevents:")?;
    let rows: Vec<Vec<String>> = d
        .events
        .iter()
        .map(|e| vec![short_time(Some(e.received_at)), e.event_type.clone()])
        .collect();
    write_table(out, &["RECEIVED", "EVENT"], &rows)?;
    writeln!(out, "\naudit:")?;
    let rows: Vec<Vec<String>> = d
        .audit
        .iter()
        .map(|a| {
            vec![
                short_time(Some(a.created_at)),
                a.actor.clone(),
                a.action.clone(),
                a.target_id.clone().unwrap_or_default(),
                a.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    write_table(out, &["AT", "ACTOR", "ACTION", "TARGET", "REASON"], &rows)
}

// ---------------------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------------------

/// `2026-05-01 13:45` (UTC), or empty.
fn short_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// `2026-05-01`, or empty.
fn day(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Left-aligned columns two spaces apart; empty cells show `-`.
pub fn write_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let cell = |s: &str| if s.is_empty() { "-".to_owned() } else { s.replace(['\n', '\r', '\t'], " ") };
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: Vec<&str>| -> io::Result<()> {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, header.to_vec())?;
    for r in &rows {
        line(out, r.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

/// Writes a list in the chosen format: a table of `rows`, JSON `{"items": items}`, or CSV with
/// the table's header and rows.
fn print_list<T: serde::Serialize>(
    out: &mut impl Write,
    format: ListFormat,
    items: &[T],
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        ListFormat::Table => write_table(out, header, &rows)?,
        ListFormat::Json => {
            serde_json::to_writer(&mut *out, &serde_json::json!({ "items": items }))?;
            writeln!(out)?;
        }
        ListFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(header.iter().map(|h| h.to_ascii_lowercase()))?;
            for r in rows {
                w.write_record(r)?;
            }
            w.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &["ID", "NAME"],
            &[vec!["1".into(), "alpha".into()], vec!["22222".into(), String::new()]],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "ID     NAME\n1      alpha\n22222  -\n");
    }

    #[test]
    fn every_command_parses() {
        for args in [
            vec!["connect-keeper"],
            vec!["connect-keeper", "migrate"],
            vec!["connect-keeper", "admin-token", "create", "--name", "ops"],
            vec!["connect-keeper", "admin-token", "list", "--format", "json"],
            vec!["connect-keeper", "admin-token", "revoke", "ID"],
            vec!["connect-keeper", "installations", "list", "--status", "enabled", "--license", "trial", "--format", "csv"],
            vec!["connect-keeper", "installations", "list", "--sort", "-installed_at"],
            vec!["connect-keeper", "installations", "show", "CK"],
        ] {
            Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}

//! The command line (docs/cli.md). Each command is a thin layer over the same functions the
//! admin API calls (the modules of [`crate::registry`]), working on the database
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
use crate::registry;
use crate::registry::list_query::{self, ListRequest};
use crate::registry::views::{self, Installation, InstallationDetail};
use crate::registry::{admin_tokens, export, grants};
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
    /// The database [default: sqlite://data/connect-keeper.db]
    ///
    /// sqlite://rel/path.db, sqlite:///abs/path.db or postgres://user:password@host/db. Only
    /// `serve` and `migrate` create a SQLite database (and its folder) that does not exist yet.
    // `hide_env_values`: the variable may hold a password, and --help must not print it.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,
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
    /// Trial extensions.
    #[command(subcommand)]
    Trial(TrialCommand),
    /// Free use.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Vendor access tokens that give one site free use.
    #[command(subcommand)]
    AccessToken(AccessTokenCommand),
    /// Marketplace license data.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Exit 0 when the server on this machine answers `GET /readyz` with 200 (the database is
    /// reachable), 1 otherwise: the container's HEALTHCHECK, which needs no shell or curl.
    Healthcheck,
    /// Secrets at rest (SECRETS_KEY).
    #[command(subcommand)]
    Secrets(SecretsCommand),
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
        #[command(flatten)]
        output: ItemOutput,
    },
    /// List admin tokens (never the tokens themselves).
    List(ListOutput),
    /// Revoke an admin token; it stops working at once. Revoking it again changes nothing
    /// (and says so).
    Revoke(TokenId),
}

/// The token a `revoke` acts on.
#[derive(Debug, Args)]
pub struct TokenId {
    /// The token's id, as the `list` command of the same group shows it.
    id: String,
}

#[derive(Debug, Subcommand)]
pub enum InstallationsCommand {
    /// List installations (all matching rows).
    List(ListArgs),
    /// One installation with its license, customer, grants, history and audit trail.
    Show {
        /// The site's client key, as `installations list` shows it.
        client_key: String,
        #[command(flatten)]
        output: ItemOutput,
    },
}

/// The output option of a command that shows or makes one thing.
#[derive(Debug, Args)]
pub struct ItemOutput {
    /// How to print the result.
    #[arg(long, value_enum, default_value_t)]
    format: ItemFormat,
}

/// The one option of a list command without filters.
#[derive(Debug, Args)]
pub struct ListOutput {
    /// How to print the list.
    #[arg(long, value_enum, default_value_t)]
    format: ListFormat,
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
    /// connect, connect_on_forge, forge (comma-separated).
    #[arg(long)]
    flavour: Option<String>,
    /// Only sites whose base URL, company or contact e-mail contains TEXT (any case).
    // `--q`, the admin API's name for it, stays as a hidden alias so scripts keep working.
    #[arg(long, value_name = "TEXT", alias = "q")]
    search: Option<String>,
    /// Only sites whose trial (extensions included) ends before this: a date (YYYY-MM-DD,
    /// meaning 00:00 UTC) or an RFC 3339 time such as 2026-12-31T18:00:00Z.
    #[arg(long, value_name = "DATE|TIME")]
    trial_ends_before: Option<String>,
    /// true: an outside source (product licence endpoint, Marketplace) says licensed; false:
    /// not, e.g. sites licensed only by the `lic` of their requests.
    #[arg(long)]
    corroborated: Option<String>,
    /// installed_at, -installed_at, trial_end, base_url.
    #[arg(long, allow_hyphen_values = true)]
    sort: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    limit: Option<u64>,
    /// How to print the list.
    #[arg(long, value_enum, default_value_t)]
    format: ListFormat,
}

#[derive(Debug, Subcommand)]
pub enum TrialCommand {
    /// Extend the trial by N days, counted from the later of now and the current effective
    /// trial end.
    Extend {
        /// The site's client key, as `installations list` shows it.
        client_key: String,
        /// Days to add: a whole number from 1 to 365.
        // Text, so that every wrong value gets the one message of the rule.
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        days: String,
        /// Why; recorded in the audit log.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        output: ItemOutput,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Let the installation use the app for free, for good or until a time.
    Free {
        /// The site's client key, as `installations list` shows it.
        client_key: String,
        /// When the free use ends: a date (YYYY-MM-DD, meaning 00:00 UTC that day) or an RFC 3339
        /// time such as 2026-12-31T18:00:00Z. Leave it out for free use with no end (refused while
        /// the site already has one).
        #[arg(long, value_name = "DATE|TIME")]
        until: Option<String>,
        /// Why; recorded in the audit log.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        output: ItemOutput,
    },
    /// Revoke a grant (kept for the record). Revoking it again changes nothing (and says so).
    Revoke {
        /// The grant's id, as `installations show` lists it.
        grant_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccessTokenCommand {
    /// Make an access token and print it once (only its hash is stored).
    Create {
        /// Bind the token in advance to this installation.
        #[arg(long)]
        client_key: Option<String>,
        /// When the token expires: a date (YYYY-MM-DD, meaning 00:00 UTC that day) or an RFC 3339
        /// time such as 2026-12-31T18:00:00Z. Leave it out for a token that does not expire.
        #[arg(long, value_name = "DATE|TIME")]
        until: Option<String>,
        /// A note for yourself, e.g. whom the token is for; shown by `access-token list`.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        #[command(flatten)]
        output: ItemOutput,
    },
    /// List access tokens (never the tokens themselves).
    List(ListOutput),
    /// Revoke an access token; a site that redeemed it loses its free use. Revoking it again
    /// changes nothing (and says so).
    Revoke(TokenId),
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Run one Marketplace license sync and print a summary (needs the MARKETPLACE_*
    /// credentials).
    Marketplace {
        #[command(flatten)]
        output: ItemOutput,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-encrypt every stored shared secret and Forge app system token under the first key
    /// of SECRETS_KEY (plain rows included), in batches, while servers keep running. To rotate online: give every
    /// instance SECRETS_KEY=NEW,OLD (NEW encrypts, both decrypt), run this, then drop OLD.
    Rotate {
        /// Encrypt under this key (32 bytes, base64) instead; SECRETS_KEY's keys still decrypt.
        /// Running instances must already know it, or they cannot read the rotated rows.
        #[arg(long)]
        new_key: Option<String>,
        /// Rows per batch.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[command(flatten)]
        output: ItemOutput,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Insert N synthetic installations (benchmarks only; never on a real database).
    Seed {
        /// How many installations to insert.
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
        Command::Trial(cmd) => trial(&config, cmd).await,
        Command::Grant(cmd) => grant(&config, cmd).await,
        Command::AccessToken(cmd) => access_token(&config, cmd).await,
        Command::Sync(SyncCommand::Marketplace {
            output: ItemOutput { format },
        }) => {
            let db = open(&config).await?;
            let app_key = config.resolve_app_key(&config.descriptor_template()?)?;
            let client =
                crate::marketplace::Client::new(&config, &app_key, crate::state::http_client()?);
            let metrics = crate::metrics::Metrics::new();
            let summary = crate::marketplace::sync_once(&db, &client, &metrics).await;
            db.close().await;
            let summary = summary?;
            match format {
                ItemFormat::Json => println!("{}", serde_json::to_string(&summary)?),
                ItemFormat::Text => println!(
                    "Marketplace sync finished at {}: {} license rows fetched, {} matched to an \
                     installation, {} unmatched",
                    summary
                        .finished_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    summary.fetched,
                    summary.matched,
                    summary.unmatched
                ),
            }
            Ok(())
        }
        Command::Healthcheck => healthcheck(config.bind_addr),
        Command::Secrets(SecretsCommand::Rotate {
            new_key,
            batch,
            output: ItemOutput { format },
        }) => secrets_rotate(&config, new_key.as_deref(), batch, format).await,
        Command::Dev(DevCommand::Seed { count }) => {
            let db = open(&config).await?;
            let started = std::time::Instant::now();
            let n =
                crate::store::listing::seed::installations(&db, count, crate::store::now()).await?;
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
    let database = crate::store::describe(&config.database_url);
    let bind = config.bind_addr;
    let app = Application::build(config).await?;
    let address = std::net::SocketAddr::new(bind.ip(), app.port());
    tracing::info!(port = app.port(), %address, %database, "connect-keeper listening");
    app.run_until_stopped().await?;
    Ok(())
}

/// Asks the server listening on `bind` (the loopback address when it listens on all
/// interfaces) for `GET /readyz` over plain HTTP/1.0, within 5 seconds in all. Standard library
/// only: the check runs every few seconds in the container and must not need anything there.
fn healthcheck(bind: std::net::SocketAddr) -> anyhow::Result<()> {
    use std::io::Read;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    use std::time::Duration;

    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, bind.port());
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("healthcheck: cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    stream
        .take(4096)
        .read_to_end(&mut response)
        .with_context(|| format!("healthcheck: no answer from {addr}"))?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status_line.split_whitespace().nth(1) == Some("200"),
        "healthcheck: GET http://{addr}/readyz answered {status_line:?}"
    );
    Ok(())
}

async fn secrets_rotate(
    config: &Config,
    new_key: Option<&str>,
    batch: usize,
    format: ItemFormat,
) -> anyhow::Result<()> {
    anyhow::ensure!(batch > 0, "--batch: must be at least 1");
    let keyring = match new_key {
        Some(k) => config.secrets.with_primary(
            crate::secrets::parse_key(k).map_err(|e| anyhow::anyhow!("--new-key: {e}"))?,
        ),
        None => (*config.secrets).clone(),
    };
    let db = open(config).await?;
    let summary = crate::secrets::rotate(&db, &keyring, batch).await;
    db.close().await;
    let summary = summary?;
    match format {
        ItemFormat::Json => println!("{}", serde_json::to_string(&summary)?),
        ItemFormat::Text => println!(
            "secrets rotated to key {}: {} rows scanned, {} re-encrypted, {} changed meanwhile \
             (left as written), {} not decryptable with SECRETS_KEY",
            keyring.primary_id().unwrap_or("-"),
            summary.scanned,
            summary.rewritten,
            summary.skipped_concurrent,
            summary.undecryptable
        ),
    }
    anyhow::ensure!(
        summary.undecryptable == 0,
        "{} rows could not be decrypted with SECRETS_KEY (see the log); add their key and run again",
        summary.undecryptable
    );
    Ok(())
}

/// Connects to an existing database and migrates it, so every command works on a database
/// that an older version made. Never creates a SQLite file: see
/// [`crate::store::require_existing`].
async fn open(config: &Config) -> anyhow::Result<Db> {
    crate::store::require_existing(&config.database_url)?;
    let db = Db::connect(&config.database_url).await?;
    db.migrate().await.context("applying migrations")?;
    Ok(db)
}

/// An error and its causes on one line, each cause said once: sqlx (and other) errors repeat
/// their source in their own text ("error returned from database: X" caused by X), so a cause
/// already contained in the text before it is left out.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Says on stderr which database a list or show command read, so that an empty list or "no
/// installation" from the wrong database is not taken for a real answer.
fn say_database(config: &Config) {
    eprintln!("database: {}", crate::store::describe(&config.database_url));
}

/// Logging for the short-lived commands: warnings and errors on stderr only, so stdout
/// carries nothing but the command's output (a token, a table, JSON). sqlx only at `error`:
/// its "slow statement" warnings (any query over a second, common on a loaded machine or a
/// large listing) say nothing a person running one command can act on; the server keeps them.
pub const CLI_LOG_FILTER: &str = "warn,sqlx=error";

/// Installs [`CLI_LOG_FILTER`] (or `RUST_LOG`) on stderr.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(CLI_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .fmt_fields(crate::telemetry::escaping_fields())
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
        AdminTokenCommand::Create {
            name,
            output: ItemOutput { format },
        } => {
            let created = admin_tokens::create(&db, &name, CLI_ACTOR, now)
                .await
                .map_err(cli_error)?;
            let about = format!(
                "admin token {:?} created (id {}). It is shown only this once; \
                 use it as `Authorization: Bearer <token>`.",
                created.name, created.id
            );
            print_new_token(&mut out, format, &created, &created.token, &about)?;
        }
        AdminTokenCommand::List(ListOutput { format }) => {
            say_database(config);
            let items = admin_tokens::list(&db).await?;
            let header = ["ID", "NAME", "CREATED", "LAST_USED", "REVOKED"];
            print_list(&mut out, format, &items, &header, |t, time| {
                vec![
                    t.id.clone(),
                    t.name.clone(),
                    time(Some(t.created_at)),
                    time(t.last_used_at),
                    time(t.revoked_at),
                ]
            })?;
        }
        AdminTokenCommand::Revoke(TokenId { id }) => {
            let t = admin_tokens::revoke(&db, &id, CLI_ACTOR, now).await?;
            match revoked_before(t.revoked_at, now) {
                Some(at) => writeln!(
                    out,
                    "admin token {:?} (id {}) was already revoked at {at}; nothing changed",
                    t.name, t.id
                )?,
                None => writeln!(
                    out,
                    "admin token {:?} (id {}) revoked; it no longer works",
                    t.name, t.id
                )?,
            }
        }
    }
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// trial, grant, access-token: the same rules as the admin API (crate::registry::grants)
// ---------------------------------------------------------------------------------------

/// A token made just now, shown this once: JSON for scripts, or the bare token on stdout (so
/// that `$(…)` captures it) with what it is on stderr.
fn print_new_token(
    out: &mut impl Write,
    format: ItemFormat,
    created: &impl serde::Serialize,
    token: &str,
    about: &str,
) -> anyhow::Result<()> {
    match format {
        ItemFormat::Json => {
            serde_json::to_writer(&mut *out, created)?;
            writeln!(out)?;
        }
        ItemFormat::Text => {
            writeln!(out, "{token}")?;
            eprintln!("{about}");
        }
    }
    Ok(())
}

fn print_grant(out: &mut impl Write, g: &views::Grant, format: ItemFormat) -> anyhow::Result<()> {
    match format {
        ItemFormat::Json => {
            serde_json::to_writer(&mut *out, g)?;
            writeln!(out)?;
        }
        ItemFormat::Text => {
            let end = g
                .grant
                .ends_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            let (ck, id) = (&g.client_key, &g.grant.id);
            match (g.grant.kind.as_str(), end) {
                ("trial_extension", Some(end)) => writeln!(
                    out,
                    "trial of {ck:?} extended: it now ends {end} (grant {id})"
                )?,
                (_, Some(end)) => writeln!(
                    out,
                    "{ck:?} may use the app for free until {end} (grant {id})"
                )?,
                (_, None) => writeln!(
                    out,
                    "{ck:?} may use the app for free, with no end (grant {id})"
                )?,
            }
        }
    }
    Ok(())
}

async fn trial(config: &Config, cmd: TrialCommand) -> anyhow::Result<()> {
    let db = open(config).await?;
    let TrialCommand::Extend {
        client_key,
        days,
        reason,
        output: ItemOutput { format },
    } = cmd;
    let days = grants::parse_trial_days(&days).map_err(cli_error)?;
    let g = grants::extend_trial(
        &db,
        &client_key,
        days,
        reason.as_deref(),
        CLI_ACTOR,
        crate::store::now(),
    )
    .await
    .map_err(cli_error)?;
    print_grant(&mut io::stdout().lock(), &views::Grant::from(&g), format)
}

/// `--until`: a date (midnight UTC) or an RFC 3339 time; none for no end.
fn until_flag(until: Option<String>) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    until
        .as_deref()
        .map(|u| list_query::parse_date_param("until", u))
        .transpose()
        .map_err(cli_error)
}

async fn grant(config: &Config, cmd: GrantCommand) -> anyhow::Result<()> {
    let db = open(config).await?;
    let now = crate::store::now();
    match cmd {
        GrantCommand::Free {
            client_key,
            until,
            reason,
            output: ItemOutput { format },
        } => {
            let until = until_flag(until)?;
            let g = grants::grant_free(&db, &client_key, until, reason.as_deref(), CLI_ACTOR, now)
                .await
                .map_err(cli_error)?;
            print_grant(&mut io::stdout().lock(), &views::Grant::from(&g), format)
        }
        GrantCommand::Revoke { grant_id } => {
            let g = grants::revoke_grant(&db, &grant_id, CLI_ACTOR, now)
                .await
                .map_err(cli_error)?;
            let what = match g.kind.as_str() {
                "trial_extension" => "trial extension",
                "access_token" => "free use from an access token",
                _ => "free use",
            };
            match revoked_before(g.revoked_at, now) {
                Some(at) => println!(
                    "the {what} of {:?} was already revoked at {at} (grant {}); nothing changed",
                    g.client_key, g.id
                ),
                None => println!("the {what} of {:?} revoked (grant {})", g.client_key, g.id),
            }
            Ok(())
        }
    }
}

async fn access_token(config: &Config, cmd: AccessTokenCommand) -> anyhow::Result<()> {
    let db = open(config).await?;
    let now = crate::store::now();
    let mut out = io::stdout().lock();
    match cmd {
        AccessTokenCommand::Create {
            client_key,
            until,
            note,
            output: ItemOutput { format },
        } => {
            let (row, token) = grants::create_access_token(
                &db,
                note.as_deref(),
                until_flag(until)?,
                client_key.as_deref(),
                CLI_ACTOR,
                now,
            )
            .await
            .map_err(cli_error)?;
            let created = views::CreatedAccessToken::new(&row, token, &config.app_base_url);
            let about = format!(
                "access token {} created; it is shown only this once.\ninstall URL: {}",
                created.id, created.install_url
            );
            print_new_token(&mut out, format, &created, &created.token, &about)?;
        }
        AccessTokenCommand::List(ListOutput { format }) => {
            say_database(config);
            let items = grants::list_access_tokens(&db).await?;
            let header = [
                "ID",
                "NOTE",
                "CLIENT_KEY",
                "CREATED",
                "EXPIRES",
                "REDEEMED_BY",
                "REDEEMED_AT",
                "REVOKED",
            ];
            print_list(&mut out, format, &items, &header, |t, time| {
                vec![
                    t.id.clone(),
                    t.note.clone().unwrap_or_default(),
                    t.client_key.clone().unwrap_or_default(),
                    time(Some(t.created_at)),
                    time(t.expires_at),
                    t.redeemed_by.clone().unwrap_or_default(),
                    time(t.redeemed_at),
                    time(t.revoked_at),
                ]
            })?;
        }
        AccessTokenCommand::Revoke(TokenId { id }) => {
            let t = grants::revoke_access_token(&db, &id, CLI_ACTOR, now)
                .await
                .map_err(cli_error)?;
            match (revoked_before(t.revoked_at, now), &t.redeemed_by) {
                (Some(at), _) => writeln!(
                    out,
                    "access token {} was already revoked at {at}; nothing changed",
                    t.id
                )?,
                (None, Some(site)) => writeln!(
                    out,
                    "access token {} revoked; {site:?}, which redeemed it, no longer has free use \
                     from it",
                    t.id
                )?,
                (None, None) => writeln!(out, "access token {} revoked", t.id)?,
            }
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
        req.filter.statuses = list_query::parse_statuses(s).map_err(cli_error)?;
    }
    if let Some(s) = &args.license {
        req.filter.licenses = list_query::parse_licenses(s).map_err(cli_error)?;
    }
    if let Some(s) = &args.product {
        req.filter.products = list_query::parse_products(s).map_err(cli_error)?;
    }
    if let Some(s) = &args.flavour {
        req.filter.flavours = list_query::parse_flavours(s).map_err(cli_error)?;
    }
    req.filter.q = args.search.clone().filter(|q| !q.trim().is_empty());
    if let Some(s) = &args.trial_ends_before {
        req.filter.trial_ends_before =
            Some(list_query::parse_date_param("trial_ends_before", s).map_err(cli_error)?);
    }
    if let Some(s) = &args.corroborated {
        req.filter.corroborated = Some(list_query::parse_corroborated(s).map_err(cli_error)?);
    }
    if let Some(s) = &args.sort {
        req.sort = list_query::parse_sort(s).map_err(cli_error)?;
    }
    Ok(req)
}

/// The CLI's flag for each field a [`registry::Error::Invalid`] can name (the field's name in
/// the admin API). A field not listed is shown under its API name.
pub const FLAGS: [(&str, &str); 14] = [
    ("status", "--status"),
    ("license", "--license"),
    ("product", "--product"),
    ("flavour", "--flavour"),
    ("trial_ends_before", "--trial-ends-before"),
    ("corroborated", "--corroborated"),
    ("sort", "--sort"),
    ("name", "--name"),
    ("days", "--days"),
    ("reason", "--reason"),
    ("note", "--note"),
    ("until", "--until"),
    ("ends_at", "--until"),
    ("expires_at", "--until"),
];

/// The flag that sets the API field `field`.
pub fn flag_of(field: &str) -> &str {
    FLAGS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(field, |(_, flag)| flag)
}

/// A registry error as the CLI says it: an invalid field names its flag
/// (`ends_at: must be in the future` → `--until: must be in the future`); anything else keeps
/// its message and cause chain.
fn cli_error(e: registry::Error) -> anyhow::Error {
    match e {
        registry::Error::Invalid { field, why } => anyhow::anyhow!("{}: {why}", flag_of(field)),
        other => anyhow::Error::from(other),
    }
}

const INSTALLATION_COLUMNS: [&str; 16] = [
    "CLIENT_KEY",
    "INSTALLATION_ID",
    "FLAVOUR",
    "FORGE_ENV",
    "BASE_URL",
    "PRODUCT",
    "STATUS",
    "LICENSE",
    "CORROBORATED",
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
        i.client_key.clone().unwrap_or_default(),
        i.installation_id.clone().unwrap_or_default(),
        i.flavour.clone(),
        i.forge_environment
            .as_ref()
            .map(|e| e.kind.clone())
            .unwrap_or_default(),
        i.base_url.clone(),
        i.product_type.clone(),
        i.status.clone(),
        l.state.clone(),
        if l.corroborated { "yes" } else { "no" }.to_owned(),
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
    say_database(config);
    let mut out = io::BufWriter::new(io::stdout().lock());
    match cmd {
        InstallationsCommand::List(args) => {
            let req = list_request(&args)?;
            let max = args.limit.unwrap_or(u64::MAX);
            let now = crate::store::now();
            match args.format {
                ListFormat::Json => {
                    write!(out, "{{\"items\":[")?;
                    let mut first = true;
                    each_installation(&db, &req, max, |i| {
                        if !std::mem::take(&mut first) {
                            write!(out, ",")?;
                        }
                        serde_json::to_writer(&mut out, &i)?;
                        Ok(())
                    })
                    .await?;
                    writeln!(out, "]}}")?;
                }
                ListFormat::Csv => {
                    let mut w = csv::Writer::from_writer(&mut out);
                    w.write_record(export::CSV_HEADER)?;
                    each_installation(&db, &req, max, |i| {
                        w.write_record(export::csv_record(&i, now))?;
                        Ok(())
                    })
                    .await?;
                    w.flush()?;
                }
                ListFormat::Table => {
                    // A table must see every row to size its columns.
                    let mut rows = Vec::new();
                    each_installation(&db, &req, max, |i| {
                        rows.push(installation_cells(&i));
                        Ok(())
                    })
                    .await?;
                    write_list_table(&mut out, &INSTALLATION_COLUMNS, &rows)?;
                    eprintln!("{} installation(s)", rows.len());
                }
            }
        }
        InstallationsCommand::Show {
            client_key,
            output: ItemOutput { format },
        } => {
            let d = registry::installations::detail(&db, &client_key).await?;
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

/// Calls `f` for each matching installation in order, at most `max` times, fetching by keyset
/// batches so memory stays flat.
async fn each_installation(
    db: &Db,
    req: &ListRequest,
    max: u64,
    mut f: impl FnMut(Installation) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut stream = Box::pin(registry::installations::all_matching(
        db.clone(),
        req.filter.clone(),
        req.sort,
    ));
    let mut seen = 0;
    while let Some(batch) = stream.next().await {
        for i in batch? {
            if seen >= max {
                return Ok(());
            }
            f(i)?;
            seen += 1;
        }
    }
    Ok(())
}

fn write_detail(out: &mut impl Write, d: &InstallationDetail) -> io::Result<()> {
    let i = &d.installation;
    let l = &i.license;
    let mut kv: Vec<(&str, String)> = vec![
        ("client_key", i.client_key.clone().unwrap_or_default()),
        (
            "installation_id",
            i.installation_id.clone().unwrap_or_default(),
        ),
        ("flavour", i.flavour.clone()),
        (
            "forge_environment",
            i.forge_environment
                .as_ref()
                .map(|e| format!("{} {}", e.kind, e.id.as_deref().unwrap_or("")))
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        ("base_url", i.base_url.clone()),
        ("display_url", i.display_url.clone().unwrap_or_default()),
        ("product", i.product_type.clone()),
        ("status", i.status.clone()),
        ("installed_at", short_time(Some(i.installed_at))),
        ("updated_at", short_time(Some(i.updated_at))),
        ("uninstalled_at", short_time(i.uninstalled_at)),
        ("last_seen_at", short_time(i.last_seen_at)),
        ("cloud_id", i.cloud_id.clone().unwrap_or_default()),
        (
            "entitlement",
            i.entitlement_number.clone().unwrap_or_default(),
        ),
        (
            "license",
            format!(
                "{} (source: {})",
                l.state,
                l.source.as_deref().unwrap_or("none")
            ),
        ),
        (
            "corroborated",
            if l.corroborated { "yes" } else { "no" }.to_owned(),
        ),
        ("license_type", l.license_type.clone().unwrap_or_default()),
        ("tier", l.tier.clone().unwrap_or_default()),
        (
            "user_count",
            l.user_count.map(|n| n.to_string()).unwrap_or_default(),
        ),
        ("trial", trial_span(l.trial_start, l.trial_end)),
        ("effective_trial_end", short_time(l.effective_trial_end)),
        ("lic_last_seen", l.lic_last_seen.clone().unwrap_or_default()),
        (
            "marketplace_status",
            l.marketplace_status.clone().unwrap_or_default(),
        ),
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
        writeln!(out, "{k:<width$}  {}", crate::sanitize::control(v))?;
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
    write_table(
        out,
        &["ID", "KIND", "STARTS", "ENDS", "REVOKED", "REASON"],
        &rows,
    )?;
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

/// When a revocation happened before `now`, i.e. not by this call: every revoke writes `now`
/// into `revoked_at` unless it was already set, and keeps the first time.
fn revoked_before(
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    revoked_at
        .filter(|&at| at != now)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The Marketplace trial as `start → end`, or empty when there is none.
fn trial_span(
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    if start.is_none() && end.is_none() {
        return String::new();
    }
    let or_unknown = |t| match day(t) {
        d if d.is_empty() => "?".to_owned(),
        d => d,
    };
    format!("{} → {}", or_unknown(start), or_unknown(end))
}

/// How a list shows a time.
type TimeCell = fn(Option<chrono::DateTime<chrono::Utc>>) -> String;

/// How a list writes times: short for a person's table; RFC 3339 in UTC, as in the JSON, for
/// the machine formats.
fn time_cell(format: ListFormat) -> TimeCell {
    match format {
        ListFormat::Table => short_time,
        ListFormat::Json | ListFormat::Csv => rfc3339,
    }
}

/// `2026-05-01T13:45:07.123456Z`, as chrono serialises a time into JSON, or empty.
fn rfc3339(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

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

/// A list's table ([`write_table`]), except that a column empty in every row is left out (when
/// there are rows), so that a list fits a terminal: a Connect-only registry has no installation
/// ids or Forge environments, and sites without Marketplace data no tier or trial. `--format
/// json` and `csv` keep every field; a detail's tables keep every column.
pub fn write_list_table(
    out: &mut impl Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let keep: Vec<bool> = (0..header.len())
        .map(|i| rows.is_empty() || rows.iter().any(|r| r.get(i).is_some_and(|c| !c.is_empty())))
        .collect();
    fn kept<'a>(cells: impl Iterator<Item = &'a str>, keep: &[bool]) -> Vec<&'a str> {
        cells
            .zip(keep)
            .filter_map(|(c, k)| k.then_some(c))
            .collect()
    }
    let header = kept(header.iter().copied(), &keep);
    let rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| kept(r.iter().map(String::as_str), &keep))
        .collect();
    write_table(out, &header, &rows)
}

/// Left-aligned columns two spaces apart; empty cells show `-`.
pub fn write_table<S: AsRef<str>>(
    out: &mut impl Write,
    header: &[&str],
    rows: &[Vec<S>],
) -> io::Result<()> {
    // Cells carry text from sites and the Marketplace: control characters are shown
    // escaped, so an ESC sequence cannot repaint the terminal and a newline cannot forge a row.
    let cell = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            crate::sanitize::control(s).into_owned()
        }
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c.as_ref())).collect())
        .collect();
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
    cells: impl Fn(&T, TimeCell) -> Vec<String>,
) -> anyhow::Result<()> {
    let time = time_cell(format);
    let rows = || items.iter().map(|t| cells(t, time));
    match format {
        ListFormat::Table => write_list_table(out, header, &rows().collect::<Vec<_>>())?,
        ListFormat::Json => {
            serde_json::to_writer(&mut *out, &serde_json::json!({ "items": items }))?;
            writeln!(out)?;
        }
        ListFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(header.iter().map(|h| h.to_ascii_lowercase()))?;
            for r in rows() {
                w.write_record(crate::sanitize::csv_record(r))?;
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
    fn cli_logs_no_sqlx_slow_statement_warnings_but_keeps_other_warnings() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber =
            tracing_subscriber::registry().with(tracing_subscriber::EnvFilter::new(CLI_LOG_FILTER));
        tracing::subscriber::with_default(subscriber, || {
            // sqlx logs slow statements at WARN under `sqlx::query`.
            assert!(!tracing::enabled!(target: "sqlx::query", tracing::Level::WARN));
            assert!(tracing::enabled!(target: "sqlx::query", tracing::Level::ERROR));
            assert!(tracing::enabled!(target: "connect_keeper::cli", tracing::Level::WARN));
            assert!(!tracing::enabled!(target: "connect_keeper::cli", tracing::Level::INFO));
        });
    }

    #[test]
    fn tables_are_aligned() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &["ID", "NAME"],
            &[
                vec!["1".into(), "alpha".into()],
                vec!["22222".into(), String::new()],
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "ID     NAME\n1      alpha\n22222  -\n");
    }

    #[test]
    fn a_column_empty_in_every_row_is_left_out_of_a_list_but_not_of_a_detail() {
        let mut out = Vec::new();
        write_list_table(
            &mut out,
            &["ID", "FORGE_ENV", "NAME"],
            &[
                vec!["1".into(), String::new(), "alpha".into()],
                vec!["2".into(), String::new(), String::new()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID  NAME\n1   alpha\n2   -\n"
        );
        let mut out = Vec::new();
        write_list_table(&mut out, &["ID", "FORGE_ENV"], &[]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ID  FORGE_ENV\n");
        let mut out = Vec::new();
        write_table(&mut out, &["ID", "ENDS"], &[vec!["1", ""]]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ID  ENDS\n1   -\n");
    }

    #[test]
    fn invalid_fields_are_named_by_their_flag() {
        let e = cli_error(registry::Error::invalid("ends_at", "must be in the future"));
        assert_eq!(e.to_string(), "--until: must be in the future");
        let e = cli_error(registry::Error::invalid(
            "trial_ends_before",
            "expected a date",
        ));
        assert_eq!(e.to_string(), "--trial-ends-before: expected a date");
        // every flag in the table exists on some command
        fn longs(cmd: &clap::Command, out: &mut Vec<String>) {
            out.extend(
                cmd.get_arguments()
                    .filter_map(|a| a.get_long())
                    .map(|l| format!("--{l}")),
            );
            cmd.get_subcommands().for_each(|c| longs(c, out));
        }
        let mut all = Vec::new();
        longs(&<Cli as clap::CommandFactory>::command(), &mut all);
        for (_, flag) in FLAGS {
            assert!(
                all.iter().any(|l| l == flag),
                "{flag} is no flag of any command"
            );
        }
    }

    #[test]
    fn every_argument_and_command_is_described() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && !path.is_empty() {
                missing.push(path.to_owned());
            }
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.get_help().is_none() && !a.is_hide_set() && id != "help" && id != "version" {
                    missing.push(format!("{path} {id}"));
                }
            }
            for c in cmd.get_subcommands() {
                check(c, &format!("{path} {}", c.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&<Cli as clap::CommandFactory>::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn every_command_parses() {
        for args in [
            vec!["connect-keeper"],
            vec!["connect-keeper", "migrate"],
            vec!["connect-keeper", "healthcheck"],
            vec!["connect-keeper", "admin-token", "create", "--name", "ops"],
            vec!["connect-keeper", "admin-token", "list", "--format", "json"],
            vec!["connect-keeper", "admin-token", "revoke", "ID"],
            vec![
                "connect-keeper",
                "installations",
                "list",
                "--status",
                "enabled",
                "--license",
                "trial",
                "--format",
                "csv",
            ],
            vec![
                "connect-keeper",
                "installations",
                "list",
                "--sort",
                "-installed_at",
            ],
            vec!["connect-keeper", "installations", "show", "CK"],
            vec!["connect-keeper", "sync", "marketplace"],
            vec![
                "connect-keeper",
                "trial",
                "extend",
                "CK",
                "--days",
                "5",
                "--reason",
                "why",
            ],
            vec![
                "connect-keeper",
                "grant",
                "free",
                "CK",
                "--until",
                "2030-01-01T00:00:00Z",
            ],
            vec!["connect-keeper", "grant", "revoke", "G"],
            vec![
                "connect-keeper",
                "access-token",
                "create",
                "--client-key",
                "K",
                "--note",
                "n",
            ],
            vec!["connect-keeper", "access-token", "list", "--format", "csv"],
            vec!["connect-keeper", "access-token", "revoke", "T"],
        ] {
            Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}

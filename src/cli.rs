//! The command line (contract §2). Each command is a thin layer over the same functions the
//! HTTP routes call, working on the database directly.

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::startup::Application;

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

/// Runs a parsed command. Errors are printed by `main` on stderr with a non-zero exit.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let db = crate::store::Db::connect(&config.database_url).await?;
            db.migrate().await?;
            println!("migrations applied ({})", db.backend());
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), "connect-keeper listening");
    app.run_until_stopped().await?;
    Ok(())
}

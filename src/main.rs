use clap::Parser;
use connect_keeper::cli::{self, Cli};
use connect_keeper::config::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `--database-url` (clap reads DATABASE_URL into it when the flag is absent) wins over the
    // environment; everything else comes from the environment (docs/configuration.md).
    let database_url = cli.database_url.clone();
    let config = match Config::from_lookup(|k| match k {
        "DATABASE_URL" => database_url.clone(),
        _ => std::env::var(k).ok(),
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect-keeper: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if cli.is_server() {
        connect_keeper::telemetry::init(config.log_format);
    } else {
        // A tool's stdout is its output (a token, a table, JSON): logs go to stderr.
        cli::init_logging();
    }
    match cli::run(cli, config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connect-keeper: {}", cli::error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

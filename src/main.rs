use clap::Parser;
use connect_keeper::cli::{self, Cli};
use connect_keeper::config::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
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
            eprintln!("connect-keeper: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

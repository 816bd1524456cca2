//! Which database the CLI opens, and what it says when it cannot. The real binary,
//! as an operator runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_connect-keeper");

/// Runs `connect-keeper ARGS` with a clean environment plus `env`, in `dir` when given.
async fn keeper(env: &[(&str, &str)], dir: Option<&std::path::Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear().env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("run the binary"))
        .await
        .unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn every_help_shows_the_database_url_flag_and_variable_but_never_its_value() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["migrate"],
        &["healthcheck"],
        &["admin-token"],
        &["admin-token", "create"],
        &["admin-token", "list"],
        &["admin-token", "revoke"],
        &["installations"],
        &["installations", "list"],
        &["installations", "show"],
        &["trial", "extend"],
        &["grant", "free"],
        &["grant", "revoke"],
        &["access-token", "create"],
        &["access-token", "list"],
        &["access-token", "revoke"],
        &["sync", "marketplace"],
    ];
    let env = [(
        "DATABASE_URL",
        "postgres://keeper:hunter2@db.internal/keeper",
    )];
    for cmd in commands {
        let args: Vec<&str> = cmd.iter().copied().chain(["--help"]).collect();
        let o = keeper(&env, None, &args).await;
        assert!(o.status.success(), "{args:?}: {}", err(&o));
        let help = out(&o);
        assert!(
            help.contains("--database-url <URL>") && help.contains("DATABASE_URL"),
            "{args:?}: {help}"
        );
        assert!(!help.contains("hunter2"), "{args:?} prints the URL: {help}");
    }
}

#[tokio::test]
async fn only_serve_and_migrate_create_a_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo/sub/keeper.db");
    let url = format!("sqlite://{}", path.display());
    let env = [("DATABASE_URL", url.as_str())];
    for args in [
        &["installations", "list"][..],
        &["installations", "show", "ck-1"],
        &["admin-token", "create", "--name", "ops"],
        &["admin-token", "list"],
        &["trial", "extend", "ck-1", "--days", "3"],
        &["grant", "free", "ck-1"],
        &["access-token", "list"],
        &["sync", "marketplace"],
    ] {
        let o = keeper(&env, None, args).await;
        assert!(!o.status.success(), "{args:?} succeeded: {}", out(&o));
        assert!(
            err(&o).contains(&format!("no SQLite database at {}", path.display())),
            "{args:?}: {}",
            err(&o)
        );
        assert!(
            !dir.path().join("typo").exists(),
            "{args:?} made the folder"
        );
    }

    // Run from another folder, the default relative URL names the file it looked for there.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = keeper(&[], Some(elsewhere.path()), &["installations", "list"]).await;
    assert!(!o.status.success());
    let expected = elsewhere.path().join("data/connect-keeper.db");
    assert!(
        err(&o).contains(&expected.display().to_string()),
        "{}",
        err(&o)
    );
    assert!(!elsewhere.path().join("data").exists());

    // `migrate` creates it; then list says which database it read, on stderr.
    let o = keeper(&env, None, &["migrate"]).await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(path.exists());
    let o = keeper(&env, None, &["installations", "list", "--format", "json"]).await;
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).trim(), r#"{"items":[]}"#);
    assert!(
        err(&o).contains(&format!("database: sqlite://{}", path.display())),
        "{}",
        err(&o)
    );
}

/// TEST_DATABASE_URL with a password shown nowhere: a placeholder one is added when it has
/// none (PostgreSQL on loopback with trust auth ignores it). Returns the URL and the password.
fn with_password(url: &str) -> (String, String) {
    let mut u = url::Url::parse(url).unwrap();
    match u.password() {
        Some(p) => {
            let p = p.to_owned();
            (url.to_owned(), p)
        }
        None => {
            u.set_password(Some("hunter2-secret")).unwrap();
            (u.to_string(), "hunter2-secret".to_owned())
        }
    }
}

both_backends! {
    async fn the_flag_wins_over_the_variable_and_list_and_show_name_the_database(backend) {
        let app = TestApp::spawn(backend).await;
        app.install("ck-db", "db-secret").await;
        let (url, password) = match backend {
            Backend::Sqlite => (app.db.url.clone(), String::new()),
            Backend::Postgres => with_password(&app.db.url),
        };
        let dir = tempfile::tempdir().unwrap();
        let wrong = format!("sqlite://{}/wrong.db", dir.path().display());
        let env = [("DATABASE_URL", wrong.as_str())];
        for args in [
            &["installations", "show", "ck-db", "--format", "json"][..],
            &["installations", "list"],
            &["admin-token", "list"],
            &["access-token", "list"],
        ] {
            let mut all = vec!["--database-url", url.as_str()];
            all.extend_from_slice(args);
            let o = keeper(&env, None, &all).await;
            assert!(o.status.success(), "{args:?}: {}", err(&o));
            // The database line (a loaded machine may add sqlx's slow-statement warnings).
            let first = err(&o).lines().find(|l| l.starts_with("database: ")).unwrap_or_default().to_owned();
            assert!(first.starts_with("database: "), "{args:?}: {}", err(&o));
            match backend {
                Backend::Sqlite => assert!(first.ends_with("/nested/keeper.db"), "{first}"),
                Backend::Postgres => {
                    assert!(first.contains("postgres://") && first.contains("***"), "{first}");
                    assert!(!err(&o).contains(&password) && !out(&o).contains(&password));
                }
            }
        }
        assert!(!dir.path().join("wrong.db").exists());
    }
}

/// A free port: bound, then released.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_refused_postgres_connection_is_said_at_once() {
    let url = format!(
        "postgres://keeper:hunter2@127.0.0.1:{}/keeper",
        closed_port()
    );
    for args in [&["installations", "list"][..], &["migrate"]] {
        let started = Instant::now();
        let o = keeper(&[("DATABASE_URL", &url)], None, args).await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(!o.status.success());
        let e = err(&o);
        assert!(e.contains("onnection refused"), "{e}");
        assert!(
            !e.contains("pool timed out") && !e.contains("hunter2"),
            "{e}"
        );
        assert_eq!(e.matches("refused").count(), 1, "said once: {e}");
    }
}

#[tokio::test]
#[cfg_attr(
    no_postgres,
    ignore = "TEST_DATABASE_URL is unset: PostgreSQL variant skipped"
)]
async fn a_missing_postgres_database_is_named_once() {
    let mut url = url::Url::parse(&std::env::var("TEST_DATABASE_URL").unwrap()).unwrap();
    let name = format!("nosuchdb_{}", uuid::Uuid::new_v4().simple());
    url.set_path(&format!("/{name}"));
    let o = keeper(
        &[("DATABASE_URL", url.as_str())],
        None,
        &["installations", "list"],
    )
    .await;
    assert!(!o.status.success());
    let e = err(&o);
    let cause = format!("database \"{name}\" does not exist");
    assert_eq!(e.matches(&cause).count(), 1, "the cause, once: {e}");
    assert!(!e.contains(" at line "), "no server source line: {e}");
}

#[tokio::test]
async fn the_start_up_line_names_the_address_and_the_database_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("srv/keeper.db");
    let mut child = Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL", format!("sqlite://{}", path.display()))
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "pretty")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("listening"))
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a start-up line");
    assert!(
        !line.contains('\u{1b}'),
        "no colour codes into a pipe: {line:?}"
    );
    assert!(line.contains("address=127.0.0.1:"), "{line}");
    assert!(
        line.contains(&format!("database=sqlite://{}", path.display())),
        "{line}"
    );
}

//! The CLI's words, run as the real binary (docs/cli.md): help texts, one message per rule,
//! dates accepted in both forms, revocations that say when nothing changed, the second free
//! grant with no end refused (CLI and admin API alike), messages in the user's terms, and RFC
//! 3339 times in the machine formats.

use chrono::DateTime;
use serde_json::json;

use crate::admin::{admin_send, set_marketplace, spawn_admin};
use crate::cli::{cli, fails, json_out, ok, stderr, stdout};
use crate::helpers::*;

/// `connect-keeper ARGS --help`.
async fn help(app: &TestApp, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--help");
    ok(app, &all).await
}

/// The entry of a help text that documents `needle` (a flag or an `<ARG>`): its line and the
/// ones after it up to the next blank line (`--help` puts descriptions under the flag).
fn described(help: &str, needle: &str) -> String {
    let lines: Vec<&str> = help.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.trim_start().starts_with(needle))
        .unwrap_or_else(|| panic!("{needle} not in {help}"));
    lines[i..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

both_backends! {
    async fn help_texts_describe_every_argument_in_plain_words(backend) {
        let app = TestApp::spawn(backend).await;
        for (args, needle, words) in [
            (&["installations", "show"][..], "<CLIENT_KEY>", "client key"),
            (&["trial", "extend"], "<CLIENT_KEY>", "client key"),
            (&["trial", "extend"], "--days", "whole number from 1 to 365"),
            (&["trial", "extend"], "--reason", "audit log"),
            (&["grant", "free"], "<CLIENT_KEY>", "client key"),
            (&["grant", "free"], "--until", "Leave it out for free use with no end"),
            (&["grant", "free"], "--reason", "audit log"),
            (&["grant", "revoke"], "<GRANT_ID>", "grant's id"),
            (&["admin-token", "revoke"], "<ID>", "token's id"),
            (&["access-token", "revoke"], "<ID>", "token's id"),
            (&["access-token", "create"], "--note", "whom the token is for"),
            (&["access-token", "create"], "--until", "does not expire"),
            (&["installations", "list"], "--search", "contains TEXT"),
            (&["installations", "list"], "--trial-ends-before", "RFC 3339"),
        ] {
            let text = help(&app, args).await;
            let line = described(&text, needle);
            assert!(line.contains(words), "{args:?} {needle}: {line:?}");
        }
        let text = help(&app, &["trial", "extend"]).await;
        assert!(!text.contains("1..=365"), "{text}");
        let text = help(&app, &["installations", "list"]).await;
        assert!(!text.contains("--q "), "--q is a hidden alias: {text}");
        for args in [&["grant", "free"][..], &["access-token", "create"], &["installations", "list"]] {
            let text = help(&app, args).await;
            assert!(text.contains("<DATE|TIME>"), "{args:?}: {text}");
        }
    }
}

both_backends! {
    async fn one_message_for_the_days_rule_in_the_cli_and_the_api(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-days", "days-secret").await;
        for days in ["0", "366", "-1", "2.5", "ten", " "] {
            let o = cli(&app, &["trial", "extend", "ck-days", "--days", days]).await;
            assert!(!o.status.success(), "{days}");
            assert_eq!(
                stderr(&o).trim(),
                "connect-keeper: --days: must be a whole number from 1 to 365",
                "--days {days:?}"
            );
        }
        for days in [json!(0), json!(366), json!(2.5), json!("ten")] {
            let (status, body) = admin_send(&app, reqwest::Method::POST,
                "/admin/installations/ck-days/trial-extension", Some(json!({"days": days}))).await;
            assert_eq!(status, 400);
            assert_eq!(body["message"], "days: must be a whole number from 1 to 365", "{days}");
        }
        let d = crate::admin::admin_json(&app, "/admin/installations/ck-days").await;
        assert!(d["grants"].as_array().unwrap().is_empty(), "nothing written: {d}");
    }
}

both_backends! {
    async fn until_and_trial_ends_before_take_a_date_or_an_rfc3339_time(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-dates", "dates-secret").await;
        set_marketplace(&app, "ck-dates", "Dates Inc", "d@dates.example", "EVALUATION",
            Some("2031-03-10T12:00:00Z".parse().unwrap())).await;

        let g = json_out(&ok(&app, &["grant", "free", "ck-dates", "--until", "2031-01-02", "--format", "json"]).await);
        assert_eq!(g["ends_at"], "2031-01-02T00:00:00Z");
        ok(&app, &["grant", "revoke", g["id"].as_str().unwrap()]).await;
        let g = json_out(&ok(&app, &["grant", "free", "ck-dates", "--until", "2031-01-02T18:30:00+02:00", "--format", "json"]).await);
        assert_eq!(g["ends_at"], "2031-01-02T16:30:00Z");

        let t = json_out(&ok(&app, &["access-token", "create", "--until", "2031-05-06", "--format", "json"]).await);
        let tokens = json_out(&ok(&app, &["access-token", "list", "--format", "json"]).await);
        let listed = tokens["items"].as_array().unwrap().iter().find(|x| x["id"] == t["id"]).unwrap().clone();
        assert_eq!(listed["expires_at"], "2031-05-06T00:00:00Z");
        ok(&app, &["access-token", "create", "--until", "2031-05-06T00:00:00Z"]).await;

        for (before, expected) in [("2031-03-11", 1), ("2031-03-10T12:00:01Z", 1), ("2031-03-10", 0), ("2031-03-10T12:00:00Z", 0)] {
            let list = json_out(&ok(&app, &["installations", "list", "--trial-ends-before", before, "--format", "json"]).await);
            assert_eq!(list["items"].as_array().unwrap().len(), expected, "--trial-ends-before {before}");
        }
        for args in [
            &["grant", "free", "ck-dates", "--until", "tomorrow"][..],
            &["access-token", "create", "--until", "31.12.2031"],
            &["installations", "list", "--trial-ends-before", "soon"],
        ] {
            let flag = args[args.len() - 2];
            fails(&app, args, &format!("{flag}: expected a date (YYYY-MM-DD) or an RFC 3339 time")).await;
        }
        fails(&app, &["grant", "free", "ck-dates", "--until", "2001-01-01"], "--until: must be in the future").await;
    }
}

both_backends! {
    async fn search_finds_by_text_and_the_old_q_still_works(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-s1", "s1-secret").await;
        app.install("ck-s2", "s2-secret").await;
        set_marketplace(&app, "ck-s2", "Zebra Widgets", "z@zebra.example", "COMMERCIAL", None).await;
        for flag in ["--search", "--q"] {
            let list = json_out(&ok(&app, &["installations", "list", flag, "zebra", "--format", "json"]).await);
            let keys: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["client_key"].as_str().unwrap()).collect();
            assert_eq!(keys, ["ck-s2"], "{flag}");
        }
    }
}

/// The audit entries of `action`.
async fn audit_count(app: &TestApp, action: &str) -> i64 {
    crate::on_db!(&app.state.db, |p| {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log WHERE action = $1")
            .bind(action)
            .fetch_one(p)
            .await
    })
    .unwrap()
}

both_backends! {
    async fn revoking_twice_says_nothing_changed_and_exits_zero(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-rev", "rev-secret").await;

        let t = json_out(&ok(&app, &["admin-token", "create", "--name", "temp", "--format", "json"]).await);
        let id = t["id"].as_str().unwrap();
        let first = ok(&app, &["admin-token", "revoke", id]).await;
        assert!(first.contains("revoked") && !first.contains("already"), "{first}");
        let second = ok(&app, &["admin-token", "revoke", id]).await;
        assert!(second.contains("was already revoked at 20") && second.contains("nothing changed"), "{second}");
        assert_eq!(audit_count(&app, "admin_token.revoke").await, 1, "no second audit entry");

        let g = json_out(&ok(&app, &["trial", "extend", "ck-rev", "--days", "5", "--format", "json"]).await);
        let gid = g["id"].as_str().unwrap();
        let first = ok(&app, &["grant", "revoke", gid]).await;
        assert_eq!(first.trim(), format!("the trial extension of \"ck-rev\" revoked (grant {gid})"));
        let second = ok(&app, &["grant", "revoke", gid]).await;
        assert!(second.contains("was already revoked at") && second.contains(gid), "{second}");

        let a = json_out(&ok(&app, &["access-token", "create", "--format", "json"]).await);
        let aid = a["id"].as_str().unwrap();
        ok(&app, &["access-token", "revoke", aid]).await;
        let second = ok(&app, &["access-token", "revoke", aid]).await;
        assert!(second.contains("was already revoked at"), "{second}");
        // The admin API answers a repeated DELETE alike: 204, nothing changed.
        let (status, _) = admin_send(&app, reqwest::Method::DELETE, &format!("/admin/grants/{gid}"), None).await;
        assert_eq!(status, 204);
    }
}

both_backends! {
    async fn a_second_free_grant_with_no_end_is_refused_naming_the_first(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-free", "free-secret").await;
        let first = json_out(&ok(&app, &["grant", "free", "ck-free", "--format", "json"]).await);
        let first_id = first["id"].as_str().unwrap();

        // CLI: refused, exit non-zero, the message names the grant in the way.
        let o = cli(&app, &["grant", "free", "ck-free", "--reason", "again"]).await;
        assert!(!o.status.success());
        assert!(stderr(&o).contains(first_id) && stderr(&o).contains("already has free use with no end"), "{}", stderr(&o));
        assert!(stdout(&o).is_empty());
        // An end changes nothing either while free use has no end.
        fails(&app, &["grant", "free", "ck-free", "--until", "2031-01-01"], first_id).await;
        // The admin API: 409 with the same message.
        let (status, body) = admin_send(&app, reqwest::Method::POST, "/admin/installations/ck-free/grants",
            Some(json!({"kind": "free"}))).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"], "conflict");
        assert!(body["message"].as_str().unwrap().contains(first_id), "{body}");
        let d = crate::admin::admin_json(&app, "/admin/installations/ck-free").await;
        assert_eq!(d["grants"].as_array().unwrap().len(), 1, "nothing written: {d}");
        assert_eq!(audit_count(&app, "grant.create").await, 1);

        // Revoked, a new one is accepted; a timed one does not block one with no end.
        ok(&app, &["grant", "revoke", first_id]).await;
        ok(&app, &["grant", "free", "ck-free", "--until", "2031-01-01"]).await;
        let text = ok(&app, &["grant", "free", "ck-free"]).await;
        assert!(text.contains("may use the app for free, with no end"), "{text}");
        let (status, _) = admin_send(&app, reqwest::Method::POST, "/admin/installations/ck-free/grants",
            Some(json!({"kind": "free", "ends_at": "2032-01-01T00:00:00Z"}))).await;
        assert_eq!(status, 409);
    }
}

both_backends! {
    async fn messages_in_the_users_words(backend) {
        let app = spawn_admin(backend).await;
        app.install("ck-words", "words-secret").await;

        let text = ok(&app, &["installations", "show", "ck-words"]).await;
        let trial = text.lines().find(|l| l.starts_with("trial ")).unwrap();
        assert_eq!(trial.split_whitespace().collect::<Vec<_>>(), ["trial", "-"], "no trial: {text}");
        assert!(!text.contains('→'), "{text}");
        set_marketplace(&app, "ck-words", "Words Ltd", "w@words.example", "EVALUATION",
            Some("2031-03-10T12:00:00Z".parse().unwrap())).await;
        let text = ok(&app, &["installations", "show", "ck-words"]).await;
        assert!(text.contains("2031-02-08 → 2031-03-10"), "{text}");

        let text = ok(&app, &["trial", "extend", "ck-words", "--days", "3"]).await;
        assert!(text.starts_with("trial of \"ck-words\" extended: it now ends 2031-03-13T12:00:00Z (grant "), "{text}");
        assert!(!text.contains("trial_extension"), "{text}");
        let text = ok(&app, &["grant", "free", "ck-words", "--until", "2031-06-01"]).await;
        assert!(text.starts_with("\"ck-words\" may use the app for free until 2031-06-01T00:00:00Z (grant "), "{text}");
    }
}

both_backends! {
    async fn machine_formats_write_rfc3339_times(backend) {
        let app = spawn_admin(backend).await;
        ok(&app, &["admin-token", "create", "--name", "csv-bot"]).await;
        let t = json_out(&ok(&app, &["admin-token", "create", "--name", "gone", "--format", "json"]).await);
        ok(&app, &["admin-token", "revoke", t["id"].as_str().unwrap()]).await;
        ok(&app, &["access-token", "create", "--until", "2031-01-01", "--note", "csv"]).await;

        let admin_csv = ok(&app, &["admin-token", "list", "--format", "csv"]).await;
        let access_csv = ok(&app, &["access-token", "list", "--format", "csv"]).await;
        let mut seen = 0;
        for (text, columns) in [
            (admin_csv, &["created", "last_used", "revoked"][..]),
            (access_csv, &["created", "expires", "redeemed_at", "revoked"]),
        ] {
            let mut r = csv::Reader::from_reader(text.as_bytes());
            let header = r.headers().unwrap().clone();
            for row in r.records() {
                let row = row.unwrap();
                for c in columns {
                    let i = header.iter().position(|h| h == *c).unwrap_or_else(|| panic!("{c} in {header:?}"));
                    if row[i].is_empty() {
                        continue;
                    }
                    let t = DateTime::parse_from_rfc3339(&row[i]).unwrap_or_else(|e| panic!("{c} {:?}: {e}", &row[i]));
                    assert!(row[i].ends_with('Z') && t.offset().local_minus_utc() == 0, "UTC: {}", &row[i]);
                    seen += 1;
                }
            }
        }
        // created ×2 and revoked ×1 for admin tokens, created and expires for the access token
        assert!(seen >= 5, "{seen} times checked");
    }
}

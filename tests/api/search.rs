//! The list's `q` search: answered from the trigram index (SQLite FTS5, PostgreSQL pg_trgm)
//! where it can be, and always the same rows as the plain substring scan — checked against the
//! stored values for hits by site, company and contacts, short queries, LIKE wildcards, quotes
//! and FTS5 query syntax, before and after the searched values change.

use serde_json::Value;

use crate::admin::{ADMIN, admin_get, admin_json, install_at, set_marketplace, spawn_admin};
use crate::helpers::*;

/// `(client_key, base_url, company, technical contact, billing contact)` as stored.
type Stored = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn stored(app: &TestApp) -> Vec<Stored> {
    crate::on_db!(&app.state.db, |p| {
        sqlx::query_as::<_, Stored>(
            "SELECT client_key, base_url, mp_company, mp_technical_contact, mp_billing_contact
             FROM installations",
        )
        .fetch_all(p)
        .await
    })
    .unwrap()
}

/// What the scan answers: `q` is a substring of one of the searched values, ASCII letters
/// compared without case (the queries below keep other letters in their stored case, where
/// SQLite's LIKE and PostgreSQL's ILIKE agree).
fn scan(rows: &[Stored], q: &str) -> Vec<String> {
    let q = q.to_ascii_lowercase();
    let mut keys: Vec<String> = rows
        .iter()
        .filter(|(_, url, company, tech, billing)| {
            [Some(url), company.as_ref(), tech.as_ref(), billing.as_ref()]
                .into_iter()
                .flatten()
                .any(|v| v.to_ascii_lowercase().contains(&q))
        })
        .map(|r| r.0.clone())
        .collect();
    keys.sort();
    keys
}

/// The API's answer for `q`: every matching key (sorted) and the total.
async fn search(app: &TestApp, q: &str, sort: &str) -> (Vec<String>, i64) {
    let enc: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
    let page = admin_json(
        app,
        &format!("/admin/installations?q={enc}&sort={sort}&limit=500"),
    )
    .await;
    let mut keys: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["client_key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    (keys, page["total"].as_i64().unwrap())
}

const QUERIES: &[&str] = &[
    // by site, company, contact e-mail and name
    "alpha-site",
    "ACME",
    "acme widgets",
    "Widgets GmbH",
    "ops@acme",
    "billing@",
    "Ada Admin",
    "127.0.0.1",
    "/beta-",
    // shorter than a trigram: the scan
    "a",
    "ac",
    "zz",
    "_",
    "%",
    "\"",
    // LIKE wildcards and escapes are text
    "50%",
    "0% o",
    "off_sale",
    "f_s",
    "%%",
    "__",
    "\\",
    "100\\",
    // quotes
    "\"Quoted\"",
    "\"quoted",
    "d\" L",
    "''",
    "O'Brien",
    "'; DROP TABLE installations; --",
    // FTS5 query syntax is text
    "Gamma OR",
    "or delta",
    "Delta*",
    "a*",
    "* *",
    "NEAR(gamma delta)",
    "mp_company:acme",
    "^acm",
    "-gamma",
    "(gamma)",
    "AND",
    "NOT acme",
    "{base_url}: x",
    // other letters, in their stored case
    "Zürich",
    "Äpfel",
    "ürich Ä",
    // nothing
    "no-such-thing-anywhere",
];

both_backends! {
    async fn the_index_answers_what_the_scan_answers(backend) {
        let app = spawn_admin(backend).await;
        for (key, slug) in [("s-1", "alpha-site"), ("s-2", "beta-shop"), ("s-3", "gamma-or-delta"),
                            ("s-4", "plain"), ("s-5", "zurich"), ("s-6", "obrien")] {
            install_at(&app, key, "secret", slug).await;
        }
        set_marketplace(&app, "s-1", "Acme Widgets GmbH", "ops@acme.example", "COMMERCIAL", None).await;
        set_marketplace(&app, "s-2", "50% off_sale \"Quoted\" Ltd", "sales@beta.example", "COMMERCIAL", None).await;
        set_marketplace(&app, "s-3", "Gamma OR Delta* (AND NOT)", "x@gamma.example", "COMMERCIAL", None).await;
        set_marketplace(&app, "s-5", "Zürich Äpfel AG", "team@zurich.example", "COMMERCIAL", None).await;
        set_marketplace(&app, "s-6", "O'Brien & Sons 100\\", "ob@obrien.example", "COMMERCIAL", None).await;
        crate::on_db!(&app.state.db, |p| {
            sqlx::query("UPDATE installations SET mp_billing_contact = $1 WHERE client_key = 's-4'")
                .bind(r#"{"name": "Bill", "email": "billing@plain.example", "phone": null}"#)
                .execute(p).await.map(|_| ())
        }).unwrap();

        let check = |rows: Vec<Stored>| {
            let app = &app;
            async move {
                for q in QUERIES {
                    let want = scan(&rows, q);
                    for sort in ["installed_at", "-installed_at", "base_url", "trial_end"] {
                        let (keys, total) = search(app, q, sort).await;
                        assert_eq!(keys, want, "q={q:?} sort={sort}");
                        assert_eq!(total, want.len() as i64, "q={q:?} total");
                    }
                }
            }
        };
        let rows = stored(&app).await;
        // The test can fail: these hit what they should.
        assert_eq!(scan(&rows, "ACME"), ["s-1"]);
        assert_eq!(scan(&rows, "billing@"), ["s-4"]);
        assert_eq!(scan(&rows, "Delta*"), ["s-3"]);
        assert_eq!(scan(&rows, "0% o"), ["s-2"]);
        assert_eq!(scan(&rows, "\"quoted"), ["s-2"]);
        assert_eq!(scan(&rows, "Zürich"), ["s-5"]);
        assert_eq!(scan(&rows, "127.0.0.1").len(), 6);
        check(rows).await;

        // Changed values are found by their new text only (the index follows every write).
        set_marketplace(&app, "s-1", "Renamed Holdings", "it@renamed.example", "COMMERCIAL", None).await;
        let rows = stored(&app).await;
        assert_eq!(scan(&rows, "acme"), Vec::<String>::new());
        assert_eq!(scan(&rows, "renamed"), ["s-1"]);
        check(rows).await;

        // A bad query is refused as before, and the dashboard's search box gives the same rows.
        let (status, _) = admin_get(&app, "/admin/installations?q=acme&limit=0").await;
        assert_eq!(status, 400);
        let mut dash = crate::dashboard::Dash::new(&app);
        dash.sign_in(ADMIN).await;
        let page = dash.get("/admin/ui/installations?q=%22quoted").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("/installations/s-2\""), "{}", page.body);
        assert!(!page.body.contains("/installations/s-1\""));
    }
}

both_backends! {
    /// The index exists where the backend can have it: always on SQLite; on PostgreSQL when
    /// pg_trgm can be created (it can on the test server).
    async fn the_trigram_index_is_there(backend) {
        let app = spawn_admin(backend).await;
        install_at(&app, "t-1", "secret", "somewhere").await;
        match backend {
            Backend::Sqlite => {
                let n: i64 = crate::on_db!(&app.state.db, |p| {
                    sqlx::query_scalar("SELECT COUNT(*) FROM installation_search WHERE installation_search MATCH '\"somewhere\"'")
                        .fetch_one(p).await
                }).unwrap();
                assert_eq!(n, 1);
            }
            Backend::Postgres => {
                let available: bool = crate::on_db!(&app.state.db, |p| {
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm')")
                        .fetch_one(p).await
                }).unwrap();
                if !available {
                    eprintln!("pg_trgm is not installed on this server: the trigram indexes are not checked");
                    return;
                }
                let names: Vec<String> = crate::on_db!(&app.state.db, |p| {
                    sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() AND indexname LIKE 'installations\\_search\\_%' ORDER BY 1")
                        .fetch_all(p).await
                }).unwrap();
                assert_eq!(names, ["installations_search_base_url", "installations_search_billing",
                                   "installations_search_company", "installations_search_technical"]);
            }
        }
        let v: Value = admin_json(&app, "/admin/installations?q=somewhere").await;
        assert_eq!(v["total"], 1);
    }
}

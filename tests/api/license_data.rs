//! License data in the registry (docs/licensing.md#where-licence-data-comes-from): the product's license endpoint and tenant_info read
//! in the background after an install, and the Marketplace license sync.
//!
//! The product and the Marketplace are wiremock servers; payloads follow docs/protocol.md
//! (#product-licence-endpoint and #marketplace-reporting-api). Retry delays and the Marketplace timeout
//! are shortened through `Config` fields that are not environment variables.

use std::time::Duration;

use actix_web::ResponseError;
use connect_keeper::connect::{jwt, qsh};
use connect_keeper::marketplace::{self, SyncError};
use connect_keeper::store::installations::InstallationRow;
use connect_keeper::store::marketplace as mp_store;
use serde_json::{Value, json};
use wiremock::matchers::{basic_auth, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{APP_KEY, Backend, TestApp, eventually, installed_payload, merge, sign_rs256};

const VENDOR: &str = "1234567";
const MP_USER: &str = "vendor@example.com";
const MP_TOKEN: &str = "mp-api-token-not-for-logs";

/// The shared harness with short retry delays and Marketplace timeout (`Config` fields that
/// are not environment variables).
struct LicApp(TestApp);

impl std::ops::Deref for LicApp {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.0
    }
}

impl LicApp {
    async fn spawn(backend: Backend, env: &[(&str, &str)]) -> LicApp {
        LicApp(
            TestApp::spawn_tuned(backend, env, |config| {
                config.host_retry_base = Duration::from_millis(50);
                config.marketplace_timeout = Duration::from_millis(400);
                config.marketplace_retry_base = Duration::from_millis(10);
            })
            .await,
        )
    }

    /// With Marketplace credentials pointing at `mp`.
    async fn with_marketplace(backend: Backend, mp: &MockServer) -> LicApp {
        let uri = mp.uri();
        Self::spawn(
            backend,
            &[
                ("MARKETPLACE_URL", uri.as_str()),
                ("MARKETPLACE_VENDOR_ID", VENDOR),
                ("MARKETPLACE_USER", MP_USER),
                ("MARKETPLACE_API_TOKEN", MP_TOKEN),
            ],
        )
        .await
    }

    /// A signed `installed` carrying `body`; asserts 204.
    async fn install(&self, body: &Value) {
        self.install_payload(body).await;
    }

    async fn uninstall(&self, body: &Value) {
        let client_key = body["clientKey"].as_str().expect("clientKey");
        let mut body = body.clone();
        body["eventType"] = json!("uninstalled");
        body.as_object_mut().unwrap().remove("sharedSecret");
        let token = sign_rs256(&self.install_claims(client_key, "/uninstalled"));
        let res = self
            .post_lifecycle("/uninstalled", Some(&token), &body)
            .await;
        assert_eq!(res.status(), 204);
    }

    async fn row(&self, client_key: &str) -> InstallationRow {
        self.installation(client_key)
            .await
            .expect("installation exists")
    }

    /// Waits until the background reader has recorded a result for `client_key`.
    async fn wait_checked(&self, client_key: &str) -> InstallationRow {
        let ok = eventually(10, || async {
            self.row(client_key).await.host_checked_at.is_some()
        })
        .await;
        assert!(
            ok,
            "the product's license endpoint was not read within 10 s"
        );
        self.row(client_key).await
    }
}

/// An `installed` body for `base_url` without the default entitlement ids (so each test
/// decides which join keys a site has); `extra` is merged over it (null removes a field).
fn install_body(client_key: &str, base_url: &str, extra: Value) -> Value {
    let mut body = installed_payload(client_key, &format!("secret-{client_key}"), base_url);
    merge(
        &mut body,
        json!({"entitlementId": null, "entitlementNumber": null, "displayUrl": null}),
    );
    merge(&mut body, extra);
    body
}

/// `GET /rest/atlassian-connect/1/addons/{key}` as a paid app's product answers
/// (docs/protocol.md#product-licence-endpoint).
fn addon_response(app_key: &str, license: Option<Value>) -> Value {
    let mut body = json!({
        "key": app_key,
        "version": "1.0.0",
        "state": "ENABLED",
        "host": {"product": "Jira", "contacts": [{"name": "Example Contact", "email": "contact@example.com"}]},
        "links": {"marketplace": [{"href": format!("https://marketplace.atlassian.com/plugins/{app_key}")}]}
    });
    if let Some(l) = license {
        body["license"] = l;
    }
    body
}

fn paid_license() -> Value {
    json!({
        "active": true,
        "type": "COMMERCIAL",
        "evaluation": false,
        "supportEntitlementNumber": "SEN-9468998",
        "entitlementId": "e2dab8c3-7d0a-4b59-a4bd-c55f92862b07",
        "entitlementNumber": "E-3XJ-WYD-KA7-HBJ"
    })
}

/// A fake product site: license endpoint under `prefix` ("" or "/wiki"), tenant_info at the root.
async fn product(prefix: &str, license: Option<Value>, cloud_id: Option<&str>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{prefix}/rest/atlassian-connect/1/addons/{APP_KEY}"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(addon_response(APP_KEY, license)))
        .mount(&server)
        .await;
    let tenant_info = match cloud_id {
        Some(id) => ResponseTemplate::new(200).set_body_json(json!({"cloudId": id})),
        None => ResponseTemplate::new(404),
    };
    Mock::given(method("GET"))
        .and(path("/_edge/tenant_info"))
        .respond_with(tenant_info)
        .mount(&server)
        .await;
    server
}

async fn requests_to(server: &MockServer, path_suffix: &str) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().ends_with(path_suffix))
        .collect()
}

/// The outgoing token: signed with the tenant's secret, iss = app key, 180 s, qsh of the path
/// relative to the product's baseUrl.
fn assert_app_token(req: &wiremock::Request, secret: &str) {
    let header = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .expect("Authorization header");
    let token = header.strip_prefix("JWT ").expect("JWT scheme");
    let claims = jwt::verify_hs256(token, secret.as_bytes()).expect("verifies with the secret");
    assert_eq!(claims.iss.as_deref(), Some(APP_KEY));
    let (iat, exp) = (claims.iat.unwrap(), claims.exp.unwrap());
    assert_eq!(exp - iat, 180);
    assert!((iat - chrono::Utc::now().timestamp()).abs() < 60);
    let expected = qsh::hash_canonical(&format!("GET&/rest/atlassian-connect/1/addons/{APP_KEY}&"));
    assert_eq!(claims.qsh.as_deref(), Some(expected.as_str()));
    assert!(jwt::verify_hs256(token, b"some-other-secret").is_err());
}

both_backends! {
    async fn license_endpoint_is_read_after_install_with_an_app_token(backend) {
        let app = LicApp::spawn(backend, &[]).await;
        let site = product("", Some(paid_license()), Some("0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10")).await;
        app.install(&install_body("jira-1", &site.uri(), json!({}))).await;

        let row = app.wait_checked("jira-1").await;
        assert_eq!(row.host_license_active, Some(true));
        assert_eq!(row.host_license_type.as_deref(), Some("COMMERCIAL"));
        assert_eq!(row.host_license_evaluation, Some(false));
        assert_eq!(row.host_license_sen.as_deref(), Some("SEN-9468998"));
        assert_eq!(row.host_license_entitlement_id.as_deref(), Some("e2dab8c3-7d0a-4b59-a4bd-c55f92862b07"));
        assert_eq!(row.host_license_entitlement_number.as_deref(), Some("E-3XJ-WYD-KA7-HBJ"));
        assert_eq!(row.cloud_id.as_deref(), Some("0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10"));
        assert_eq!(row.host_failures, 0);
        assert!(row.host_next_check_at > row.host_checked_at, "scheduled for the next refresh");

        let calls = requests_to(&site, &format!("/addons/{APP_KEY}")).await;
        assert!(!calls.is_empty());
        assert_app_token(&calls[0], "secret-jira-1");
        let info = requests_to(&site, "/_edge/tenant_info").await;
        assert!(info[0].headers.get("authorization").is_none(), "tenant_info is unauthenticated");
        // The registry's license view follows the product's answer (refreshed right after).
        let ok = eventually(5, || async { app.row("jira-1").await.license_state == "active" }).await;
        assert!(ok, "license view not refreshed");
        assert_eq!(app.row("jira-1").await.license_source.as_deref(), Some("host"));
    }
}

both_backends! {
    async fn confluence_wiki_base_url_is_signed_relative_to_wiki(backend) {
        let app = LicApp::spawn(backend, &[]).await;
        let site = product("/wiki", Some(paid_license()), Some("7d2e5f1a-3c4b-4a6d-9e8f-0a1b2c3d4e5f")).await;
        let base = format!("{}/wiki", site.uri());
        app.install(&install_body("conf-1", &base, json!({"productType": "confluence"}))).await;

        let row = app.wait_checked("conf-1").await;
        assert_eq!(row.host_license_active, Some(true));
        assert_eq!(row.cloud_id.as_deref(), Some("7d2e5f1a-3c4b-4a6d-9e8f-0a1b2c3d4e5f"));
        let calls = requests_to(&site, &format!("/addons/{APP_KEY}")).await;
        assert_eq!(calls[0].url.path(), format!("/wiki/rest/atlassian-connect/1/addons/{APP_KEY}"));
        assert_app_token(&calls[0], "secret-conf-1");
        // tenant_info at the site root, not under /wiki
        assert_eq!(requests_to(&site, "/_edge/tenant_info").await[0].url.path(), "/_edge/tenant_info");
    }
}

both_backends! {
    async fn free_app_and_missing_tenant_info_fail_nothing(backend) {
        let app = LicApp::spawn(backend, &[]).await;
        let site = product("", None, None).await;
        app.install(&install_body("free-1", &site.uri(), json!({}))).await;

        let row = app.wait_checked("free-1").await;
        assert_eq!(row.host_license_active, None, "no license object: no license data");
        assert_eq!(row.host_license_type, None);
        assert_eq!(row.cloud_id, None, "404 from tenant_info leaves cloud_id null");
        assert_eq!(row.host_failures, 0);
        assert_eq!(row.host_last_error, None);
        assert_eq!(row.license_state, "unlicensed");
    }
}

both_backends! {
    async fn product_down_at_install_does_not_fail_it_and_is_retried(backend) {
        let app = LicApp::spawn(backend, &[]).await;
        let site = MockServer::start().await;
        let addon_path = format!("/rest/atlassian-connect/1/addons/{APP_KEY}");
        Mock::given(method("GET"))
            .and(path(addon_path.clone()))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&site)
            .await;
        Mock::given(method("GET"))
            .and(path(addon_path))
            .respond_with(ResponseTemplate::new(200).set_body_json(addon_response(APP_KEY, Some(paid_license()))))
            .mount(&site)
            .await;
        Mock::given(method("GET"))
            .and(path("/_edge/tenant_info"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"cloudId": "c-1"})))
            .mount(&site)
            .await;

        app.install(&install_body("down-1", &site.uri(), json!({}))).await; // 204 asserted

        let ok = eventually(10, || async { app.row("down-1").await.host_license_active == Some(true) }).await;
        assert!(ok, "the license read was retried until the product answered");
        let row = app.row("down-1").await;
        assert_eq!(row.host_failures, 0, "a success resets the failure count");
        assert_eq!(row.host_last_error, None);
        assert_eq!(row.cloud_id.as_deref(), Some("c-1"));
        assert!(requests_to(&site, &format!("/addons/{APP_KEY}")).await.len() >= 3);
        let metrics = app.state.metrics.render();
        assert!(metrics.contains(r#"host_license_checks_total{call="license",outcome="http_error"} 2"#), "{metrics}");
        assert!(metrics.contains(r#"host_license_checks_total{call="license",outcome="ok"}"#));
        assert!(!metrics.contains("secret-down-1"));
    }
}

both_backends! {
    async fn failures_back_off_and_are_recorded(backend) {
        let app = LicApp::spawn(backend, &[]).await;
        let site = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&site)
            .await;
        app.install(&install_body("broken-1", &site.uri(), json!({}))).await;

        let ok = eventually(10, || async { app.row("broken-1").await.host_failures >= 3 }).await;
        assert!(ok);
        let row = app.row("broken-1").await;
        let error = row.host_last_error.clone().unwrap_or_default();
        assert!(error.contains("HTTP 500"), "{error}");
        assert!(!error.contains("secret-broken-1") && !error.contains("JWT"), "{error}");
        assert_eq!(row.host_checked_at, None, "nothing was read");
        assert_eq!(row.host_license_active, None);
    }
}

both_backends! {
    async fn refreshes_periodically_but_never_uninstalled_tenants(backend) {
        let app = LicApp::spawn(backend, &[("HOST_LICENSE_REFRESH_SECS", "1")]).await;
        let site = product("", Some(paid_license()), Some("c-2")).await;
        let body = install_body("periodic-1", &site.uri(), json!({}));
        app.install(&body).await;
        let suffix = format!("/addons/{APP_KEY}");
        let ok = eventually(10, || async { requests_to(&site, &suffix).await.len() >= 2 }).await;
        assert!(ok, "read again after HOST_LICENSE_REFRESH_SECS");

        app.uninstall(&body).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = requests_to(&site, &suffix).await.len();
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(requests_to(&site, &suffix).await.len(), before, "uninstalled tenants are not polled");
    }
}

// ---------------------------------------------------------------------------------------
// Marketplace

/// A license object shaped like the reporting API's (docs/protocol.md#marketplace-reporting-api); `extra` is merged over it (null removes).
fn mp_license(extra: Value) -> Value {
    let mut l = json!({
        "addonLicenseId": "30551234",
        "hostLicenseId": "30550987",
        "hostEntitlementId": "c0a7e9d2-1b3f-4e6a-8c5d-2f9b7a1e4d33",
        "hostEntitlementNumber": "E-7TR-2MX-Q8D-LK5",
        "licenseId": "SEN-30550987",
        "addonKey": APP_KEY,
        "addonName": "Acme Reports",
        "hosting": "Cloud",
        "lastUpdated": "2025-02-14",
        "licenseType": "COMMERCIAL",
        "maintenanceStartDate": "2024-02-14",
        "maintenanceEndDate": "2026-02-14",
        "status": "active",
        "tier": "100 Users",
        "contactDetails": {
            "company": "Globex Inc",
            "country": "United States",
            "region": "Americas",
            "technicalContact": {"email": "it@globex.example", "name": "Hank Scorpio", "phone": "+1 555 0100"},
            "billingContact": {"email": "ap@globex.example", "name": "Accounts Payable"}
        },
        "partnerDetails": {"partnerName": "Example Solutions Partner", "partnerType": "Expert",
                           "billingContact": {"email": "orders@partner.example", "name": "Partner Orders"}},
        "evaluationOpportunitySize": "NA",
        "parentProductBillingCycle": "ANNUAL",
        "parentProductName": "Jira",
        "parentProductEdition": "Premium",
        "installedOnSandbox": "No"
    });
    merge(&mut l, extra);
    l
}

/// One Marketplace sync with the app's database, client and metrics.
async fn sync_now(
    state: &connect_keeper::state::AppState,
) -> Result<marketplace::SyncSummary, SyncError> {
    marketplace::sync_once(&state.db, &state.marketplace, &state.metrics).await
}

fn licenses_path() -> String {
    format!("/rest/2/vendors/{VENDOR}/reporting/licenses")
}

/// A list response; `next_offset` adds `_links.next` as the Marketplace does (relative href).
fn page(licenses: Vec<Value>, next_offset: Option<usize>) -> Value {
    let q = format!("addon={APP_KEY}&withDataInsights=true");
    let mut links = json!({
        "self": {"href": format!("{}?{q}&limit=50", licenses_path())},
        "query": {"href": format!("{}{{?addon*,startDate,endDate,text,tier*,dateType,licenseType*,partnerType*,hosting*,status*,withAttribution,withDataInsights,lastUpdated,sortBy,order,offset,limit}}", licenses_path()), "templated": true},
        "export": [{"href": format!("{}/export?accept=json&{q}", licenses_path()), "type": "application/json"}]
    });
    if let Some(o) = next_offset {
        links["next"] =
            json!({"href": format!("{}?{q}&hosting=cloud&offset={o}&limit=50", licenses_path())});
    }
    json!({"_links": links, "licenses": licenses})
}

/// Serves `pages` (each with a link to the next), checking the credentials and the first
/// page's query. Replaces every mock on the server.
async fn serve_pages(mp: &MockServer, pages: Vec<Vec<Value>>) {
    mp.reset().await;
    let n = pages.len();
    for (i, licenses) in pages.into_iter().enumerate() {
        let next = (i + 1 < n).then_some((i + 1) * 50);
        let mock = Mock::given(method("GET"))
            .and(path(licenses_path()))
            .and(basic_auth(MP_USER, MP_TOKEN))
            .and(query_param("addon", APP_KEY))
            .and(query_param("hosting", "cloud"));
        let mock = if i == 0 {
            mock.and(query_param_is_missing("offset"))
                .and(query_param("withDataInsights", "true"))
                .and(query_param("limit", "50"))
        } else {
            mock.and(query_param("offset", (i * 50).to_string()))
        };
        mock.respond_with(ResponseTemplate::new(200).set_body_json(page(licenses, next)))
            .mount(mp)
            .await;
    }
}

/// Everything stored about Marketplace licenses, to compare before and after a failed run.
async fn snapshot(app: &LicApp, keys: &[&str]) -> (Vec<String>, Vec<Value>) {
    let licenses = mp_store::all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|l| {
            format!(
                "{}|{:?}|{:?}|{:?}",
                l.license_key, l.client_key, l.last_updated, l.synced_at
            )
        })
        .collect();
    let mut rows = Vec::new();
    for k in keys {
        let r = app.row(k).await;
        rows.push(json!({
            "id": r.mp_license_id, "type": r.mp_license_type, "tier": r.mp_tier,
            "users": r.mp_user_count, "status": r.mp_status, "company": r.mp_company,
            "synced": r.mp_synced_at, "updated": r.mp_last_updated, "trial_end": r.mp_trial_end,
            "changed": r.changed_at,
        }));
    }
    (licenses, rows)
}

both_backends! {
    async fn sync_follows_every_page_and_joins_in_the_documented_order(backend) {
        let mp = MockServer::start().await;
        let app = LicApp::with_marketplace(backend, &mp).await;

        // alpha: cloudId from tenant_info. echo: entitlement only from the license endpoint.
        let alpha_site = product("", None, Some("0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10")).await;
        let mut echo_license = paid_license();
        merge(&mut echo_license, json!({"entitlementId": "a3f1e2d4-6b7c-48d9-a0e1-f2a3b4c5d6e7", "entitlementNumber": null, "supportEntitlementNumber": null}));
        let echo_site = product("", Some(echo_license), None).await;
        app.install(&install_body("alpha", &alpha_site.uri(), json!({}))).await;
        app.install(&install_body("echo", &echo_site.uri(), json!({}))).await;
        // The other sites are never reachable (.test): their background reads just fail.
        app.install(&install_body("bravo", "https://bravo.example.test", json!({"entitlementId": "5b1d0c8e-2f4a-4c55-9d61-7a2e9f0b3c11"}))).await;
        app.install(&install_body("bravo-number", "https://bravo-n.example.test", json!({"entitlementNumber": "E-4K2-9QJ-7WZ-P3M"}))).await;
        app.install(&install_body("charlie", "https://charlie.example.test", json!({"serviceEntitlementNumber": "SEN-555"}))).await;
        app.install(&install_body("delta", "https://Delta.example.test", json!({}))).await;
        assert_eq!(app.wait_checked("alpha").await.cloud_id.as_deref(), Some("0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10"));
        assert!(app.wait_checked("echo").await.host_license_entitlement_id.is_some());

        let pages = vec![
            vec![
                // cloudId beats the host name, which points at delta
                mp_license(json!({"appEntitlementId": "ent-alpha", "cloudId": "0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10", "cloudSiteHostname": "delta.example.test", "addonLicenseId": "1", "licenseId": "SEN-1"})),
                mp_license(json!({"appEntitlementId": "5b1d0c8e-2f4a-4c55-9d61-7a2e9f0b3c11", "cloudId": "11111111-0000-0000-0000-000000000000", "addonLicenseId": "2", "licenseId": "SEN-2"})),
            ],
            vec![
                mp_license(json!({"appEntitlementId": "ent-bn", "appEntitlementNumber": "E-4K2-9QJ-7WZ-P3M", "addonLicenseId": "3", "licenseId": "SEN-3"})),
                // SEN: addonLicenseId 555 = the install's SEN-555
                mp_license(json!({"appEntitlementId": "ent-charlie", "addonLicenseId": "555", "licenseId": "SEN-777"})),
            ],
            vec![
                mp_license(json!({"appEntitlementId": "ent-delta", "cloudSiteHostname": "delta.example.test", "addonLicenseId": "4", "licenseId": "SEN-4"})),
                mp_license(json!({"appEntitlementId": "a3f1e2d4-6b7c-48d9-a0e1-f2a3b4c5d6e7", "addonLicenseId": "5", "licenseId": "SEN-5"})),
                mp_license(json!({"appEntitlementId": "ent-nobody", "cloudSiteHostname": "nobody.example.test", "addonLicenseId": "6", "licenseId": "SEN-6"})),
            ],
        ];
        serve_pages(&mp, pages).await;

        let summary = sync_now(&app.state).await.expect("sync succeeds");
        assert_eq!((summary.fetched, summary.matched, summary.unmatched), (7, 6, 1));
        assert_eq!(mp.received_requests().await.unwrap().len(), 3, "every page once");

        let by_key: std::collections::HashMap<String, Option<String>> = mp_store::all(&app.state.db)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.license_key, l.client_key))
            .collect();
        assert_eq!(by_key.len(), 7, "unmatched licenses are kept too");
        assert_eq!(by_key["ent-alpha"].as_deref(), Some("alpha"));
        assert_eq!(by_key["5b1d0c8e-2f4a-4c55-9d61-7a2e9f0b3c11"].as_deref(), Some("bravo"));
        assert_eq!(by_key["ent-bn"].as_deref(), Some("bravo-number"));
        assert_eq!(by_key["ent-charlie"].as_deref(), Some("charlie"));
        assert_eq!(by_key["ent-delta"].as_deref(), Some("delta"));
        assert_eq!(by_key["a3f1e2d4-6b7c-48d9-a0e1-f2a3b4c5d6e7"].as_deref(), Some("echo"));
        assert_eq!(by_key["ent-nobody"], None);

        let delta = app.row("delta").await;
        assert_eq!(delta.mp_license_id.as_deref(), Some("ent-delta"));
        assert_eq!(delta.mp_tier.as_deref(), Some("100 Users"));
        assert_eq!(delta.mp_user_count, Some(100));
        assert_eq!(delta.mp_company.as_deref(), Some("Globex Inc"));
        let tech: Value = serde_json::from_str(delta.mp_technical_contact.as_deref().unwrap()).unwrap();
        assert_eq!(tech, json!({"name": "Hank Scorpio", "email": "it@globex.example", "phone": "+1 555 0100"}));
        assert_eq!(delta.mp_synced_at, Some(summary.finished_at));
        let metrics = app.state.metrics.render();
        assert!(metrics.contains(r#"marketplace_syncs_total{outcome="ok"} 1"#), "{metrics}");
        assert!(!metrics.contains(MP_TOKEN));
    }
}

both_backends! {
    async fn the_latest_row_of_a_site_wins(backend) {
        let mp = MockServer::start().await;
        let app = LicApp::with_marketplace(backend, &mp).await;
        app.install(&install_body("site", "https://acme-corp.example.test", json!({}))).await;
        app.install(&install_body("tie", "https://tie.example.test", json!({}))).await;
        let host = |h: &str, id: &str, extra: Value| {
            let mut l = mp_license(json!({"cloudSiteHostname": h, "appEntitlementId": id, "addonLicenseId": id, "licenseId": null}));
            merge(&mut l, extra);
            l
        };
        let evaluation = json!({
            "licenseType": "EVALUATION", "tier": "Evaluation", "lastUpdated": "2025-03-03",
            "maintenanceStartDate": "2025-03-01", "maintenanceEndDate": "2025-03-31",
            "evaluationStartDate": null, "evaluationEndDate": null
        });
        serve_pages(&mp, vec![
            vec![host("acme-corp.example.test", "old-commercial", json!({"lastUpdated": "2025-02-14"}))],
            vec![
                host("acme-corp.example.test", "new-eval", evaluation.clone()),
                // same lastUpdated: the evaluation loses to the commercial row
                host("tie.example.test", "tie-eval", evaluation.clone()),
                host("tie.example.test", "tie-commercial", json!({"lastUpdated": "2025-03-03", "tier": "Unlimited Users"})),
            ],
        ]).await;
        let summary = sync_now(&app.state).await.expect("sync");
        assert_eq!((summary.fetched, summary.matched, summary.unmatched), (4, 4, 0));

        let site = app.row("site").await;
        assert_eq!(site.mp_license_id.as_deref(), Some("new-eval"));
        assert_eq!(site.mp_license_type.as_deref(), Some("EVALUATION"));
        assert_eq!(site.mp_user_count, None);
        let day = |s: &str| format!("{s}T00:00:00Z").parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        assert_eq!(site.mp_trial_start, Some(day("2025-03-01")));
        assert_eq!(site.mp_trial_end, Some(day("2025-03-31")));
        assert_eq!(site.mp_last_updated, Some(day("2025-03-03")));
        assert_eq!(site.effective_trial_end, Some(day("2025-03-31")), "license view refreshed");

        let tie = app.row("tie").await;
        assert_eq!(tie.mp_license_id.as_deref(), Some("tie-commercial"));
        assert_eq!(tie.mp_tier.as_deref(), Some("Unlimited Users"));
        assert_eq!(tie.mp_user_count, None);
        assert_eq!(tie.mp_trial_end, None);
        assert_eq!(tie.license_state, "active");
        assert_eq!(tie.license_source.as_deref(), Some("marketplace"));

        // A later sync where the site's license is gone clears its Marketplace data; an
        // unchanged one keeps its changed_at.
        let tie_changed = tie.changed_at;
        serve_pages(&mp, vec![vec![
            host("tie.example.test", "tie-eval", evaluation),
            host("tie.example.test", "tie-commercial", json!({"lastUpdated": "2025-03-03", "tier": "Unlimited Users"})),
        ]]).await;
        sync_now(&app.state).await.expect("second sync");
        let site = app.row("site").await;
        assert_eq!(site.mp_license_id, None);
        assert_eq!(site.mp_synced_at, None);
        let tie = app.row("tie").await;
        assert_eq!(tie.changed_at, tie_changed);
        assert!(tie.mp_synced_at > Some(summary.finished_at));
        assert_eq!(mp_store::all(&app.state.db).await.unwrap().len(), 2);
    }
}

both_backends! {
    async fn a_failing_marketplace_leaves_stored_data_intact(backend) {
        let mp = MockServer::start().await;
        let app = LicApp::with_marketplace(backend, &mp).await;
        app.install(&install_body("kept", "https://kept.example.test", json!({}))).await;
        let good = vec![
            vec![mp_license(json!({"appEntitlementId": "kept-1", "cloudSiteHostname": "kept.example.test"}))],
            vec![mp_license(json!({"appEntitlementId": "other-1", "cloudSiteHostname": "other.example.test"}))],
        ];
        serve_pages(&mp, good).await;
        sync_now(&app.state).await.expect("first sync");
        let before = snapshot(&app, &["kept"]).await;
        assert_eq!(before.0.len(), 2);

        // The new data that must never become visible: page 1 fine, page 2 fails.
        let changed = vec![mp_license(json!({"appEntitlementId": "kept-2", "cloudSiteHostname": "kept.example.test", "lastUpdated": "2026-01-01"}))];
        let failures: Vec<(&str, ResponseTemplate)> = vec![
            ("401", ResponseTemplate::new(401).set_body_string("Unauthorized")),
            ("500", ResponseTemplate::new(500)),
            ("timeout", ResponseTemplate::new(200).set_body_json(page(vec![], None)).set_delay(Duration::from_secs(3))),
            ("malformed", ResponseTemplate::new(200).set_body_string("{\"licenses\": [")),
        ];
        for (what, failure) in failures {
            mp.reset().await;
            Mock::given(method("GET"))
                .and(path(licenses_path()))
                .and(query_param_is_missing("offset"))
                .respond_with(ResponseTemplate::new(200).set_body_json(page(changed.clone(), Some(50))))
                .mount(&mp)
                .await;
            Mock::given(method("GET"))
                .and(path(licenses_path()))
                .and(query_param("offset", "50"))
                .respond_with(failure)
                .mount(&mp)
                .await;
            let err = sync_now(&app.state).await.expect_err(what);
            assert!(matches!(err, SyncError::Marketplace(_)), "{what}: {err:?}");
            let text = err.to_string();
            assert!(!text.contains(MP_TOKEN), "{text}");
            let res = connect_keeper::error::ApiError::from(err).error_response();
            assert_eq!(res.status(), 502, "{what}");
            let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"], "marketplace_unavailable", "{what}");
            assert_eq!(snapshot(&app, &["kept"]).await, before, "{what}: stored data changed");
        }
        // A refused first page, through the route the lead mounts.
        mp.reset().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(401))
            .mount(&mp)
            .await;
        let res = connect_keeper::routes::admin::marketplace_sync(actix_web::web::Data::from(app.state.clone())).await;
        let res = match res { Ok(r) => r, Err(e) => e.error_response() };
        assert_eq!(res.status(), 502);
        assert_eq!(snapshot(&app, &["kept"]).await, before);
        let metrics = app.state.metrics.render();
        assert!(metrics.contains(r#"marketplace_syncs_total{outcome="marketplace_error"} 5"#), "{metrics}");
        // Nothing left behind in staging, and the lease is free again: a good run works.
        serve_pages(&mp, vec![changed]).await;
        let s = sync_now(&app.state).await.expect("sync after failures");
        assert_eq!((s.fetched, s.matched), (1, 1));
        assert_eq!(app.row("kept").await.mp_license_id.as_deref(), Some("kept-2"));
    }
}

both_backends! {
    async fn pagination_loops_are_refused(backend) {
        let mp = MockServer::start().await;
        let app = LicApp::with_marketplace(backend, &mp).await;
        let loop_page = json!({
            "_links": {"next": {"href": format!("{}?addon={APP_KEY}&hosting=cloud&offset=50&limit=50", licenses_path())}},
            "licenses": [mp_license(json!({"appEntitlementId": "x"}))]
        });
        Mock::given(method("GET"))
            .and(path(licenses_path()))
            .respond_with(ResponseTemplate::new(200).set_body_json(loop_page))
            .mount(&mp)
            .await;
        let err = sync_now(&app.state).await.expect_err("loop");
        assert!(err.to_string().contains("loop"), "{err}");
        assert_eq!(mp.received_requests().await.unwrap().len(), 2);
        assert!(mp_store::all(&app.state.db).await.unwrap().is_empty());
    }
}

both_backends! {
    async fn one_sync_at_a_time_and_credentials_required(backend) {
        let mp = MockServer::start().await;
        let app = LicApp::with_marketplace(backend, &mp).await;
        serve_pages(&mp, vec![vec![mp_license(json!({"appEntitlementId": "a"}))]]).await;
        // Another instance holds the lease.
        let now = connect_keeper::store::now();
        let taken = connect_keeper::store::leases::try_acquire(
            &app.state.db, "marketplace_sync", "other-instance", now, now + chrono::Duration::seconds(60),
        ).await.unwrap();
        assert!(taken);
        let res = connect_keeper::routes::admin::marketplace_sync(actix_web::web::Data::from(app.state.clone())).await.unwrap();
        assert_eq!(res.status(), 409);
        let body: Value = serde_json::from_slice(&actix_web::body::to_bytes(res.into_body()).await.unwrap()).unwrap();
        assert_eq!(body["error"], "sync_in_progress");
        assert!(mp.received_requests().await.unwrap().is_empty());
        // Once it expires the next run takes over.
        connect_keeper::store::leases::release(&app.state.db, "marketplace_sync", "other-instance").await.unwrap();
        let res = connect_keeper::routes::admin::marketplace_sync(actix_web::web::Data::from(app.state.clone())).await.unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = serde_json::from_slice(&actix_web::body::to_bytes(res.into_body()).await.unwrap()).unwrap();
        assert_eq!(body["fetched"], 1);
        assert_eq!(body["unmatched"], 1);
        assert!(body["finished_at"].as_str().is_some());

        let bare = LicApp::spawn(backend, &[]).await;
        let err = sync_now(&bare.state).await.expect_err("not configured");
        assert!(matches!(err, SyncError::NotConfigured));
        assert_eq!(connect_keeper::error::ApiError::from(err).error_response().status(), 400);
    }
}

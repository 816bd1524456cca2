//! The vendor dashboard over HTTP — sign-in and sign-out, wrong and revoked tokens,
//! CSRF refusal, each action against the registry and its audit trail, escaping of hostile
//! values, the security headers, the list page's filters, paging and CSV.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::admin::{ADMIN, admin_json, install_at, set_marketplace, spawn_admin};
use crate::helpers::*;

/// A browser stand-in: remembers the session cookie and reads the CSRF token from pages.
pub struct Dash<'a> {
    pub app: &'a TestApp,
    pub cookie: Option<String>,
}

pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookie: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl<'a> Dash<'a> {
    pub fn new(app: &'a TestApp) -> Dash<'a> {
        Dash { app, cookie: None }
    }

    async fn answer(res: reqwest::Response) -> Answer {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let get = |h: &str| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Answer {
            status,
            location: get("location"),
            set_cookie: get("set-cookie"),
            body: res.text().await.unwrap_or_default(),
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        let mut req = self.app.client.get(self.app.url(path));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        Self::answer(req.send().await.expect("request sent")).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = serde_urlencoded::to_string(form).unwrap();
        let mut req = self
            .app
            .client
            .post(self.app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        Self::answer(req.send().await.expect("request sent")).await
    }

    /// Signs in with `token`; asserts success and keeps the cookie.
    pub async fn sign_in(&mut self, token: &str) -> Answer {
        let a = self.post("/admin/ui/login", &[("token", token)]).await;
        assert_eq!(a.status, 303, "sign-in: {}", a.body);
        let set = a.set_cookie.clone().expect("a session cookie");
        self.cookie = Some(set.split(';').next().unwrap().to_owned());
        a
    }

    /// The CSRF token of the page at `path`.
    pub async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await;
        assert_eq!(page.status, 200, "GET {path}: {}", page.body);
        csrf_of(&page.body)
    }

    /// Posts `form` with the session's CSRF token (read from `page`).
    pub async fn act(&self, page: &str, path: &str, form: &[(&str, &str)]) -> Answer {
        let csrf = self.csrf(page).await;
        let mut all = vec![("csrf_token", csrf.as_str())];
        all.extend_from_slice(form);
        self.post(path, &all).await
    }
}

pub fn csrf_of(body: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = body.find(marker).expect("a csrf_token field") + marker.len();
    body[start..][..body[start..].find('"').unwrap()].to_owned()
}

async fn detail(app: &TestApp, key: &str) -> Value {
    admin_json(app, &format!("/admin/installations/{key}")).await
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("a timestamp"))
        .unwrap()
        .with_timezone(&Utc)
}

both_backends! {
    async fn sign_in_and_out(backend) {
        let app = spawn_admin(backend).await;
        let mut dash = Dash::new(&app);

        // No session: pages send to the sign-in form, posts are refused.
        for page in ["/admin/ui/", "/admin/ui", "/admin/ui/installations", "/admin/ui/access-tokens", "/admin/ui/marketplace", "/admin/ui/nope"] {
            let a = dash.get(page).await;
            assert_eq!(a.status, 303, "{page}");
            assert_eq!(a.location.as_deref(), Some("/admin/ui/login"), "{page}");
        }
        let a = dash.post("/admin/ui/access-tokens", &[("note", "x"), ("csrf_token", "x")]).await;
        assert!(a.status == 401 || a.status == 403, "{}", a.status);
        let a = dash.get("/admin/ui/login").await;
        assert_eq!(a.status, 200);
        assert!(a.body.contains("name=\"token\""));

        // A wrong token: 401 with the form again, no cookie.
        let a = dash.post("/admin/ui/login", &[("token", "not-the-token")]).await;
        assert_eq!(a.status, 401);
        assert!(a.body.contains("name=\"token\""), "{}", a.body);
        assert!(a.set_cookie.is_none());
        let a = dash.post("/admin/ui/login", &[("token", "")]).await;
        assert_eq!(a.status, 401);

        // The right one: 303 to the overview with the session cookie (docs/dashboard.md).
        let a = dash.sign_in(ADMIN).await;
        assert_eq!(a.location.as_deref(), Some("/admin/ui/"));
        let cookie = a.set_cookie.unwrap();
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(cookie.contains(attr), "{attr} in {cookie}");
        }
        let max_age: i64 = cookie.split("Max-Age=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
        assert!(max_age > 0 && max_age <= 12 * 3600, "{cookie}");
        assert!(!cookie.contains(ADMIN), "the cookie is not the admin token");
        let a = dash.get("/admin/ui/").await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(a.body.contains("Overview"));

        // Sign-out needs the CSRF token too.
        let a = dash.post("/admin/ui/logout", &[]).await;
        assert_eq!(a.status, 403);
        assert_eq!(dash.get("/admin/ui/").await.status, 200, "still signed in");
        let a = dash.act("/admin/ui/", "/admin/ui/logout", &[]).await;
        assert_eq!(a.status, 303);
        assert_eq!(a.location.as_deref(), Some("/admin/ui/login"));
        assert!(a.set_cookie.unwrap().contains("Max-Age=0"));
        // The old cookie is dead even if a client keeps sending it.
        assert_eq!(dash.get("/admin/ui/").await.status, 303);
    }
}

both_backends! {
    async fn a_revoked_admin_token_ends_its_sessions(backend) {
        let app = TestApp::spawn(backend).await; // no ADMIN_TOKEN
        let db = &app.state.db;
        let created = connect_keeper::registry::admin_tokens::create(db, "alice", "test", Utc::now())
            .await
            .unwrap();
        let mut dash = Dash::new(&app);
        dash.sign_in(&created.token).await;
        let a = dash.get("/admin/ui/").await;
        assert_eq!(a.status, 200);
        assert!(a.body.contains("alice"), "the page names who is signed in");
        connect_keeper::registry::admin_tokens::revoke(db, &created.id, "test", Utc::now())
            .await
            .unwrap();
        let a = dash.get("/admin/ui/installations").await;
        assert_eq!(a.status, 303);
        assert_eq!(a.location.as_deref(), Some("/admin/ui/login"));
        // and it cannot sign in again
        let a = dash.post("/admin/ui/login", &[("token", &created.token)]).await;
        assert_eq!(a.status, 401);
    }
}

both_backends! {
    async fn security_headers_on_the_dashboard_only(backend) {
        let app = spawn_admin(backend).await;
        let mut dash = Dash::new(&app);
        let login = dash.get("/admin/ui/login").await;
        dash.sign_in(ADMIN).await;
        let page = dash.get("/admin/ui/installations").await;
        let redirect = Dash::new(&app).get("/admin/ui/").await;
        let css = dash.get("/admin/ui/assets/dashboard.css").await;
        assert_eq!(css.status, 200);
        assert!(css.headers["content-type"].to_str().unwrap().starts_with("text/css"));
        for a in [&login, &page, &redirect, &css] {
            let csp = a.headers["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("default-src 'none'"), "{csp}");
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert!(!csp.contains("unsafe-inline") && !csp.contains("http"), "{csp}");
            assert_eq!(a.headers["x-frame-options"], "DENY");
        }
        // No inline script or style anywhere in the pages.
        for body in [&login.body, &page.body] {
            assert!(!body.contains("<script>") && !body.contains("style="), "{body}");
        }
        // Not on the rest of the service (the Connect iframe pages must stay frameable).
        for path in ["/atlassian-connect.json", "/healthz", "/panel"] {
            let a = app.get(path).await;
            assert!(a.headers().get("x-frame-options").is_none(), "{path}");
        }
    }
}

both_backends! {
    async fn actions_change_the_registry_as_the_api_does(backend) {
        let app = spawn_admin(backend).await;
        let db = &app.state.db;
        let created = connect_keeper::registry::admin_tokens::create(db, "alice", "test", Utc::now())
            .await
            .unwrap();
        install_at(&app, "site-a", "secret-a", "a").await;
        let mut dash = Dash::new(&app);
        dash.sign_in(&created.token).await;
        let page = "/admin/ui/installations/site-a";
        let before = detail(&app, "site-a").await;

        // CSRF: without the token, or with another session's, 403 and nothing changes.
        let a = dash.post("/admin/ui/installations/site-a/trial-extension", &[("days", "30"), ("reason", "r")]).await;
        assert_eq!(a.status, 403);
        let mut other = Dash::new(&app);
        other.sign_in(&created.token).await;
        let foreign = other.csrf(page).await;
        let a = dash.post("/admin/ui/installations/site-a/trial-extension",
            &[("csrf_token", foreign.as_str()), ("days", "30"), ("reason", "r")]).await;
        assert_eq!(a.status, 403);
        for path in ["/admin/ui/installations/site-a/grants", "/admin/ui/access-tokens", "/admin/ui/marketplace/sync", "/admin/ui/grants/x/revoke", "/admin/ui/access-tokens/x/revoke"] {
            let a = dash.post(path, &[("reason", "r"), ("note", "n")]).await;
            assert_eq!(a.status, 403, "{path}");
        }
        assert_eq!(detail(&app, "site-a").await, before, "nothing changed");

        // Invalid fields: 400 with the form and the reason, nothing changes.
        let a = dash.act(page, "/admin/ui/installations/site-a/trial-extension", &[("days", "30"), ("reason", " ")]).await;
        assert_eq!(a.status, 400);
        assert!(a.body.contains("reason: is required"), "{}", a.body);
        let a = dash.act(page, "/admin/ui/installations/site-a/trial-extension", &[("days", "366"), ("reason", "r")]).await;
        assert_eq!(a.status, 400);
        assert!(a.body.contains("days:"), "{}", a.body);
        let a = dash.act(page, "/admin/ui/installations/site-a/grants", &[("ends_at", "soon"), ("reason", "r")]).await;
        assert_eq!(a.status, 400);
        assert!(a.body.contains("ends_at:"), "{}", a.body);
        assert_eq!(detail(&app, "site-a").await["grants"], json!([]));

        // Extend the trial by 30 days: 303 to the page, which shows the new end.
        let a = dash.act(page, "/admin/ui/installations/site-a/trial-extension", &[("days", "30"), ("reason", "asked for more time")]).await;
        assert_eq!(a.status, 303, "{}", a.body);
        assert_eq!(a.location.as_deref(), Some("/admin/ui/installations/site-a?done=trial-extended"));
        let d = detail(&app, "site-a").await;
        let end = time(&d["license"]["effective_trial_end"]);
        assert!((end - (Utc::now() + Duration::days(30))).num_seconds().abs() < 60, "{end}");
        assert_eq!(d["license"]["state"], "trial");
        let shown = dash.get(a.location.as_deref().unwrap()).await;
        assert!(shown.body.contains(&end.format("%Y-%m-%d %H:%M UTC").to_string()), "new end shown");
        assert!(shown.body.contains("The trial was extended."));
        let audit = &d["audit"];
        let entry = audit.as_array().unwrap().iter().find(|e| e["action"].as_str().unwrap().contains("trial")).expect("audited");
        assert_eq!(entry["actor"], "alice");
        assert_eq!(entry["reason"], "asked for more time");

        // Grant free use until a date, then revoke it.
        let until = (Utc::now() + Duration::days(90)).format("%Y-%m-%d").to_string();
        let a = dash.act(page, "/admin/ui/installations/site-a/grants", &[("ends_at", until.as_str()), ("reason", "partner")]).await;
        assert_eq!(a.status, 303, "{}", a.body);
        let d = detail(&app, "site-a").await;
        assert_eq!(d["license"]["state"], "free");
        let grant = d["installation"]["grants"].as_array().or(d["grants"].as_array()).unwrap()
            .iter().find(|g| g["kind"] == "free").unwrap().clone();
        assert_eq!(grant["reason"], "partner");
        assert!(grant["ends_at"].as_str().unwrap().starts_with(&until));
        let a = dash.act(page, &format!("/admin/ui/grants/{}/revoke", grant["id"].as_str().unwrap()), &[]).await;
        assert_eq!(a.status, 303);
        assert_eq!(a.location.as_deref(), Some("/admin/ui/installations/site-a?done=grant-revoked"));
        let d = detail(&app, "site-a").await;
        assert_eq!(d["license"]["state"], "trial", "back to the extended trial");
        let actors: Vec<&str> = d["audit"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
        assert!(actors.len() >= 3 && actors.iter().all(|a| *a == "alice"), "{actors:?}");
        let a = dash.act(page, "/admin/ui/grants/no-such-grant/revoke", &[]).await;
        assert_eq!(a.status, 404);

        // An access token bound to the site: shown once on the page the form leads to.
        let a = dash.act(page, "/admin/ui/access-tokens", &[("note", "for the pilot"), ("client_key", "site-a"), ("back", "installation")]).await;
        assert_eq!(a.status, 303, "{}", a.body);
        assert_eq!(a.location.as_deref(), Some("/admin/ui/installations/site-a?done=token-created"));
        let first = dash.get(a.location.as_deref().unwrap()).await;
        let token = shown_token(&first.body).expect("the token is shown");
        assert!(token.len() >= 40, "{token}");
        assert!(first.body.contains("access-token="), "the install URL is shown");
        let again = dash.get(a.location.as_deref().unwrap()).await;
        assert!(!again.body.contains(&token), "shown once");
        let tokens = admin_json_as(&app, &created.token, "/admin/access-tokens").await;
        let t = &tokens["items"][0];
        assert_eq!(t["client_key"], "site-a");
        assert_eq!(t["note"], "for the pilot");
        assert_eq!(t["created_by"], "alice");
        // The token works: the site redeems it.
        let tok = hs256_context("site-a", "secret-a", json!({}));
        let res = app.client.post(app.url("/api/access-tokens/redeem"))
            .header("authorization", format!("JWT {tok}"))
            .json(&json!({"token": token})).send().await.unwrap();
        assert_eq!(res.status(), 200);

        // A note is required; an unknown site is refused with the form.
        let a = dash.act("/admin/ui/access-tokens", "/admin/ui/access-tokens", &[("note", "")]).await;
        assert_eq!(a.status, 400);
        let a = dash.act("/admin/ui/access-tokens", "/admin/ui/access-tokens", &[("note", "n"), ("client_key", "nobody")]).await;
        assert_eq!(a.status, 400);
        assert!(a.body.contains("client_key: no installation with client_key"), "the reason: {}", a.body);
        assert!(a.body.contains("value=\"nobody\""), "the form filled in again: {}", a.body);

        // Created from the Access tokens page: shown there once; then revoked.
        let a = dash.act("/admin/ui/access-tokens", "/admin/ui/access-tokens", &[("note", "spare")]).await;
        assert_eq!(a.status, 303);
        assert_eq!(a.location.as_deref(), Some("/admin/ui/access-tokens?done=token-created"));
        let page_with = dash.get("/admin/ui/access-tokens").await;
        assert!(page_with.body.contains("new-token-value"));
        assert!(!dash.get("/admin/ui/access-tokens").await.body.contains("new-token-value"));
        let tokens = admin_json_as(&app, &created.token, "/admin/access-tokens").await;
        let spare = tokens["items"].as_array().unwrap().iter().find(|t| t["note"] == "spare").unwrap()["id"].as_str().unwrap().to_owned();
        let a = dash.act("/admin/ui/access-tokens", &format!("/admin/ui/access-tokens/{spare}/revoke"), &[]).await;
        assert_eq!(a.status, 303);
        let tokens = admin_json_as(&app, &created.token, "/admin/access-tokens").await;
        let spare = tokens["items"].as_array().unwrap().iter().find(|t| t["note"] == "spare").unwrap().clone();
        assert!(spare["revoked_at"].is_string());

        // Every action above is in the audit log under the admin token's name, the access
        // tokens' too (those not bound to a site have no installation page to show it).
        let audit: Vec<(String, String)> = crate::on_db!(db, |p| {
            sqlx::query_as("SELECT action, actor FROM audit_log ORDER BY id").fetch_all(p).await
        }).unwrap();
        let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
        for wanted in ["access_token.create", "access_token.revoke"] {
            assert!(actions.contains(&wanted), "{wanted} audited: {actions:?}");
        }
        assert!(audit.len() >= 7, "{audit:?}");
        // (the test made the admin token as "test"; the redemption is the site's own act)
        assert!(audit.iter().all(|(action, actor)| actor == "alice"
            || (action == "admin_token.create" && actor == "test")
            || (action == "access_token.redeem" && actor == "site")), "{audit:?}");

        // Unknown installation: 404 page, and actions on it change nothing.
        assert_eq!(dash.get("/admin/ui/installations/nobody").await.status, 404);
        let a = dash.act(page, "/admin/ui/installations/nobody/trial-extension", &[("days", "3"), ("reason", "r")]).await;
        assert_eq!(a.status, 404);
    }
}

/// The token in the "shown once" box of a page, if any.
pub fn shown_token(body: &str) -> Option<String> {
    let at = body.find("id=\"new-token-value\"")?;
    let rest = &body[at..];
    let v = rest.find("value=\"")? + "value=\"".len();
    Some(rest[v..][..rest[v..].find('"')?].to_owned())
}

async fn admin_json_as(app: &TestApp, token: &str, path: &str) -> Value {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

both_backends! {
    async fn hostile_values_are_shown_as_text(backend) {
        let app = spawn_admin(backend).await;
        let mut body = app.installed_payload("evil-site", "secret-e");
        body["description"] = json!("<img src=x onerror=alert(2)>");
        body["displayUrl"] = json!("\"><script>alert(3)</script>");
        app.install_payload(&body).await;
        // The lifecycle refuses a non-http(s) baseUrl today; a row from before that rule (or
        // any other writer) must still be harmless.
        on_db!(&app.state.db, |p| {
            sqlx::query("UPDATE installations SET base_url = 'javascript:alert(1)' WHERE client_key = 'evil-site'")
                .execute(p).await.map(|_| ())
        }).unwrap();
        set_marketplace(&app, "evil-site", "<script>alert(1)</script>", "a@b.example\"><b>x</b>", "COMMERCIAL", None).await;
        let mut dash = Dash::new(&app);
        dash.sign_in(ADMIN).await;
        for path in ["/admin/ui/installations", "/admin/ui/installations/evil-site", "/admin/ui/installations?q=javascript"] {
            let a = dash.get(path).await;
            assert_eq!(a.status, 200, "{path}: {}", a.body);
            let b = &a.body;
            assert!(b.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{path}: company shown as text");
            assert!(!b.contains("<script>alert"), "{path}");
            assert!(!b.contains("<img src=x"), "{path}");
            assert!(!b.contains("<b>x</b>"), "{path}");
            assert!(!b.to_ascii_lowercase().contains("href=\"javascript:"), "{path}");
            assert!(b.contains("javascript:alert(1)"), "{path}: the base URL is shown as text");
        }
        let a = dash.get("/admin/ui/installations/evil-site").await;
        assert!(a.body.contains("&lt;img src=x onerror=alert(2)&gt;"));
    }
}

both_backends! {
    async fn the_list_page_filters_searches_pages_and_exports(backend) {
        let app = spawn_admin(backend).await;
        for (k, slug) in [("k-1", "alpha"), ("k-2", "beta"), ("k-3", "gamma")] {
            install_at(&app, k, "s", slug).await;
        }
        set_marketplace(&app, "k-2", "Acme Widgets", "ops@acme.example", "COMMERCIAL", None).await;
        let mut dash = Dash::new(&app);
        dash.sign_in(ADMIN).await;
        let csrf = dash.csrf("/admin/ui/installations/k-3").await;
        let a = dash.post("/admin/ui/installations/k-3/grants", &[("csrf_token", csrf.as_str()), ("reason", "friend"), ("ends_at", "")]).await;
        assert_eq!(a.status, 303);

        let all = dash.get("/admin/ui/installations").await;
        assert_eq!(total_of(&all.body), 3);
        for k in ["/installations/k-1", "/installations/k-2", "/installations/k-3"] {
            assert!(all.body.contains(k), "{k}");
        }
        // Licence filter (as the form sends it: empty fields included).
        let free = dash.get("/admin/ui/installations?q=&license=free&product=&trial_ends_before=&sort=installed_at&limit=50").await;
        assert_eq!(free.status, 200, "{}", free.body);
        assert_eq!(total_of(&free.body), 1);
        assert!(free.body.contains("/installations/k-3") && !free.body.contains("/installations/k-1\""));
        // Search by company and by base URL.
        let acme = dash.get("/admin/ui/installations?q=acme").await;
        assert_eq!(total_of(&acme.body), 1);
        assert!(acme.body.contains("Acme Widgets"));
        let beta = dash.get("/admin/ui/installations?q=beta").await;
        assert_eq!(total_of(&beta.body), 1);
        // Every API filter and sort is accepted; a bad one is a 400 naming the parameter.
        let a = dash.get("/admin/ui/installations?status=installed&status=enabled&product=jira&sort=-installed_at&trial_ends_before=2099-01-01").await;
        assert_eq!(a.status, 200);
        for (q, field) in [("sort=name", "sort"), ("limit=0", "limit"), ("license=paid", "license"), ("cursor=zzz", "cursor")] {
            let a = dash.get(&format!("/admin/ui/installations?{q}")).await;
            assert_eq!(a.status, 400, "{q}");
            assert!(a.body.contains(&format!("{field}:")), "{q}: {}", a.body);
        }
        // Cursor paging: 1 per page, three pages, each row once; the total stays.
        let mut seen = vec![];
        let mut next = Some("/admin/ui/installations?sort=base_url&limit=1".to_owned());
        while let Some(path) = next.take() {
            let p = dash.get(&path).await;
            assert_eq!(p.status, 200, "{path}");
            assert_eq!(total_of(&p.body), 3);
            for k in ["k-1", "k-2", "k-3"] {
                if p.body.contains(&format!("/installations/{k}\"")) { seen.push(k); }
            }
            next = link_after(&p.body, "rel=\"next\" ");
        }
        assert_eq!(seen, vec!["k-1", "k-2", "k-3"], "alpha, beta, gamma by base URL");
        // The CSV link carries the current filter.
        let link = link_after(&free.body, "<div class=\"listhead\">").expect("a CSV link");
        let csv = dash.get(&link).await;
        assert_eq!(csv.status, 200);
        assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
        let lines: Vec<&str> = csv.body.lines().collect();
        assert_eq!(lines.len(), 2, "{}", csv.body);
        assert!(lines[0].starts_with("client_key,"));
        assert!(lines[1].starts_with("k-3,"));
    }
}

both_backends! {
    async fn weekly_summary_counts_installs_and_uninstalls(backend) {
        let app = spawn_admin(backend).await;
        let res = app.client.get(app.url("/admin/summary/weekly")).send().await.unwrap();
        assert_eq!(res.status(), 401, "bearer token required");

        // This week, through the real callbacks: three first installs, one uninstall, one
        // reinstall after it, and a repeated install of an installed site (not counted).
        for (k, slug) in [("w-1", "w1"), ("w-2", "w2"), ("w-3", "w3")] {
            install_at(&app, k, "s", slug).await;
        }
        install_at(&app, "w-1", "s2", "w1").await; // re-sent installed: no new install
        let mut body = installed_payload("w-3", "s", &crate::admin::site(&app, "w3"));
        body["eventType"] = json!("uninstalled");
        body.as_object_mut().unwrap().remove("sharedSecret");
        let tok = sign_rs256(&app.install_claims("w-3", "/uninstalled"));
        assert_eq!(app.post_lifecycle("/uninstalled", Some(&tok), &body).await.status(), 204);
        install_at(&app, "w-3", "s3", "w3").await; // reinstall after the uninstall

        // Earlier weeks, written as history: old-1 installed 3 weeks ago and uninstalled 1
        // week ago; old-2 installed 40 weeks ago (outside) and uninstalled 2 weeks ago, then
        // its uninstall retried (not a second one).
        let now = Utc::now();
        let history = [
            ("old-1", "installed", now - Duration::weeks(3)),
            ("old-1", "uninstalled", now - Duration::weeks(1)),
            ("old-2", "installed", now - Duration::weeks(40)),
            ("old-2", "uninstalled", now - Duration::weeks(2)),
            ("old-2", "uninstalled", now - Duration::weeks(2) + Duration::seconds(1)),
            ("old-2", "enabled", now - Duration::weeks(2) + Duration::seconds(2)),
        ];
        for (k, kind, at) in history {
            on_db!(&app.state.db, |p| {
                connect_keeper::store::events::insert(p, k, kind, None, &json!({}), at).await
            })
            .unwrap();
        }

        let v = admin_json(&app, "/admin/summary/weekly").await;
        let weeks = v["weeks"].as_array().unwrap();
        assert_eq!(weeks.len(), 26);
        let monday = |t: DateTime<Utc>| {
            let d = t.date_naive();
            (d - Duration::days(chrono::Datelike::weekday(&d).num_days_from_monday() as i64)).to_string()
        };
        assert_eq!(weeks[25]["week_start"], monday(now));
        assert_eq!(weeks[0]["week_start"], monday(now - Duration::weeks(25)));
        let counts = |i: usize| (weeks[i]["installs"].as_i64().unwrap(), weeks[i]["uninstalls"].as_i64().unwrap());
        assert_eq!(counts(25), (4, 1), "this week");
        assert_eq!(counts(24), (0, 1), "old-1 uninstalled");
        assert_eq!(counts(23), (0, 1), "old-2 uninstalled once");
        assert_eq!(counts(22), (1, 0), "old-1 installed");
        let all: i64 = (0..26).map(|i| counts(i).0 + counts(i).1).sum();
        assert_eq!(all, 8);

        // In the OpenAPI document, and drawn on the Overview.
        let doc = admin_json(&app, "/admin/openapi.json").await;
        assert!(doc["paths"]["/admin/summary/weekly"]["get"].is_object());
        let mut dash = Dash::new(&app);
        dash.sign_in(ADMIN).await;
        let page = dash.get("/admin/ui/").await;
        assert_eq!(page.status, 200);
        for id in ["weekly-chart", "states-chart", "trials-chart"] {
            assert!(page.body.contains(&format!("<svg class=\"chart\" id=\"{id}\"")), "{id}: {}", page.body);
        }
        assert!(page.body.contains(&format!("week of {}: 4 installs", monday(now))));
    }
}

both_backends! {
    async fn marketplace_page_syncs_now(backend) {
        use wiremock::matchers::method;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let mp = MockServer::start().await;
        let uri = mp.uri();
        let app = TestApp::spawn_with(backend, &[
            ("ADMIN_TOKEN", ADMIN),
            ("MARKETPLACE_URL", uri.as_str()),
            ("MARKETPLACE_VENDOR_ID", "1212"),
            ("MARKETPLACE_USER", "vendor@example.test"),
            ("MARKETPLACE_API_TOKEN", "mp-secret-token"),
            ("MARKETPLACE_SYNC_INTERVAL_SECS", "86400"),
        ]).await;
        let mut dash = Dash::new(&app);
        dash.sign_in(ADMIN).await;
        let before = dash.get("/admin/ui/marketplace").await;
        assert_eq!(before.status, 200);
        assert!(before.body.contains("Sync now"));

        // The Marketplace fails: 502 with the reason on the page, nothing stored.
        Mock::given(method("GET")).respond_with(ResponseTemplate::new(500)).mount(&mp).await;
        let a = dash.act("/admin/ui/marketplace", "/admin/ui/marketplace/sync", &[]).await;
        assert_eq!(a.status, 502, "{}", a.body);
        assert!(!a.body.contains("mp-secret-token"));
        assert!(connect_keeper::store::marketplace::last_synced_at(&app.state.db).await.unwrap().is_none());

        // It answers: 303 to the page, which shows the sync.
        mp.reset().await;
        let license = json!({
            "addonLicenseId": "1", "licenseId": "SEN-1", "addonKey": APP_KEY, "hosting": "Cloud",
            "lastUpdated": "2026-01-01", "licenseType": "COMMERCIAL", "status": "active",
            "appEntitlementId": "e-1", "cloudSiteHostname": "nowhere.example.test",
            "contactDetails": {"company": "<b>Nowhere</b>"}
        });
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"_links": {}, "licenses": [license]})))
            .mount(&mp)
            .await;
        let a = dash.act("/admin/ui/marketplace", "/admin/ui/marketplace/sync", &[]).await;
        assert_eq!(a.status, 303, "{}", a.body);
        assert_eq!(a.location.as_deref(), Some("/admin/ui/marketplace?done=synced"));
        let page = dash.get(a.location.as_deref().unwrap()).await;
        assert!(page.body.contains("The Marketplace sync finished."));
        let synced = connect_keeper::store::marketplace::last_synced_at(&app.state.db).await.unwrap().expect("synced");
        assert!(page.body.contains(&synced.format("%Y-%m-%d %H:%M UTC").to_string()), "{}", page.body);
        assert!(page.body.contains("<dd>1</dd>"), "one unmatched licence: {}", page.body);
    }
}

both_backends! {
    async fn marketplace_sync_without_credentials_is_refused(backend) {
        let app = spawn_admin(backend).await;
        let mut dash = Dash::new(&app);
        dash.sign_in(ADMIN).await;
        let a = dash.act("/admin/ui/marketplace", "/admin/ui/marketplace/sync", &[]).await;
        assert_eq!(a.status, 400);
        assert!(a.body.contains("not configured"), "{}", a.body);
    }
}

/// The text of the cell `label` (its `data-label`) in the Installations table row whose link
/// contains `key`, tags stripped; `None` when no row links there.
fn cell(body: &str, key: &str, label: &str) -> Option<String> {
    let row = body
        .split("<tr>")
        .find(|r| r.contains("class=\"detail\"") && r.contains(key))?;
    let marker = format!("data-label=\"{label}\">");
    let at = row.find(&marker)? + marker.len();
    let inner = &row[at..][..row[at..].find("</td>")?];
    let mut text = String::new();
    let mut in_tag = false;
    for ch in inner.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    Some(text.trim().to_owned())
}

fn total_of(body: &str) -> i64 {
    let marker = "<strong id=\"total\">";
    let at = body.find(marker).expect("a total") + marker.len();
    body[at..][..body[at..].find('<').unwrap()].parse().unwrap()
}

/// The `href` after `marker` in `body`, unescaped.
fn link_after(body: &str, marker: &str) -> Option<String> {
    let at = body.find(marker)? + marker.len();
    let rest = &body[at..];
    let start = rest.find("href=\"")? + "href=\"".len();
    Some(rest[start..][..rest[start..].find('"')?].replace("&amp;", "&"))
}

/// A Forge-only installation (known from a FIT, no Connect clientKey) on its own site.
async fn forge_only(app: &TestApp, uuid: &str, site_url: &str) {
    let mut claims = crate::forge::fit_claims_for(uuid, &format!("cloud-{uuid}"));
    claims["context"]["siteUrl"] = json!(site_url);
    claims["app"]["license"] = json!({"active": true});
    let res = crate::forge::with_fit(app, "GET", "/api/whoami", &crate::forge::fit(&claims)).await;
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

/// A plain Connect tenant: its `installed` carries no Forge installation id.
async fn connect_only(app: &TestApp, client_key: &str, slug: &str) {
    let mut body = installed_payload(client_key, "s", &crate::admin::site(app, slug));
    body.as_object_mut().unwrap().remove("installationId");
    app.install_payload(&body).await;
}

both_backends! {
    /// The Installations page shows each installation's flavour and takes the
    /// API's `flavour` filter, in the form, across pages and in the CSV link.
    async fn the_list_page_shows_and_filters_by_flavour(backend) {
        const FORGE_UUID: &str = "0f0f0f0f-1111-4222-8333-444455556666";
        let app = crate::forge::spawn_forge(backend, &[("ADMIN_TOKEN", ADMIN)]).await;
        connect_only(&app, "ck-plain", "plain").await;
        install_at(&app, "ck-cof", "s", "cof").await; // carries an installationId
        forge_only(&app, FORGE_UUID, "https://forge-only.atlassian.net").await;
        let mut dash = Dash::new(&app);
        dash.sign_in(ADMIN).await;

        let all = dash.get("/admin/ui/installations").await;
        assert_eq!(all.status, 200, "{}", all.body);
        assert_eq!(total_of(&all.body), 3);
        assert!(all.body.contains("<th>Flavour</th>"), "a Flavour column");
        assert_eq!(cell(&all.body, "/installations/ck-plain\"", "Flavour").as_deref(), Some("connect"));
        assert_eq!(cell(&all.body, "/installations/ck-cof\"", "Flavour").as_deref(), Some("connect_on_forge"));
        assert_eq!(cell(&all.body, FORGE_UUID, "Flavour").as_deref(), Some("forge"));
        for v in ["connect", "connect_on_forge", "forge"] {
            assert!(all.body.contains(&format!("name=\"flavour\" value=\"{v}\"")), "a {v} box in the form");
        }

        // One flavour: only its installation; the box stays ticked.
        let forge = dash.get("/admin/ui/installations?q=&flavour=forge&sort=installed_at&limit=50").await;
        assert_eq!(forge.status, 200, "{}", forge.body);
        assert_eq!(total_of(&forge.body), 1);
        assert!(forge.body.contains(FORGE_UUID));
        assert!(!forge.body.contains("/installations/ck-plain\"") && !forge.body.contains("/installations/ck-cof\""));
        assert!(forge.body.contains("name=\"flavour\" value=\"forge\" checked"), "{}", forge.body);
        let connect = dash.get("/admin/ui/installations?flavour=connect").await;
        assert_eq!(total_of(&connect.body), 1);
        assert!(connect.body.contains("/installations/ck-plain\"") && !connect.body.contains(FORGE_UUID));

        // Two boxes ticked, as the form sends them, one per page: the next-page link, the
        // first-page link and the CSV link all keep the filter.
        let first = dash.get("/admin/ui/installations?flavour=connect&flavour=connect_on_forge&sort=base_url&limit=1").await;
        assert_eq!(total_of(&first.body), 2);
        let next = link_after(&first.body, "rel=\"next\" ").expect("a next page");
        assert!(next.contains("flavour=connect%2Cconnect_on_forge"), "{next}");
        let second = dash.get(&next).await;
        assert_eq!(second.status, 200, "{}", second.body);
        assert_eq!(total_of(&second.body), 2);
        assert!(!second.body.contains(FORGE_UUID));
        let back = link_after(&second.body, "<nav class=\"paging\" aria-label=\"pages\">").expect("a first-page link");
        assert!(back.contains("flavour=connect%2Cconnect_on_forge") && !back.contains("cursor"), "{back}");
        let csv_link = link_after(&first.body, "<div class=\"listhead\">").expect("a CSV link");
        assert!(csv_link.contains("/admin/ui/installations.csv?") && csv_link.contains("flavour=connect%2Cconnect_on_forge"), "{csv_link}");
        let csv = dash.get(&csv_link).await;
        assert_eq!(csv.status, 200);
        let mut keys: Vec<&str> = csv.body.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
        keys.sort();
        assert_eq!(keys, ["ck-cof", "ck-plain"], "{}", csv.body);

        // An unknown flavour: 400 naming the parameter, like the API.
        let bad = dash.get("/admin/ui/installations?flavour=classic").await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("flavour:"), "{}", bad.body);

        // The Forge installation's own page.
        let at = forge.body.find("class=\"detail\" href=\"").unwrap() + "class=\"detail\" href=\"".len();
        let href = &forge.body[at..][..forge.body[at..].find('"').unwrap()];
        let page = dash.get(href).await;
        assert_eq!(page.status, 200, "{href}: {}", page.body);
        assert!(page.body.contains("<dt>Flavour</dt><dd><span class=\"flavour\">forge</span></dd>"), "{}", page.body);
    }
}

/// The product loads the app's page with `lic=active` in a query-bound token: the registry
/// then calls the site active on the word of its own request, and nothing else's.
pub(crate) async fn seen_with_lic_active(app: &TestApp, client_key: &str, secret: &str) {
    let p = "/panel?lic=active&xdm_e=https%3A%2F%2Facme.atlassian.net";
    let token = hs256_query_bound("GET", p, client_key, secret, json!({}));
    assert_eq!(app.get(&format!("{p}&jwt={token}")).await.status(), 200);
    let path = format!("/admin/installations/{client_key}");
    assert!(
        eventually(10, || async {
            admin_json(app, &path).await["license"]["state"] == "active"
        })
        .await,
        "the lic seen is recorded"
    );
}

both_backends! {
    /// `license.corroborated` on the Installation page, a text mark on
    /// active licences no outside source backs, and the `corroborated` filter.
    async fn corroboration_is_shown_marked_and_filtered(backend) {
        let app = spawn_admin(backend).await;
        install_at(&app, "ck-lic", "secret-l", "lic").await;
        seen_with_lic_active(&app, "ck-lic", "secret-l").await;
        install_at(&app, "ck-paid", "secret-p", "paid").await;
        set_marketplace(&app, "ck-paid", "Paying Ltd", "p@paid.example", "COMMERCIAL", None).await;
        install_at(&app, "ck-none", "secret-n", "none").await;
        assert_eq!(detail(&app, "ck-lic").await["license"]["corroborated"], false);
        assert_eq!(detail(&app, "ck-paid").await["license"]["corroborated"], true);
        let mut dash = Dash::new(&app);
        dash.sign_in(ADMIN).await;

        // The list marks the active licence that only the site's own request backs, in words.
        let all = dash.get("/admin/ui/installations").await;
        assert_eq!(total_of(&all.body), 3);
        let licence = |key: &str| cell(&all.body, &format!("/installations/{key}\""), "Licence").unwrap();
        assert!(licence("ck-lic").contains("not corroborated"), "{}", licence("ck-lic"));
        assert!(!licence("ck-paid").contains("corroborated"), "{}", licence("ck-paid"));
        assert!(!licence("ck-none").contains("corroborated"), "unlicensed: nothing to corroborate");

        // The Installation page says it either way.
        let corroborated = |body: &str| {
            let marker = "<span id=\"license-corroborated\">";
            let at = body.find(marker).expect("a Corroborated row") + marker.len();
            body[at..][..body[at..].find('<').unwrap()].to_owned()
        };
        let lic = dash.get("/admin/ui/installations/ck-lic").await;
        assert!(corroborated(&lic.body).starts_with("no"), "{}", corroborated(&lic.body));
        assert!(lic.body.contains("not corroborated"), "marked beside the state");
        let paid = dash.get("/admin/ui/installations/ck-paid").await;
        assert!(corroborated(&paid.body).starts_with("yes"), "{}", corroborated(&paid.body));
        assert!(!paid.body.contains("not corroborated"));

        // The filter, as the form sends it; offered in the form and kept selected.
        assert!(all.body.contains("name=\"corroborated\""), "the form offers the filter");
        let un = dash.get("/admin/ui/installations?q=&license=active&corroborated=false&sort=installed_at&limit=50").await;
        assert_eq!(un.status, 200, "{}", un.body);
        assert_eq!(total_of(&un.body), 1);
        assert!(un.body.contains("/installations/ck-lic\"") && !un.body.contains("/installations/ck-paid\""));
        assert!(un.body.contains("<option value=\"false\" selected>"), "{}", un.body);
        let csv_link = link_after(&un.body, "<div class=\"listhead\">").expect("a CSV link");
        assert!(csv_link.contains("corroborated=false"), "{csv_link}");
        let csv = dash.get(&csv_link).await;
        assert_eq!(csv.body.lines().count(), 2, "{}", csv.body);
        assert!(csv.body.lines().nth(1).unwrap().starts_with("ck-lic,"));
        let page = dash.get("/admin/ui/installations?corroborated=false&sort=base_url&limit=1").await;
        assert_eq!(total_of(&page.body), 2, "ck-lic and ck-none");
        let next = link_after(&page.body, "rel=\"next\" ").expect("a next page");
        assert!(next.contains("corroborated=false"), "{next}");
        let yes = dash.get("/admin/ui/installations?corroborated=true").await;
        assert_eq!(total_of(&yes.body), 1);
        assert!(yes.body.contains("/installations/ck-paid\""));
        let bad = dash.get("/admin/ui/installations?corroborated=maybe").await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("corroborated:"), "{}", bad.body);
    }
}

both_backends! {
    /// The new filters echo what they were given: a hostile value is shown as text only.
    async fn hostile_filter_values_stay_text(backend) {
        let app = spawn_admin(backend).await;
        install_at(&app, "ck-1", "s", "one").await;
        let mut dash = Dash::new(&app);
        dash.sign_in(ADMIN).await;
        let evil = "%3Cscript%3Ealert(1)%3C%2Fscript%3E%22%3E%3Cb%3Ex%3C%2Fb%3E";
        for (q, field) in [(format!("flavour={evil}"), "flavour"), (format!("corroborated={evil}"), "corroborated")] {
            let a = dash.get(&format!("/admin/ui/installations?{q}")).await;
            assert_eq!(a.status, 400, "{q}");
            assert!(a.body.contains(&format!("{field}:")), "{q}: {}", a.body);
            assert!(a.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{q}: shown as text: {}", a.body);
            assert!(!a.body.contains("<script>alert") && !a.body.contains("<b>x</b>"), "{q}");
        }
        // A valid filter with a hostile search: the links that carry both are escaped.
        let a = dash.get(&format!("/admin/ui/installations?flavour=connect_on_forge&corroborated=false&q={evil}")).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(!a.body.contains("<script>alert") && !a.body.contains("<b>x</b>"));
        let csv_link = link_after(&a.body, "<div class=\"listhead\">").expect("a CSV link");
        assert!(csv_link.contains("flavour=connect_on_forge") && csv_link.contains("corroborated=false"), "{csv_link}");
        // The search travels percent-encoded: its `<` and `"` cannot end the attribute or open a tag.
        assert!(csv_link.contains("q=%3Cscript%3E") && csv_link.contains("%22%3E%3Cb%3E"), "{csv_link}");
    }
}

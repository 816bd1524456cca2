//! The dashboard in a real browser: headless Chromium from the distribution's packages
//! (`chromium`, `chromium-driver`), driven over WebDriver by `fantoccini`, against the real
//! server on port 0. A vendor's Monday morning: sign in, filter by licence state and by
//! flavour, search, open an installation, extend its trial by 30 days and see the new end date, grant free use,
//! create an access token and read it once, sign out.
//!
//! Without Chromium the test says it was skipped and passes; with `CI=true` it fails instead.
//! `CHROMIUM` and `CHROMEDRIVER` name other binaries. It runs once per `cargo test`, on
//! PostgreSQL when `TEST_DATABASE_URL` is set and on SQLite otherwise (so CI's two runs cover
//! both); the pages themselves do not depend on the backend.
//!
//! `DASHBOARD_SCREENSHOTS=/some/dir` also saves every page at 1280 px and 390 px wide (for a
//! person to look at; nothing is compared).

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Utc};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::admin::{admin_json, install_at, set_marketplace};
use crate::helpers::*;

/// The Forge-only installation's id.
const FORGE_UUID: &str = "b1b2c3d4-0000-4e5f-8a9b-0c1d2e3f4a5b";

/// The longest any one step may take (Chromium on a busy 2-core machine is slow to start).
const STEP: Duration = Duration::from_secs(30);
/// The whole test, so that nothing can hang `cargo test`.
const WHOLE: Duration = Duration::from_secs(300);

/// The first of `names` found on `PATH`, or the file `env` names.
fn program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(n))
            .find(|p| p.is_file())
    })
}

/// A running chromedriver in a process group of its own: dropping it kills the group, so the
/// browser it started goes too, whatever the test did.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(binary: &Path) -> Driver {
        let mut child = Command::new(binary)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        // "ChromeDriver was started successfully on port 12345."
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("started successfully on port ").nth(1)
                    && let Ok(port) = rest.trim_end_matches('.').trim().parse::<u16>()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let mut driver = Driver {
            child,
            url: String::new(),
        };
        let port = rx
            .recv_timeout(STEP)
            .expect("chromedriver did not say its port");
        driver.url = format!("http://127.0.0.1:{port}");
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: killpg only sends a signal; the group is the one made for this child.
        unsafe {
            libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-extensions", "--window-size=1280,900",
                     "--lang=en-US", format!("--user-data-dir={}", profile.display())],
        },
        "timeouts": {"pageLoad": 30_000, "script": 10_000, "implicit": 0},
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// Polls `f` until it gives a value, for at most [`STEP`].
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// Waits until the element `css` shows `want`.
async fn wait_text(c: &Client, css: &str, want: &str) {
    until(&format!("{css} to read {want:?}"), || async {
        (text(c, css).await.as_deref() == Some(want)).then_some(())
    })
    .await
}

/// Waits until the browser is at `path` and returns the query.
async fn wait_path(c: &Client, path: &str) -> String {
    until(&format!("the page {path}"), || async {
        let url = c.current_url().await.ok()?;
        (url.path() == path).then(|| url.query().unwrap_or_default().to_owned())
    })
    .await
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn total(c: &Client) -> String {
    until("#total", || text(c, "#total")).await
}

/// The client keys of the rows on the Installations page, or `None` when the page changed
/// under the read (a row found, then gone: WebDriver's stale element reference, seen when a
/// search's page load lands between the find and the read).
async fn try_listed(c: &Client) -> Option<Vec<String>> {
    let mut keys = vec![];
    for a in c.find_all(Locator::Css("a.detail")).await.ok()? {
        let href = a.attr("href").await.ok()?.unwrap_or_default();
        keys.push(href.rsplit('/').next().unwrap_or_default().to_owned());
    }
    keys.sort();
    Some(keys)
}

/// [`try_listed`], read again until the page holds still.
async fn listed(c: &Client) -> Vec<String> {
    until("the installations list", || try_listed(c)).await
}

/// No alert is open: nothing the pages showed ran a script.
async fn no_alert(c: &Client) {
    assert!(c.get_alert_text().await.is_err(), "a script ran");
    assert!(
        c.find_all(Locator::Css("a[href^='javascript'], a[href^='JAVASCRIPT']"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// With `DASHBOARD_SCREENSHOTS` set: the current page at a laptop's and a phone's width.
async fn shoot(c: &Client, name: &str) {
    let Some(dir) = std::env::var_os("DASHBOARD_SCREENSHOTS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (w, h) in [(1280, 1400), (390, 2600)] {
        c.set_window_size(w, h).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let png = c.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}-{w}.png")), png).unwrap();
    }
    c.set_window_size(1280, 900).await.unwrap();
}

/// Runs `script` in the page until it returns a value of type `T` (it returns `null` while the
/// page is not ready, e.g. before a window resize has taken effect).
async fn script_until<T: serde::de::DeserializeOwned>(c: &Client, what: &str, script: &str) -> T {
    until(what, || async {
        let found = c.execute(script, vec![]).await.ok()?;
        serde_json::from_value(found).ok()
    })
    .await
}

/// The current page at a phone's width: it does not scroll sideways (wide content such as the
/// weekly chart scrolls inside its own box), and in the table cards each column's name ends
/// before the cell's content starts (a wider-screen rule once overrode the cards' padding and
/// drew names over values; the charts once widened the whole page).
async fn phone_layout_holds(c: &Client) {
    c.set_window_size(390, 900).await.unwrap();
    let faults: Vec<String> = script_until(
        c,
        "the phone layout",
        "if (window.innerWidth > 400) { return null; }
                 const out = [];
                 const doc = document.documentElement;
                 if (doc.scrollWidth > doc.clientWidth) {
                   const wide = [...document.querySelectorAll('body *')]
                     .filter(e => e.getBoundingClientRect().right > doc.clientWidth + 1)
                     .slice(0, 4)
                     .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
                       + (typeof e.className === 'string' && e.className ? '.' + e.className.trim().split(/ +/).join('.') : ''));
                   out.push('the page is ' + doc.scrollWidth + ' px wide in a ' + doc.clientWidth + '-px window: ' + wide.join(', '));
                 }
                 for (const td of document.querySelectorAll('table td[data-label]')) {
                   const before = getComputedStyle(td, '::before');
                   if (before.position !== 'absolute') { return null; }
                   const labelEnd = parseFloat(before.left) + parseFloat(before.width);
                   const contentStart = parseFloat(getComputedStyle(td).paddingLeft);
                   if (contentStart < labelEnd) {
                     out.push(td.dataset.label + ': content at ' + contentStart + ' px, name to ' + labelEnd + ' px');
                   }
                 }
                 return out;",
    )
    .await;
    let page = c
        .current_url()
        .await
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    assert!(faults.is_empty(), "{page} at 390 px: {faults:?}");
    c.set_window_size(1280, 900).await.unwrap();
}

/// On a laptop's screen the charts' text (drawn in SVG units, so scaled with each chart's box)
/// is at least 8 px high: a chart in a column much narrower than its drawing once shrank it to
/// about 5 px.
async fn chart_text_is_readable(c: &Client) {
    c.set_window_size(1280, 900).await.unwrap();
    let smallest: f64 = script_until(
        c,
        "the charts at 1280 px",
        "if (window.innerWidth < 1200) { return null; }
         const texts = [...document.querySelectorAll('svg.chart text')];
         if (texts.length === 0) { return null; }
         return Math.min(...texts.map(t => t.getBoundingClientRect().height));",
    )
    .await;
    assert!(
        smallest >= 8.0,
        "the smallest chart text is {smallest:.1} px high"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_works_through_the_dashboard_in_chromium() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let chromium = program(
        "CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let chromedriver = program("CHROMEDRIVER", &["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        assert!(
            !ci,
            "CI=true but Chromium or chromedriver is missing (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED browser test: chromium and chromedriver not found (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let backend = if std::env::var("TEST_DATABASE_URL").is_ok() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&chromedriver);
    let client = tokio::time::timeout(STEP * 2, browser(&driver, &chromium, profile.path()))
        .await
        .expect("Chromium started in time");
    let run = tokio::time::timeout(WHOLE, monday_morning(backend, &client)).await;
    let _ = client.close().await;
    drop(driver);
    run.expect("the browser test finished in time");
}

async fn monday_morning(backend: Backend, c: &Client) {
    let app = crate::forge::spawn_forge(backend, &[("ADMIN_TOKEN", crate::admin::ADMIN)]).await;
    let now = Utc::now();
    let admin =
        connect_keeper::registry::admin_tokens::create(&app.state.db, "browser-admin", "test", now)
            .await
            .unwrap();
    install_at(&app, "br-trial", "secret-t", "trial-site").await;
    set_marketplace(
        &app,
        "br-trial",
        "Trial Co",
        "t@trial.example",
        "EVALUATION",
        Some(now + chrono::Duration::days(10)),
    )
    .await;
    install_at(&app, "br-active", "secret-a", "active-site").await;
    set_marketplace(
        &app,
        "br-active",
        "Acme Paying Ltd",
        "ops@acme.example",
        "COMMERCIAL",
        None,
    )
    .await;
    install_at(&app, "br-evil", "secret-e", "evil-site").await;
    set_marketplace(
        &app,
        "br-evil",
        "<script>alert(1)</script>",
        "x@evil.example",
        "COMMERCIAL",
        None,
    )
    .await;
    crate::on_db!(&app.state.db, |p| {
        sqlx::query("UPDATE installations SET base_url = 'javascript:alert(2)' WHERE client_key = 'br-evil'")
            .execute(p).await.map(|_| ())
    })
    .unwrap();
    // Besides those Connect-on-Forge tenants (their `installed` names a Forge installation),
    // a plain Connect tenant and a Forge-only installation, known from a FIT.
    let mut plain = installed_payload("br-plain", "secret-p", &crate::admin::site(&app, "plain"));
    plain.as_object_mut().unwrap().remove("installationId");
    app.install_payload(&plain).await;
    // Its product's page said `lic=active`, and nothing else backs it: "not corroborated".
    crate::dashboard::seen_with_lic_active(&app, "br-plain", "secret-p").await;
    let mut claims = crate::forge::fit_claims_for(FORGE_UUID, "cloud-of-the-forge-site");
    claims["context"]["siteUrl"] = json!("https://forge-only.atlassian.net");
    claims["app"]["license"] = json!({"active": true});
    let res = crate::forge::with_fit(&app, "GET", "/api/whoami", &crate::forge::fit(&claims)).await;
    assert_eq!(res.status(), 200);
    let ui = |path: &str| app.url(&format!("/admin/ui{path}"));

    // Sign in: a page asks for the token first.
    c.goto(&ui("/")).await.unwrap();
    wait_path(c, "/admin/ui/login").await;
    shoot(c, "login").await;
    fill(c, "#token", "not-a-token").await;
    click(c, "form button[type=submit]").await;
    until("the refusal", || async {
        text(c, "p.error").await.filter(|t| t.contains("not valid"))
    })
    .await;
    fill(c, "#token", &admin.token).await;
    click(c, "form button[type=submit]").await;
    wait_path(c, "/admin/ui/").await;
    wait_text(c, "header.top .actor", "browser-admin").await;
    shoot(c, "overview").await;
    phone_layout_holds(c).await;
    chart_text_is_readable(c).await;

    // Installations: all five, then only the trial by the licence filter.
    click(c, "header.top nav a[href$='/installations']").await;
    wait_path(c, "/admin/ui/installations").await;
    assert_eq!(total(c).await, "5");
    no_alert(c).await;
    assert!(
        c.source()
            .await
            .unwrap()
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
    assert_eq!(
        text(c, ".uncorroborated").await.as_deref(),
        Some("not corroborated"),
        "br-plain is active on its own word only"
    );
    shoot(c, "installations").await;
    phone_layout_holds(c).await;
    click(c, "form.filters summary").await;
    click(c, "input[name=license][value=trial]").await;
    click(c, "form.filters .actions button[type=submit]").await;
    let query = until("the filtered page", || async {
        let q = c
            .current_url()
            .await
            .ok()?
            .query()
            .unwrap_or_default()
            .to_owned();
        q.contains("license=trial").then_some(q)
    })
    .await;
    assert!(query.contains("license=trial"), "{query}");
    wait_text(c, "#total", "1").await;
    assert_eq!(listed(c).await, ["br-trial"]);
    shoot(c, "installations-trial").await;

    // Only the Forge installation by the flavour filter (the licence box unticked; the
    // filters stay open on a filtered page).
    click(c, "input[name=license][value=trial]").await;
    click(c, "input[name=flavour][value=forge]").await;
    click(c, "form.filters .actions button[type=submit]").await;
    wait_text(c, "#total", "1").await;
    let forge_key = listed(c).await;
    assert_eq!(forge_key.len(), 1);
    assert!(forge_key[0].contains(FORGE_UUID), "{forge_key:?}");
    assert_eq!(
        text(c, "td[data-label=Flavour]").await.as_deref(),
        Some("forge")
    );
    // Its page: no Connect client key, known by its Forge installation.
    click(c, "a.detail").await;
    until("the Forge installation's page", || async {
        let url = c.current_url().await.ok()?;
        url.path().contains(FORGE_UUID).then_some(())
    })
    .await;
    wait_text(c, "#license-state", "active").await;
    shoot(c, "installation-forge").await;
    phone_layout_holds(c).await;
    c.back().await.unwrap();
    wait_path(c, "/admin/ui/installations").await;

    // Search (the filters cleared first).
    click(c, "form.filters .actions a").await;
    wait_text(c, "#total", "5").await;
    fill(c, "#q", "acme").await;
    click(c, ".searchrow button").await;
    wait_text(c, "#total", "1").await;
    assert_eq!(listed(c).await, ["br-active"]);
    fill(c, "#q", "trial co").await;
    click(c, ".searchrow button").await;
    until("the search for trial co", || async {
        (try_listed(c).await? == ["br-trial"]).then_some(())
    })
    .await;

    // Open the installation.
    click(c, "a.detail").await;
    wait_path(c, "/admin/ui/installations/br-trial").await;
    wait_text(c, "#license-state", "trial").await;
    let before = text(c, "#effective-trial-end").await.unwrap();
    let before = NaiveDateTime::parse_from_str(&before, "%Y-%m-%d %H:%M UTC").unwrap();

    // Extend the trial by 30 days: the page shows the new end (30 days after the old one,
    // which was still ahead).
    fill(c, "#days", "30").await;
    fill(c, "#trial-reason", "asked for a month more").await;
    click(c, "form[action$='/trial-extension'] button[type=submit]").await;
    wait_text(c, "p.notice", "The trial was extended.").await;
    let after = text(c, "#effective-trial-end").await.unwrap();
    assert_eq!(
        after,
        (before + chrono::Duration::days(30))
            .format("%Y-%m-%d %H:%M UTC")
            .to_string()
    );
    let d = admin_json(&app, "/admin/installations/br-trial").await;
    assert!(
        d["license"]["effective_trial_end"]
            .as_str()
            .unwrap()
            .starts_with(
                &(before + chrono::Duration::days(30))
                    .format("%Y-%m-%dT%H:%M")
                    .to_string()
            )
    );

    // Grant free use.
    fill(c, "#grant-reason", "design partner").await;
    click(c, "form[action$='/grants'] button[type=submit]").await;
    wait_text(c, "p.notice", "Free use was granted.").await;
    wait_text(c, "#license-state", "free").await;
    // Asked again with no end: refused (409), the reason beside the form, the reason kept.
    fill(c, "#grant-reason", "again").await;
    click(c, "form[action$='/grants'] button[type=submit]").await;
    until("the refused grant", || async {
        text(c, "p.error")
            .await
            .filter(|t| t.contains("free use with no end"))
    })
    .await;
    shoot(c, "installation-refused").await;
    phone_layout_holds(c).await;

    // An access token for this site: shown once, then never again.
    fill(c, "#token-note", "pilot team").await;
    click(c, "form[action$='/access-tokens'] button[type=submit]").await;
    wait_text(c, "p.notice", "The access token was created.").await;
    let field = c.find(Locator::Css("#new-token-value")).await.unwrap();
    let token = field.prop("value").await.unwrap().unwrap_or_default();
    assert!(token.len() >= 40, "{token}");
    let url = c
        .find(Locator::Css("#new-token-url"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(url.contains(&token), "{url}");
    shoot(c, "installation").await;
    phone_layout_holds(c).await;
    c.refresh().await.unwrap();
    wait_text(c, "#license-state", "free").await;
    assert!(
        c.find_all(Locator::Css("#new-token-value"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!c.source().await.unwrap().contains(&token), "shown once");
    // It is the real token: the site can redeem it.
    let jwt = hs256_context("br-trial", "secret-t", json!({}));
    let res = app
        .client
        .post(app.url("/api/access-tokens/redeem"))
        .header("authorization", format!("JWT {jwt}"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Each action is in the audit trail under the token's name.
    let d = admin_json(&app, "/admin/installations/br-trial").await;
    let by_admin: Vec<&str> = d["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "browser-admin")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        by_admin,
        [
            "trial_extension.create",
            "grant.create",
            "access_token.create"
        ]
    );

    // The other pages.
    click(c, "header.top nav a[href$='/access-tokens']").await;
    wait_path(c, "/admin/ui/access-tokens").await;
    until("the token in the list", || async {
        text(c, "main").await.filter(|t| t.contains("pilot team"))
    })
    .await;
    shoot(c, "access-tokens").await;
    phone_layout_holds(c).await;
    click(c, "header.top nav a[href$='/marketplace']").await;
    wait_path(c, "/admin/ui/marketplace").await;
    shoot(c, "marketplace").await;
    phone_layout_holds(c).await;
    c.goto(&ui("/installations/br-evil")).await.unwrap();
    wait_path(c, "/admin/ui/installations/br-evil").await;
    no_alert(c).await;
    shoot(c, "installation-hostile").await;
    c.goto(&ui("/nowhere")).await.unwrap();
    shoot(c, "not-found").await;

    // Sign out: back to the sign-in page, and the pages want a session again.
    click(c, "header.top form.signout button").await;
    wait_path(c, "/admin/ui/login").await;
    c.goto(&ui("/installations")).await.unwrap();
    wait_path(c, "/admin/ui/login").await;
}

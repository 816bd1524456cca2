//! The dashboard's HTML, written with `maud`: templates are Rust expressions checked at compile
//! time, and every `(value)` they interpolate is HTML-escaped (text and attribute values
//! alike). Nothing here uses `PreEscaped` on data, so a company named `<script>` is text.
//!
//! One thing escaping does not cover is a URL's scheme: `href="javascript:…"` is escaped and
//! still runs. Links to sites therefore go through [`site_link`], which makes a link only of
//! an `http`/`https` URL and shows anything else as plain text.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::domain::Flavour;
use crate::registry::{list_query, views};

/// The stylesheet and the little script, compiled into the binary.
pub const STYLESHEET: &str = include_str!("../../assets/dashboard.css");
pub const SCRIPT: &str = include_str!("../../assets/dashboard.js");

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Installations,
    AccessTokens,
    Marketplace,
    None,
}

/// What every signed-in page needs: where the dashboard is, and the session's CSRF token.
pub struct Ctx {
    pub root: String,
    pub csrf: String,
    pub actor: String,
}

/// `text/html` with the given status.
pub fn html_response(status: StatusCode, page: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(page.into_string())
}

fn head(root: &str, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="same-origin";
            title { (title) " · connect-keeper" }
            link rel="stylesheet" href={ (root) "/assets/dashboard.css" };
            script src={ (root) "/assets/dashboard.js" } defer {}
        }
    }
}

/// The shared layout of signed-in pages: navigation, the signed-in actor, sign-out.
pub fn layout(ctx: &Ctx, title: &str, nav: Nav, content: Markup) -> Markup {
    let r = &ctx.root;
    let item = |n: Nav, href: String, label: &str| {
        html! {
            li { a href=(href) aria-current=[(n == nav).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(r, title))
            body {
                header.top {
                    a.brand href={ (r) "/" } { "connect-keeper" }
                    nav {
                        ul {
                            (item(Nav::Overview, format!("{r}/"), "Overview"))
                            (item(Nav::Installations, format!("{r}/installations"), "Installations"))
                            (item(Nav::AccessTokens, format!("{r}/access-tokens"), "Access tokens"))
                            (item(Nav::Marketplace, format!("{r}/marketplace"), "Marketplace"))
                        }
                    }
                    form.signout method="post" action={ (r) "/logout" } {
                        (csrf_field(ctx))
                        span.actor title="signed in as" { (ctx.actor) }
                        button type="submit" { "Sign out" }
                    }
                }
                main { (content) }
            }
        }
    }
}

pub fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(ctx.csrf); }
}

/// A page outside a session (sign-in, errors before a session is known).
fn bare(root: &str, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(root, title))
            body.bare { main { (content) } }
        }
    }
}

/// The sign-in form; `error` is shown above it.
pub fn login(root: &str, error: Option<&str>) -> Markup {
    bare(
        root,
        "Sign in",
        html! {
            section.card.login {
                h1 { "connect-keeper" }
                p { "Sign in with an admin token (one made by " code { "connect-keeper admin-token create" } ", or ADMIN_TOKEN)." }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form method="post" action={ (root) "/login" } {
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" required autocomplete="current-password" autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// A short page for an error or a refusal, with a way back.
pub fn status_page(status: StatusCode, root: &str, title: &str, message: &str) -> HttpResponse {
    html_response(
        status,
        bare(
            root,
            title,
            html! {
                section.card {
                    h1 { (title) }
                    p { (message) }
                    p { a href={ (root) "/" } { "Back to the dashboard" } " · " a href={ (root) "/login" } { "Sign in" } }
                }
            },
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Small pieces
// ---------------------------------------------------------------------------------------

/// `2026-12-03 14:05 UTC` in a `<time>` element; `—` for none.
pub fn time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => html! {
            time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
                (t.format("%Y-%m-%d %H:%M UTC"))
            }
        },
        None => html! { span.none { "—" } },
    }
}

/// Only the date, for compact tables.
pub fn date(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => html! {
            time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                title=(t.format("%Y-%m-%d %H:%M UTC")) { (t.format("%Y-%m-%d")) }
        },
        None => html! { span.none { "—" } },
    }
}

pub fn text(s: Option<&str>) -> Markup {
    known(s).unwrap_or_else(|| html! { span.none { "—" } })
}

/// A period, "start → end" (an unknown end as "—"); a single "—" when neither end is known.
fn period(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Markup {
    if start.is_none() && end.is_none() {
        return time(None);
    }
    html! { (time(start)) " → " (time(end)) }
}

/// A text value when there is one (empty counts as none, as for [`text`]).
fn known(s: Option<&str>) -> Option<Markup> {
    s.filter(|s| !s.is_empty()).map(|s| html! { (s) })
}

/// Values that belong together, e.g. a value and when it was seen, separated by " · "; a single
/// "—" when none is known.
fn joined<const N: usize>(parts: [Option<Markup>; N]) -> Markup {
    let known: Vec<Markup> = parts.into_iter().flatten().collect();
    if known.is_empty() {
        return text(None);
    }
    html! {
        @for (n, part) in known.into_iter().enumerate() {
            @if n > 0 { " · " }
            (part)
        }
    }
}

/// True for a URL a browser may follow: `http` or `https` with a host. `javascript:`,
/// `data:` and the rest are not links.
pub fn is_web_url(raw: &str) -> bool {
    url::Url::parse(raw)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false)
}

/// A site's base URL as a link when it is a web URL, as text otherwise.
pub fn site_link(raw: &str) -> Markup {
    if is_web_url(raw) {
        html! { a.site href=(raw) rel="noopener noreferrer nofollow" { (raw) } }
    } else {
        html! { span.site.unsafe-url title="not an http(s) URL: not a link" { (raw) } }
    }
}

/// A short "open site" link under a table row's title (the title already shows the URL), or a
/// warning when the URL is not a web URL.
fn open_site(raw: &str) -> Markup {
    if is_web_url(raw) {
        html! { a.site href=(raw) rel="noopener noreferrer nofollow" { "open site ↗" } }
    } else {
        html! { span.unsafe-url title="not an http(s) URL: not a link" { "not a web URL" } }
    }
}

/// A badge for a status or licence state (the class is chosen from known values only).
pub fn badge(value: &str) -> Markup {
    let class = match value {
        "active" | "enabled" | "installed" => "good",
        "trial" => "trial",
        "free" => "free",
        "unlicensed" | "disabled" => "warn",
        "uninstalled" => "muted",
        _ => "plain",
    };
    html! { span class={ "badge " (class) } { (value) } }
}

/// An installation's flavour (`connect`, `connect_on_forge`, `forge`), allowed to wrap after
/// its underscores so the table column stays narrow.
pub fn flavour(value: &str) -> Markup {
    let mut parts = value.split_inclusive('_').peekable();
    html! {
        span.flavour {
            @while let Some(p) = parts.next() { (p) @if parts.peek().is_some() { wbr; } }
        }
    }
}

/// An e-mail address that may wrap before its `@` (and, when a column is narrower than a part,
/// inside it), but is not cut mid-word while the table has room.
pub fn email(address: &str) -> Markup {
    match address.split_once('@') {
        Some((local, domain)) => html! { (local) wbr; "@" (domain) },
        None => html! { (address) },
    }
}

/// The text mark of an `active` licence that no outside source (product licence endpoint,
/// Marketplace, Forge) backs: only what the site's own requests said (`lic`), which a staging
/// install or a forged iframe URL can say too. Text, not colour alone, so a screen reader and a
/// printout carry it; other states need no mark (a grant is the vendor's own word).
pub fn uncorroborated_mark(l: &views::License) -> Markup {
    html! {
        @if l.state == "active" && !l.corroborated {
            " " span.uncorroborated title="No outside source (product licence endpoint, Marketplace, Forge) says this site is licensed: only its own requests did." {
                "not corroborated"
            }
        }
    }
}

/// The path segment for a client key (client keys are free text from the site).
pub fn seg(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

fn notice(message: Option<&str>) -> Markup {
    html! { @if let Some(m) = message { p.notice role="status" { (m) } } }
}

fn error_box(message: Option<&str>) -> Markup {
    html! { @if let Some(m) = message { p.error role="alert" { (m) } } }
}

// ---------------------------------------------------------------------------------------
// Installations
// ---------------------------------------------------------------------------------------

/// The list form's values as the user sent them (empty ones dropped), to fill the form again
/// and to build the links to the next page and to the CSV.
#[derive(Clone, Debug, Default)]
pub struct ListForm {
    pub status: Vec<String>,
    pub license: Vec<String>,
    pub product: Vec<String>,
    pub flavour: Vec<String>,
    pub q: String,
    pub trial_ends_before: String,
    /// `true`, `false` or empty (either).
    pub corroborated: String,
    pub sort: String,
    pub limit: String,
    pub cursor: String,
}

impl ListForm {
    pub fn from_query(query: &str) -> ListForm {
        let mut f = ListForm::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let v = v.trim().to_owned();
            if v.is_empty() {
                continue;
            }
            // The check-box fields, each a list (repeated, or comma-separated in a link).
            let list = match k.as_ref() {
                "status" => Some(&mut f.status),
                "license" => Some(&mut f.license),
                "product" => Some(&mut f.product),
                "flavour" => Some(&mut f.flavour),
                _ => None,
            };
            if let Some(list) = list {
                list.extend(v.split(',').map(|s| s.trim().to_owned()));
                continue;
            }
            match k.as_ref() {
                "q" => f.q = v,
                "trial_ends_before" => f.trial_ends_before = v,
                "corroborated" => f.corroborated = v,
                "sort" => f.sort = v,
                "limit" => f.limit = v,
                "cursor" => f.cursor = v,
                _ => {}
            }
        }
        f
    }

    /// The query string of the API for this filter (and `cursor` when given).
    pub fn to_query(&self, cursor: Option<&str>) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, vs) in [
            ("status", &self.status),
            ("license", &self.license),
            ("product", &self.product),
            ("flavour", &self.flavour),
        ] {
            if !vs.is_empty() {
                s.append_pair(k, &vs.join(","));
            }
        }
        for (k, v) in [
            ("q", &self.q),
            ("trial_ends_before", &self.trial_ends_before),
            ("corroborated", &self.corroborated),
            ("sort", &self.sort),
            ("limit", &self.limit),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        if let Some(c) = cursor {
            s.append_pair("cursor", c);
        }
        s.finish()
    }

    fn filtered(&self) -> bool {
        !(self.status.is_empty()
            && self.license.is_empty()
            && self.product.is_empty()
            && self.flavour.is_empty()
            && self.q.is_empty()
            && self.trial_ends_before.is_empty()
            && self.corroborated.is_empty())
    }
}

const STATUSES: [&str; 4] = ["installed", "enabled", "disabled", "uninstalled"];
const LICENSES: [&str; 4] = ["active", "trial", "free", "unlicensed"];
/// The `corroborated` filter: its values and what the form calls them.
const CORROBORATED: [(&str, &str); 3] = [("", "either"), ("false", "no"), ("true", "yes")];
const SORTS: [(&str, &str); 4] = [
    ("installed_at", "Installed, oldest first"),
    ("-installed_at", "Installed, newest first"),
    ("trial_end", "Trial end, soonest first"),
    ("base_url", "Site URL"),
];
const LIMITS: [&str; 4] = ["25", "50", "100", "500"];

fn checkboxes(name: &str, values: &[&str], chosen: &[String]) -> Markup {
    html! {
        @for v in values {
            label.check {
                input type="checkbox" name=(name) value=(v) checked[chosen.iter().any(|c| c == v)];
                (v)
            }
        }
    }
}

fn list_filters(ctx: &Ctx, f: &ListForm) -> Markup {
    let limit = if f.limit.is_empty() { "50" } else { &f.limit };
    html! {
        form.filters method="get" action={ (ctx.root) "/installations" } role="search" {
            div.searchrow {
                label.sr-only for="q" { "Search" }
                input #q type="search" name="q" value=(f.q) maxlength="200"
                    placeholder="Site URL, company or contact e-mail";
                button type="submit" { "Search" }
            }
            details open[f.filtered() || !f.sort.is_empty()] {
                summary { "Filters and sort" }
                div.filtergrid {
                    fieldset { legend { "Status" } (checkboxes("status", &STATUSES, &f.status)) }
                    fieldset {
                        legend { "Licence" }
                        (checkboxes("license", &LICENSES, &f.license))
                        label for="corroborated" { "Corroborated by an outside source" }
                        select #corroborated name="corroborated" {
                            @for (v, label) in CORROBORATED {
                                option value=(v) selected[f.corroborated == v] { (label) }
                            }
                        }
                    }
                    fieldset { legend { "Product" } (checkboxes("product", &list_query::PRODUCTS, &f.product)) }
                    fieldset { legend { "Flavour" } (checkboxes("flavour", &Flavour::ALL.map(Flavour::as_str), &f.flavour)) }
                    fieldset {
                        legend { "Trial" }
                        label for="teb" { "Trial ends before" }
                        input #teb type="date" name="trial_ends_before" value=(f.trial_ends_before);
                    }
                    fieldset {
                        legend { "Order" }
                        label for="sort" { "Sort" }
                        select #sort name="sort" {
                            @for (v, label) in SORTS {
                                option value=(v) selected[f.sort == v || (f.sort.is_empty() && v == "installed_at")] { (label) }
                            }
                        }
                        label for="limit" { "Per page" }
                        select #limit name="limit" {
                            @for v in LIMITS { option value=(v) selected[limit == v] { (v) } }
                        }
                    }
                }
                div.actions {
                    button type="submit" { "Apply" }
                    a href={ (ctx.root) "/installations" } { "Clear" }
                }
            }
        }
    }
}

/// The Installations page: the filter form, the total, the table, paging and the CSV link.
pub fn installations(
    ctx: &Ctx,
    form: &ListForm,
    page: Option<&views::InstallationPage>,
    error: Option<&str>,
) -> Markup {
    let r = &ctx.root;
    let csv = format!("{r}/installations.csv?{}", form.to_query(None));
    let content = html! {
        h1 { "Installations" }
        (list_filters(ctx, form))
        (error_box(error))
        @if let Some(page) = page {
            div.listhead {
                p.total { strong #total { (page.total) } " installation" @if page.total != 1 { "s" } @if form.filtered() { " match" } }
                a.button.secondary href=(csv) download="installations.csv" { "Download CSV" }
            }
            @if page.items.is_empty() {
                p.empty { "No installation matches." }
            } @else {
                div.tablewrap {
                    table.installations {
                        thead { tr {
                            th { "Site" } th { "Product" } th { "Flavour" } th { "Status" } th { "Licence" }
                            th { "Tier" } th { "Company" } th { "Technical contact" }
                            th { "Trial ends" } th { "Installed" } th { "Last seen" }
                        } }
                        tbody {
                            @for i in &page.items { (installation_row(ctx, i)) }
                        }
                    }
                }
            }
            nav.paging aria-label="pages" {
                @if !form.cursor.is_empty() {
                    a href={ (r) "/installations?" (form.to_query(None)) } { "« First page" }
                }
                @if let Some(next) = &page.next_cursor {
                    a.next rel="next" href={ (r) "/installations?" (form.to_query(Some(next))) } { "Next page »" }
                }
            }
        }
    };
    layout(ctx, "Installations", Nav::Installations, content)
}

fn installation_row(ctx: &Ctx, i: &views::Installation) -> Markup {
    let l = &i.license;
    let c = i.customer.as_ref();
    let tc = c.and_then(|c| c.technical_contact.as_ref());
    html! {
        tr {
            td data-label="Site" {
                a.detail href={ (ctx.root) "/installations/" (seg(&i.key)) } { (i.base_url) }
                div.sub { (open_site(&i.base_url)) }
            }
            td data-label="Product" { (i.product_type) }
            td data-label="Flavour" { (flavour(&i.flavour)) }
            td data-label="Status" { (badge(&i.status)) }
            td data-label="Licence" {
                (badge(&l.state))
                @if let Some(s) = &l.source { " " span.sub { "via " (s) } }
                (uncorroborated_mark(l))
            }
            td data-label="Tier" {
                (text(l.tier.as_deref()))
                @if let Some(n) = l.user_count { span.sub { " (" (n) ")" } }
            }
            td data-label="Company" { (text(c.and_then(|c| c.company.as_deref()))) }
            td data-label="Technical contact" {
                (text(tc.and_then(|t| t.name.as_deref())))
                @if let Some(e) = tc.and_then(|t| t.email.as_deref()) { div.sub.email { (email(e)) } }
            }
            td data-label="Trial ends" { (date(l.effective_trial_end)) }
            td data-label="Installed" { (date(Some(i.installed_at))) }
            td data-label="Last seen" { (date(i.last_seen_at)) }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Installation
// ---------------------------------------------------------------------------------------

/// Which action form an error belongs to, so the message shows next to it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    TrialExtension,
    Grant,
    AccessToken,
}

/// Values of a refused action form, to show it again with the reason.
#[derive(Default)]
pub struct ActionForm {
    pub days: String,
    pub reason: String,
    pub ends_at: String,
    pub note: String,
    pub expires_at: String,
    /// The access token form's site (trimmed), and `installation` when it was sent from an
    /// Installation page.
    pub client_key: String,
    pub back: String,
}

pub struct ActionError<'a> {
    pub action: Action,
    pub message: &'a str,
    pub form: &'a ActionForm,
}

/// A freshly made access token, shown once.
pub struct Shown {
    pub id: String,
    pub token: String,
    pub install_url: String,
}

fn shown_token(s: &Shown) -> Markup {
    html! {
        section.card.secret #new-token {
            h2 { "New access token" }
            p { "Copy it now: it is shown this once and stored only as a hash." }
            label for="new-token-value" { "Token" }
            div.copyrow {
                input #new-token-value.mono type="text" readonly value=(s.token);
                button type="button" data-copy="new-token-value" hidden { "Copy" }
            }
            label for="new-token-url" { "Install URL (the descriptor carrying the token)" }
            div.copyrow {
                input #new-token-url.mono type="text" readonly value=(s.install_url);
                button type="button" data-copy="new-token-url" hidden { "Copy" }
            }
            p.sub { "Token id " code { (s.id) } }
        }
    }
}

fn dl_row(label: &str, value: Markup) -> Markup {
    html! { div { dt { (label) } dd { (value) } } }
}

fn contact(c: Option<&views::Contact>) -> Markup {
    match c {
        None => html! { span.none { "—" } },
        Some(c) => html! {
            (text(c.name.as_deref()))
            @if let Some(e) = c.email.as_deref() { br; (e) }
            @if let Some(p) = c.phone.as_deref() { br; (p) }
        },
    }
}

/// The Installation page: everything of the detail view and the actions.
pub fn installation(
    ctx: &Ctx,
    d: &views::InstallationDetail,
    done: Option<&str>,
    shown: Option<&Shown>,
    error: Option<ActionError<'_>>,
) -> Markup {
    let i = &d.installation;
    let l = &i.license;
    let r = &ctx.root;
    let key = seg(&i.key);
    let blank = ActionForm::default();
    let form_for = |a: Action| match &error {
        Some(e) if e.action == a => e.form,
        _ => &blank,
    };
    let err_for = |a: Action| match &error {
        Some(e) if e.action == a => Some(e.message),
        _ => None,
    };
    let now = crate::store::now();
    let content = html! {
        p.crumbs { a href={ (r) "/installations" } { "Installations" } " › " }
        h1.site-title { (i.base_url) }
        p.headline {
            (badge(&i.status)) " " (badge(&l.state))
            @if let Some(s) = &l.source { " " span.sub { "decided by " (s) } }
            (uncorroborated_mark(l))
            " · " (site_link(&i.base_url))
        }
        (notice(done))
        @if let Some(s) = shown { (shown_token(s)) }
        div.columns {
            section.card {
                h2 { "Licence" }
                dl.facts {
                    (dl_row("State", html! { span #license-state { (l.state) } }))
                    (dl_row("Source", text(l.source.as_deref())))
                    (dl_row("Corroborated", html! { span #license-corroborated {
                        @if l.corroborated { "yes: an outside source says active" }
                        @else { "no: no outside source (product licence endpoint, Marketplace, Forge) says active" }
                    } }))
                    (dl_row("Effective trial end", html! { span #effective-trial-end { (time(l.effective_trial_end)) } }))
                    (dl_row("Marketplace trial", period(l.trial_start, l.trial_end)))
                    (dl_row("Licence type", text(l.license_type.as_deref())))
                    (dl_row("Evaluation", text(l.evaluation.map(|e| if e { "yes" } else { "no" }))))
                    (dl_row("Tier", html! { (text(l.tier.as_deref())) @if let Some(n) = l.user_count { " (" (n) " users)" } }))
                    (dl_row("Maintenance", period(l.maintenance_start, l.maintenance_end)))
                    (dl_row("Marketplace status", text(l.marketplace_status.as_deref())))
                    (dl_row("Last lic seen", joined([known(l.lic_last_seen.as_deref()), l.lic_seen_at.map(|t| time(Some(t)))])))
                    (dl_row("Synced", time(l.synced_at)))
                }
            }
            section.card {
                h2 { "Customer" }
                @match &i.customer {
                    None => p.none { "No Marketplace data for this site yet." },
                    Some(c) => dl.facts {
                        (dl_row("Company", text(c.company.as_deref())))
                        (dl_row("Country", html! { (text(c.country.as_deref())) @if let Some(rg) = c.region.as_deref() { " (" (rg) ")" } }))
                        (dl_row("Technical contact", contact(c.technical_contact.as_ref())))
                        (dl_row("Billing contact", contact(c.billing_contact.as_ref())))
                    },
                }
                h2 { "Installation" }
                dl.facts {
                    (dl_row("Client key", html! { code { (i.client_key.as_deref().unwrap_or("none (Forge only)")) } }))
                    (dl_row("Flavour", flavour(&i.flavour)))
                    (dl_row("Product", html! { (i.product_type) }))
                    (dl_row("Display URL", text(i.display_url.as_deref())))
                    (dl_row("Description", text(i.description.as_deref())))
                    (dl_row("Cloud id", text(i.cloud_id.as_deref())))
                    (dl_row("Installation id", text(i.installation_id.as_deref())))
                    (dl_row("SEN", text(i.service_entitlement_number.as_deref())))
                    (dl_row("Entitlement", joined([known(i.entitlement_id.as_deref()), known(i.entitlement_number.as_deref())])))
                    (dl_row("Installed", time(Some(i.installed_at))))
                    (dl_row("Updated", time(Some(i.updated_at))))
                    (dl_row("Uninstalled", time(i.uninstalled_at)))
                    (dl_row("Last seen", time(i.last_seen_at)))
                }
            }
        }
        section.card #actions {
            h2 { "Actions" }
            div.actiongrid {
                form method="post" action={ (r) "/installations/" (key) "/trial-extension" } {
                    h3 { "Extend the trial" }
                    (csrf_field(ctx))
                    (error_box(err_for(Action::TrialExtension)))
                    label for="days" { "Days (1–365)" }
                    input #days type="number" name="days" min="1" max="365" required
                        value=(if form_for(Action::TrialExtension).days.is_empty() { "30" } else { &form_for(Action::TrialExtension).days });
                    label for="trial-reason" { "Reason" }
                    input #trial-reason type="text" name="reason" required maxlength="1000" value=(form_for(Action::TrialExtension).reason);
                    button type="submit" { "Extend trial" }
                }
                form method="post" action={ (r) "/installations/" (key) "/grants" } {
                    h3 { "Grant free use" }
                    (csrf_field(ctx))
                    (error_box(err_for(Action::Grant)))
                    label for="grant-ends" { "Until (date, UTC; empty for no end)" }
                    input #grant-ends type="date" name="ends_at" value=(form_for(Action::Grant).ends_at);
                    label for="grant-reason" { "Reason" }
                    input #grant-reason type="text" name="reason" required maxlength="1000" value=(form_for(Action::Grant).reason);
                    button type="submit" { "Grant free use" }
                }
                form method="post" action={ (r) "/access-tokens" } {
                    h3 { "Access token for this site" }
                    (csrf_field(ctx))
                    input type="hidden" name="client_key" value=(i.key);
                    input type="hidden" name="back" value="installation";
                    (error_box(err_for(Action::AccessToken)))
                    label for="token-note" { "Reason" }
                    input #token-note type="text" name="note" required maxlength="1000" value=(form_for(Action::AccessToken).note);
                    label for="token-expires" { "Expires (date, UTC; empty for never)" }
                    input #token-expires type="date" name="expires_at" value=(form_for(Action::AccessToken).expires_at);
                    button type="submit" { "Create access token" }
                }
            }
        }
        section.card {
            h2 { "Grants" }
            @if i.grants.is_empty() {
                p.none { "No grants." }
            } @else {
                div.tablewrap { table.grants {
                    thead { tr { th { "Kind" } th { "From" } th { "Until" } th { "Reason" } th { "State" } th {} } }
                    tbody {
                        @for g in &i.grants {
                            @let active = g.revoked_at.is_none() && g.starts_at <= now && g.ends_at.is_none_or(|e| e > now);
                            tr {
                                td data-label="Kind" { (g.kind) }
                                td data-label="From" { (time(Some(g.starts_at))) }
                                td data-label="Until" { (time(g.ends_at)) }
                                td data-label="Reason" { (text(g.reason.as_deref())) }
                                td data-label="State" {
                                    @if let Some(t) = g.revoked_at { "revoked " (date(Some(t))) }
                                    @else if active { (badge("active")) }
                                    @else { "ended" }
                                }
                                td {
                                    @if g.revoked_at.is_none() {
                                        form.inline method="post" action={ (r) "/grants/" (seg(&g.id)) "/revoke" } {
                                            (csrf_field(ctx))
                                            button.danger type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
            }
        }
        section.card {
            h2 { "Audit trail" }
            @if d.audit.is_empty() { p.none { "Nothing recorded." } } @else {
                div.tablewrap { table {
                    thead { tr { th { "When" } th { "Who" } th { "What" } th { "Reason" } } }
                    tbody { @for a in &d.audit { tr {
                        td data-label="When" { (time(Some(a.created_at))) }
                        td data-label="Who" { (a.actor) }
                        td data-label="What" { (a.action) }
                        td data-label="Reason" { (text(a.reason.as_deref())) }
                    } } }
                } }
            }
        }
        section.card {
            h2 { "Lifecycle events" }
            @if d.events.is_empty() { p.none { "No events." } } @else {
                ol.events { @for e in &d.events { li {
                    strong { (e.event_type) } " " (time(Some(e.received_at)))
                    details { summary { "payload" } pre { (serde_json::to_string_pretty(&e.payload).unwrap_or_default()) } }
                } } }
            }
        }
    };
    layout(ctx, &i.base_url, Nav::Installations, content)
}

// ---------------------------------------------------------------------------------------
// Access tokens
// ---------------------------------------------------------------------------------------

pub fn access_tokens(
    ctx: &Ctx,
    items: &[views::AccessToken],
    done: Option<&str>,
    shown: Option<&Shown>,
    error: Option<(&str, &ActionForm)>,
) -> Markup {
    let r = &ctx.root;
    let now = crate::store::now();
    let blank = ActionForm::default();
    let (message, form) = match error {
        Some((m, f)) => (Some(m), f),
        None => (None, &blank),
    };
    let content = html! {
        h1 { "Access tokens" }
        (notice(done))
        @if let Some(s) = shown { (shown_token(s)) }
        section.card {
            h2 { "Create an access token" }
            p.sub { "A code that grants a site free use: redeemed from the app's page, or by installing from the install URL." }
            form.rowform method="post" action={ (r) "/access-tokens" } {
                (csrf_field(ctx))
                (error_box(message))
                div { label for="note" { "Reason" }
                    input #note type="text" name="note" required maxlength="1000" value=(form.note); }
                div { label for="client_key" { "Bind to client key (optional)" }
                    input #client_key type="text" name="client_key" value=(form.client_key); }
                div { label for="expires_at" { "Expires (date, UTC; optional)" }
                    input #expires_at type="date" name="expires_at" value=(form.expires_at); }
                div { button type="submit" { "Create token" } }
            }
        }
        section.card {
            h2 { "Tokens" }
            @if items.is_empty() { p.none { "No access tokens yet." } } @else {
                div.tablewrap { table.tokens {
                    thead { tr { th { "Created" } th { "Reason" } th { "Bound to" } th { "Expires" } th { "Redeemed" } th { "State" } th {} } }
                    tbody { @for t in items {
                        @let expired = t.expires_at.is_some_and(|e| e <= now);
                        tr {
                            td data-label="Created" { (date(Some(t.created_at))) span.sub { " by " (t.created_by) } }
                            td data-label="Reason" { (text(t.note.as_deref())) }
                            td data-label="Bound to" {
                                @if let Some(k) = &t.client_key { a href={ (r) "/installations/" (seg(k)) } { code { (k) } } }
                                @else { span.none { "any site" } }
                            }
                            td data-label="Expires" { (date(t.expires_at)) }
                            td data-label="Redeemed" {
                                @if let Some(k) = &t.redeemed_by { a href={ (r) "/installations/" (seg(k)) } { code { (k) } } " " (date(t.redeemed_at)) }
                                @else { span.none { "not yet" } }
                            }
                            td data-label="State" {
                                @if t.revoked_at.is_some() { (badge("revoked")) }
                                @else if expired { (badge("expired")) }
                                @else { (badge("active")) }
                            }
                            td { @if t.revoked_at.is_none() {
                                form.inline method="post" action={ (r) "/access-tokens/" (seg(&t.id)) "/revoke" } {
                                    (csrf_field(ctx))
                                    button.danger type="submit" { "Revoke" }
                                }
                            } }
                        }
                    } }
                } }
            }
        }
    };
    layout(ctx, "Access tokens", Nav::AccessTokens, content)
}

// ---------------------------------------------------------------------------------------
// Overview and Marketplace
// ---------------------------------------------------------------------------------------

fn stat(label: &str, value: i64, href: Option<String>) -> Markup {
    html! {
        div.stat {
            @if let Some(h) = href { a href=(h) { span.value { (value) } span.label { (label) } } }
            @else { span.value { (value) } span.label { (label) } }
        }
    }
}

/// The Overview: the summary counts, then the charts (already drawn as SVG markup).
pub fn overview(ctx: &Ctx, s: &views::Summary, charts: Markup) -> Markup {
    let r = &ctx.root;
    let list = |q: &str| Some(format!("{r}/installations?{q}"));
    let content = html! {
        h1 { "Overview" }
        section.stats {
            (stat("installations", s.total, list("")))
            (stat("active", s.by_license.active, list("license=active")))
            (stat("trial", s.by_license.trial, list("license=trial")))
            (stat("free", s.by_license.free, list("license=free")))
            (stat("unlicensed", s.by_license.unlicensed, list("license=unlicensed")))
            (stat("trials ending in 7 days", s.trials_ending_in_7_days, None))
        }
        section.stats.small {
            (stat("installed", s.by_status.installed, list("status=installed")))
            (stat("enabled", s.by_status.enabled, list("status=enabled")))
            (stat("disabled", s.by_status.disabled, list("status=disabled")))
            (stat("uninstalled", s.by_status.uninstalled, list("status=uninstalled")))
        }
        (charts)
    };
    layout(ctx, "Overview", Nav::Overview, content)
}

/// What the Marketplace page knows about the last sync.
pub struct SyncView {
    pub configured: bool,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub matched: i64,
    pub unmatched: i64,
}

pub fn marketplace(ctx: &Ctx, v: &SyncView, done: Option<&str>, error: Option<&str>) -> Markup {
    let content = html! {
        h1 { "Marketplace" }
        (notice(done))
        (error_box(error))
        section.card {
            h2 { "Licence sync" }
            dl.facts {
                (dl_row("Reporting API credentials", html! { @if v.configured { "configured; the sync also runs periodically" } @else { "not configured (MARKETPLACE_VENDOR_ID, MARKETPLACE_USER, MARKETPLACE_API_TOKEN)" } }))
                (dl_row("Last sync", time(v.last_synced_at)))
                (dl_row("Licences matched to an installation", html! { (v.matched) }))
                (dl_row("Licences without an installation", html! { (v.unmatched) }))
            }
            form method="post" action={ (ctx.root) "/marketplace/sync" } {
                (csrf_field(ctx))
                button type="submit" disabled[!v.configured] { "Sync now" }
            }
        }
    };
    layout(ctx, "Marketplace", Nav::Marketplace, content)
}

/// A page for a signed-in user that has nothing to show (404 and the like).
pub fn message(ctx: &Ctx, title: &str, text: &str) -> Markup {
    layout(ctx, title, Nav::None, html! { h1 { (title) } p { (text) } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_urls_become_links() {
        assert!(is_web_url("https://acme.atlassian.net"));
        assert!(is_web_url("http://127.0.0.1:8080/wiki"));
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            " javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:x",
            "//evil.example",
            "",
        ] {
            assert!(!is_web_url(bad), "{bad}");
            assert!(!site_link(bad).into_string().contains("href"), "{bad}");
        }
    }

    #[test]
    fn values_are_escaped() {
        let m = html! { td { (text(Some("<script>alert(1)</script>"))) } };
        assert_eq!(
            m.into_string(),
            "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"
        );
    }

    #[test]
    fn list_form_drops_empty_fields_and_keeps_the_rest() {
        let f = ListForm::from_query(
            "q=&status=enabled&status=disabled&license=&sort=base_url&limit=&trial_ends_before=2026-05-01&cursor=abc",
        );
        assert_eq!(f.status, vec!["enabled", "disabled"]);
        assert!(f.license.is_empty());
        assert_eq!(
            f.to_query(None),
            "status=enabled%2Cdisabled&trial_ends_before=2026-05-01&sort=base_url"
        );
        assert!(f.to_query(Some("c1")).ends_with("&cursor=c1"));
    }

    #[test]
    fn list_form_keeps_flavour_and_corroborated() {
        let f = ListForm::from_query("flavour=connect&flavour=forge&corroborated=false&flavour=");
        assert_eq!(f.flavour, vec!["connect", "forge"]);
        assert!(f.filtered());
        assert_eq!(
            f.to_query(None),
            "flavour=connect%2Cforge&corroborated=false"
        );
        assert!(ListForm::from_query("corroborated=true").filtered());
    }

    #[test]
    fn emails_wrap_before_the_at_and_stay_text() {
        assert_eq!(
            email("ops@acme.example").into_string(),
            "ops<wbr>@acme.example"
        );
        assert_eq!(
            email("<i>x</i>@evil.example").into_string(),
            "&lt;i&gt;x&lt;/i&gt;<wbr>@evil.example"
        );
        assert_eq!(email("no-at-sign").into_string(), "no-at-sign");
    }

    #[test]
    fn an_unknown_period_or_pair_is_one_dash() {
        let dash = "<span class=\"none\">—</span>";
        assert_eq!(period(None, None).into_string(), dash);
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-13T13:38:00Z")
            .unwrap()
            .to_utc();
        let half = period(Some(t), None).into_string();
        assert!(
            half.contains("2026-12-13 13:38 UTC") && half.ends_with(&format!(" → {dash}")),
            "{half}"
        );
        assert_eq!(joined::<2>([None, None]).into_string(), dash);
        assert_eq!(
            joined([Some(html! { "active" }), None]).into_string(),
            "active"
        );
        assert_eq!(
            joined([Some(html! { "a" }), Some(html! { "b" })]).into_string(),
            "a · b"
        );
    }

    #[test]
    fn flavours_wrap_after_underscores_and_stay_text() {
        assert_eq!(
            flavour("connect_on_forge").into_string(),
            "<span class=\"flavour\">connect_<wbr>on_<wbr>forge</span>"
        );
        assert_eq!(
            flavour("<b>").into_string(),
            "<span class=\"flavour\">&lt;b&gt;</span>"
        );
    }
}

//! The shipped example routes behind the guard (docs/library.md#the-guards):
//! `GET /panel`, `GET /api/whoami`, `POST /api/access-tokens/redeem`.
//!
//! The guard wraps each *route* rather than a scope so that a wrong method still answers 405
//! and an unknown path 404 (docs/admin-api.md#errors) before any token is asked for. The
//! handlers take the guard's extractors, so a route that lost its guard fails closed (500),
//! never open.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpResponse, web};
use serde::Deserialize;

use crate::connect::jwt::QshPolicy;
use crate::error::ApiError;
use crate::guard::{self, Licensed, Verified};
use crate::registry::grants as vendor_grants;
use crate::registry::views::GrantItem;
use crate::state::SharedState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/panel")
            .wrap(from_fn(page_headers))
            .route(web::get().to(panel).wrap(guard::licensed_page()))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/api/whoami")
            .route(web::get().to(whoami).wrap(guard::licensed_api()))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/api/access-tokens/redeem")
            .route(
                web::post()
                    .to(redeem)
                    .wrap(guard::verified(QshPolicy::RequestOrContext)),
            )
            .default_service(web::to(super::method_not_allowed)),
    );
}

/// Who may frame the product pages: Atlassian's cloud domains (docs/security.md#headers).
pub const FRAME_ANCESTORS: &str = "'self' https://*.atlassian.net https://*.jira.com";

/// The `frame-ancestors` sources of a page shown to `site`: [`FRAME_ANCESTORS`], plus the
/// site's own origins (its `baseUrl`, and its `displayUrl` when the site has a custom domain)
/// when the wildcards do not cover them. Origins are re-serialised from a parsed URL, so a
/// stored value cannot add a directive.
pub fn frame_ancestors(site: Option<&crate::tenants::TenantSnapshot>) -> String {
    let mut sources = FRAME_ANCESTORS.to_owned();
    let Some(site) = site else {
        return sources;
    };
    for url in [Some(site.base_url()), site.display_url()]
        .into_iter()
        .flatten()
    {
        let Ok(parsed) = url::Url::parse(url) else {
            continue;
        };
        let Some(host) = parsed.host_str() else {
            continue;
        };
        let covered = parsed.scheme() == "https"
            && parsed.port().is_none()
            && (host.ends_with(".atlassian.net") || host.ends_with(".jira.com"));
        if covered || !matches!(parsed.scheme(), "https" | "http") {
            continue;
        }
        let origin = parsed.origin().ascii_serialization();
        if !sources.split(' ').any(|s| s == origin) {
            sources.push(' ');
            sources.push_str(&origin);
        }
    }
    sources
}

/// Headers of the iframe page, on every answer (a refusal too): its URL carries a JWT, so it
/// is never cached and never sent as a referrer, and only Atlassian's pages (and the site's
/// own origin) may frame it. Never `X-Frame-Options`: the page lives in an iframe.
async fn page_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let csp = {
        let ext = res.request().extensions();
        let site = ext.get::<Licensed>().map(|l| &*l.verified.tenant);
        format!("frame-ancestors {}", frame_ancestors(site))
    };
    let h = res.headers_mut();
    super::set_headers(
        h,
        &[
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    h.remove(header::X_FRAME_OPTIONS);
    Ok(res)
}

/// The iframe page of a licensed site. Nothing from the request is echoed into the HTML.
async fn panel(licensed: Licensed) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PANEL_PAGE.replace("{source}", licensed.source.as_str()))
}

const PANEL_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Connect Keeper</title>
<script src="https://connect-cdn.atl-paas.net/all.js" async></script>
</head>
<body>
<h1>Connect Keeper</h1>
<p>This site is licensed (<code>{source}</code>).</p>
</body>
</html>
"#;

/// The answer of `GET /api/whoami` (docs/library.md); typed, so no JSON tree is built per request. The same
/// for a Connect JWT and a Forge Invocation Token: `client_key` is null for an installation
/// only Forge knows, `installation_id` null for one only Connect knows.
#[derive(serde::Serialize)]
struct WhoAmI<'a> {
    client_key: Option<&'a str>,
    installation_id: Option<&'a str>,
    account_id: Option<&'a str>,
    licensed: bool,
    license_source: &'static str,
}

async fn whoami(licensed: Licensed) -> HttpResponse {
    let v = &licensed.verified;
    HttpResponse::Ok().json(WhoAmI {
        client_key: v.connect_client_key(),
        installation_id: v.installation_ari(),
        account_id: v.account_id(),
        licensed: true,
        license_source: licensed.source.as_str(),
    })
}

#[derive(Deserialize)]
struct RedeemBody {
    token: Option<serde_json::Value>,
}

/// Binds an access token to the calling site (docs/licensing.md#access-tokens); answers the grant.
async fn redeem(
    verified: Verified,
    state: SharedState,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let parsed: RedeemBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("invalid_json", "the body must be a JSON object"))?;
    let token = match parsed.token {
        Some(serde_json::Value::String(t)) => t,
        None | Some(serde_json::Value::Null) => {
            return Err(ApiError::invalid_field("token", "is required"));
        }
        Some(_) => return Err(ApiError::invalid_field("token", "must be a string")),
    };
    let grant = vendor_grants::redeem_access_token(
        state.get_ref(),
        &token,
        verified.client_key(),
        "site",
        crate::store::now(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(GrantItem::from(&grant)))
}

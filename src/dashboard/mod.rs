//! The vendor dashboard (docs/dashboard.md): HTML pages under `/admin/ui/` over the same registry
//! functions the admin API and the CLI call.
//!
//! * [`session`] — sign-in with an admin token, the server-side session, CSRF tokens.
//! * [`pages`] — the HTML: one layout, one stylesheet, every value escaped (maud escapes
//!   whatever it interpolates unless told otherwise, and this module never tells it).
//! * [`handlers`] — the routes: parse the form or query, call the registry, render or redirect.
//!
//! Protection is on the scope, as for the admin API: `require_session` wraps every route but
//! the sign-in form and the stylesheet, and for a POST it checks the CSRF token before the
//! handler runs (it reads the form body, then hands it on), so a handler cannot forget either.
//! `security_headers` wraps the whole scope: a strict Content-Security-Policy (no inline
//! script, nothing from another origin), `X-Frame-Options: DENY`, no caching. The Connect
//! iframe pages are elsewhere and are not touched.

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};

use crate::state::SharedState;

pub mod charts;
pub mod handlers;
pub mod pages;
pub mod session;

pub use session::Session;

/// Where the dashboard is mounted, below the optional path of `APP_BASE_URL`.
pub const MOUNT: &str = "/admin/ui";

/// The Content-Security-Policy of every dashboard answer: only this origin's stylesheet and
/// script files; no inline script or style, no plugin, no framing, forms post only here.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's root as the client addressed it (`/admin/ui`, or `/acme/admin/ui` behind a
/// proxy that keeps `APP_BASE_URL`'s path), for links and redirects.
pub fn root(req: &HttpRequest) -> String {
    let path = req.path();
    match path.find(MOUNT) {
        Some(i) => format!("{}{MOUNT}", &path[..i]),
        None => MOUNT.to_owned(),
    }
}

/// Mounts `/admin/ui`. Must be registered before the `/admin` API scope, which would
/// otherwise take these paths (actix tries scopes in registration order).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use web::{get, post, resource};
    cfg.service(
        web::scope(MOUNT)
            .wrap(from_fn(security_headers))
            .service(
                resource("/login")
                    .route(get().to(handlers::login_form))
                    .route(post().to(handlers::login)),
            )
            .service(resource("/assets/{file}").route(get().to(handlers::asset)))
            .service(
                web::scope("")
                    .wrap(from_fn(require_session))
                    .service(resource(["", "/"]).route(get().to(handlers::overview)))
                    .service(resource("/logout").route(post().to(handlers::logout)))
                    .service(resource("/installations").route(get().to(handlers::installations)))
                    .service(
                        resource("/installations.csv").route(get().to(handlers::installations_csv)),
                    )
                    .service(
                        resource("/installations/{key}").route(get().to(handlers::installation)),
                    )
                    .service(
                        resource("/installations/{key}/trial-extension")
                            .route(post().to(handlers::extend_trial)),
                    )
                    .service(
                        resource("/installations/{key}/grants")
                            .route(post().to(handlers::grant_free)),
                    )
                    .service(
                        resource("/access-tokens")
                            .route(get().to(handlers::access_tokens))
                            .route(post().to(handlers::create_access_token)),
                    )
                    .service(
                        resource("/{what:grants|access-tokens}/{id}/revoke")
                            .route(post().to(handlers::revoke)),
                    )
                    .service(resource("/marketplace").route(get().to(handlers::marketplace)))
                    .service(
                        resource("/marketplace/sync").route(post().to(handlers::marketplace_sync)),
                    )
                    .default_service(web::to(handlers::not_found)),
            ),
    );
}

/// Adds the dashboard's security headers to every answer of the scope, errors included.
async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let h = res.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    crate::routes::set_headers(
        h,
        &[
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
    );
    Ok(res)
}

/// What every signed-in page and action runs with: the app, the request, and its session as
/// `require_session` checked and stored it.
pub struct Signed {
    pub state: SharedState,
    pub req: HttpRequest,
    pub session: Session,
}

impl Signed {
    /// The app, the request and the session, borrowed.
    pub fn parts(&self) -> (&SharedState, &HttpRequest, &Session) {
        (&self.state, &self.req, &self.session)
    }
}

impl FromRequest for Signed {
    type Error = actix_web::Error;
    type Future = Ready<Result<Signed, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<SharedState>().cloned();
        let session = req.extensions().get::<Session>().cloned();
        ready(match (state, session) {
            (Some(state), Some(session)) => Ok(Signed {
                state,
                req: req.clone(),
                session,
            }),
            // Missing means a handler mounted outside the protected scope: a bug, fail closed.
            _ => Err(actix_web::error::ErrorInternalServerError(
                "dashboard session not checked",
            )),
        })
    }
}

/// The cookie's secret, if the request carries the session cookie.
fn cookie_secret(req: &HttpRequest, secure: bool) -> Option<String> {
    let name = session::cookie_name(secure);
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Lets a request through only with a live session, and a POST only with its CSRF token.
/// Without a session: a page GET is sent to the sign-in form (303), anything else is 401.
/// A POST whose `csrf_token` is missing or wrong is 403 and the handler never runs.
async fn require_session(
    mut req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<SharedState>().cloned() else {
        return Err(actix_web::error::ErrorInternalServerError(
            "AppState is not registered",
        ));
    };
    let secure = state.config.app_base_url.scheme() == "https";
    let now = crate::store::now();
    let found = match cookie_secret(req.request(), secure) {
        Some(secret) => session::resume(&state.db, state.config.admin_token.as_ref(), &secret, now)
            .await
            .map_err(|e| {
                tracing::error!(error = ?e, "reading the dashboard session");
                actix_web::error::ErrorInternalServerError("session lookup failed")
            })?,
        None => None,
    };
    let root = root(req.request());
    let Some(session) = found else {
        let res = if req.method() == actix_web::http::Method::GET
            || req.method() == actix_web::http::Method::HEAD
        {
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, format!("{root}/login")))
                .finish()
        } else {
            pages::status_page(
                actix_web::http::StatusCode::UNAUTHORIZED,
                &root,
                "Signed out",
                "Your session has ended. Sign in again.",
            )
        };
        return Ok(req.into_response(res));
    };
    if req.method() == actix_web::http::Method::POST {
        let body = req.extract::<web::Bytes>().await?;
        let presented = url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "csrf_token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !session.csrf_matches(&presented) {
            let res = pages::status_page(
                actix_web::http::StatusCode::FORBIDDEN,
                &root,
                "Form expired",
                "The form was not sent from this session (CSRF check failed); nothing was changed. Go back, reload the page and try again.",
            );
            return Ok(req.into_response(res));
        }
        req.set_payload(bytes_payload(body));
    }
    req.extensions_mut().insert(session);
    next.call(req).await
}

fn bytes_payload(body: web::Bytes) -> Payload {
    let (_, mut payload) = actix_http::h1::Payload::create(true);
    payload.unread_data(body);
    Payload::from(payload)
}

//! The dashboard's routes. Thin like the admin API's: read the form or query, call the same
//! registry function the API calls (with the session's actor for the audit trail), then
//! redirect to the page that shows the new state (303), or render the form again with the
//! reason (400).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};

use super::pages::{self, ActionForm, Ctx, ListForm};
use super::{Signed, root, session};
use crate::error::ApiError;
use crate::registry::{grants, installations, list_query, views};
use crate::state::SharedState;

type Page = Result<HttpResponse, actix_web::Error>;

fn ctx(req: &HttpRequest, s: &session::Session) -> Ctx {
    Ctx {
        root: root(req),
        csrf: s.csrf.clone(),
        actor: s.actor.clone(),
    }
}

fn see_other(location: String) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

fn ok(page: maud::Markup) -> Page {
    Ok(pages::html_response(StatusCode::OK, page))
}

/// An error that is not the user's to fix: logged with its cause, answered with a plain page.
fn internal(req: &HttpRequest, e: impl Into<ApiError>) -> HttpResponse {
    let e: ApiError = e.into();
    tracing::error!(error = ?e, "dashboard request failed");
    pages::status_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        &root(req),
        "Something went wrong",
        "The server could not handle the request; it has been logged.",
    )
}

/// The fields of a posted form (`application/x-www-form-urlencoded`), last value wins.
fn form_fields(body: &[u8]) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// A date field (`YYYY-MM-DD`, midnight UTC) or empty for none.
fn opt_date(field: &'static str, raw: &str) -> Result<Option<DateTime<Utc>>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    list_query::parse_date_param(field, raw)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn required(field: &str, raw: &str) -> Result<String, String> {
    let v = raw.trim();
    if v.is_empty() {
        Err(format!("{field}: is required"))
    } else {
        Ok(v.to_owned())
    }
}

fn done_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "trial-extended" => "The trial was extended.",
        "granted" => "Free use was granted.",
        "grant-revoked" => "The grant was revoked.",
        "token-revoked" => "The access token was revoked.",
        "token-created" => "The access token was created.",
        "synced" => "The Marketplace sync finished.",
        _ => return None,
    })
}

fn query_value(req: &HttpRequest, key: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

// ---------------------------------------------------------------------------------------
// Sign-in, sign-out, assets
// ---------------------------------------------------------------------------------------

pub async fn login_form(req: HttpRequest) -> HttpResponse {
    pages::html_response(StatusCode::OK, pages::login(&root(&req), None))
}

pub async fn login(state: SharedState, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let fields = form_fields(&body);
    let token = fields.get("token").map(String::as_str).unwrap_or_default();
    let root = root(&req);
    let now = crate::store::now();
    // The sign-in form checks admin tokens too: it shares the admin API's per-address throttle.
    let client = crate::routes::auth_throttle::Client::of(req.peer_addr().map(|a| a.ip()));
    if let Err(wait) = state
        .admin_throttle
        .check(client, std::time::Instant::now())
    {
        let mut res = pages::html_response(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(
                &root,
                Some("Too many failed sign-ins from this address; try again later."),
            ),
        );
        res.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(crate::routes::auth_throttle::retry_after_secs(wait)),
        );
        return res;
    }
    let outcome = session::sign_in(&state.db, state.config.admin_token.as_ref(), token, now).await;
    if matches!(outcome, Err(session::SignInError::Invalid)) && !token.is_empty() {
        state
            .admin_throttle
            .failed(client, std::time::Instant::now());
    }
    match outcome {
        Ok((secret, _)) => {
            let secure = state.config.app_base_url.scheme() == "https";
            let cookie = session::set_cookie(secure, &secret, session::LIFETIME.num_seconds());
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, format!("{root}/")))
                .insert_header((header::SET_COOKIE, cookie))
                .finish()
        }
        Err(session::SignInError::Invalid) => pages::html_response(
            StatusCode::UNAUTHORIZED,
            pages::login(
                &root,
                Some("That admin token is not valid (unknown or revoked)."),
            ),
        ),
        Err(session::SignInError::Db(e)) => internal(&req, e),
    }
}

pub async fn logout(on: Signed) -> HttpResponse {
    let (state, req, s) = on.parts();
    if let Err(e) = session::sign_out(&state.db, s, crate::store::now()).await {
        return internal(req, e);
    }
    let secure = state.config.app_base_url.scheme() == "https";
    let gone = session::set_cookie(secure, "", 0);
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("{}/login", root(req))))
        .insert_header((header::SET_COOKIE, gone))
        .finish()
}

pub async fn asset(path: web::Path<String>) -> HttpResponse {
    let (body, kind) = match path.as_str() {
        "dashboard.css" => (pages::STYLESHEET, "text/css; charset=utf-8"),
        "dashboard.js" => (pages::SCRIPT, "text/javascript; charset=utf-8"),
        _ => return HttpResponse::NotFound().finish(),
    };
    HttpResponse::Ok()
        .content_type(kind)
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .body(body)
}

pub async fn not_found(on: Signed) -> HttpResponse {
    pages::html_response(
        StatusCode::NOT_FOUND,
        pages::message(
            &ctx(&on.req, &on.session),
            "Not found",
            "There is no such page.",
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Installations
// ---------------------------------------------------------------------------------------

pub async fn installations(on: Signed) -> Page {
    let (state, req, s) = on.parts();
    let c = ctx(req, s);
    let form = ListForm::from_query(req.query_string());
    let query = form.to_query((!form.cursor.is_empty()).then_some(form.cursor.as_str()));
    let list = match list_query::parse_list_query(&query, false) {
        Ok(l) => l,
        Err(e) => {
            return Ok(pages::html_response(
                StatusCode::BAD_REQUEST,
                pages::installations(&c, &form, None, Some(&e.to_string())),
            ));
        }
    };
    match installations::list(&state.db, &list).await {
        Ok(page) => ok(pages::installations(&c, &form, Some(&page), None)),
        Err(e) => Ok(internal(req, e)),
    }
}

/// The CSV export of the current filter, as `GET /admin/installations?format=csv` streams it.
pub async fn installations_csv(on: Signed) -> Page {
    let (state, req, s) = on.parts();
    let form = ListForm::from_query(req.query_string());
    let list = match list_query::parse_list_query(&form.to_query(None), true) {
        Ok(l) => l,
        Err(e) => {
            return Ok(pages::html_response(
                StatusCode::BAD_REQUEST,
                pages::installations(&ctx(req, s), &form, None, Some(&e.to_string())),
            ));
        }
    };
    Ok(crate::routes::admin::csv_download(
        state,
        list.filter,
        list.sort,
    ))
}

async fn installation_page(
    state: &SharedState,
    req: &HttpRequest,
    s: &session::Session,
    key: &str,
    status: StatusCode,
    error: Option<pages::ActionError<'_>>,
) -> HttpResponse {
    let c = ctx(req, s);
    let detail = match installations::detail(&state.db, key).await {
        Ok(d) => d,
        Err(crate::registry::Error::NotFound { .. }) => {
            return pages::html_response(
                StatusCode::NOT_FOUND,
                pages::message(&c, "Not found", "No installation has that client key."),
            );
        }
        Err(e) => return internal(req, e),
    };
    let done = query_value(req, "done").and_then(|d| done_message(&d));
    let shown = match take_shown(state, s).await {
        Ok(v) => v,
        Err(e) => return internal(req, e),
    };
    pages::html_response(
        status,
        pages::installation(&c, &detail, done, shown.as_ref(), error),
    )
}

pub async fn installation(on: Signed, path: web::Path<String>) -> HttpResponse {
    let (state, req, s) = on.parts();
    installation_page(state, req, s, &path, StatusCode::OK, None).await
}

fn installation_url(req: &HttpRequest, key: &str, done: &str) -> String {
    format!(
        "{}/installations/{}?done={done}",
        root(req),
        pages::seg(key)
    )
}

// ---------------------------------------------------------------------------------------
// Actions: every state-changing form has one shape
// ---------------------------------------------------------------------------------------

/// Where a refused action shows its form again, with the reason next to it.
enum Back<'a> {
    /// The Installation page of this key, the message beside this action's form; an unknown
    /// key is the page's own 404.
    Installation(&'a str, pages::Action),
    /// The Access tokens page, its form filled in again.
    AccessTokens,
    /// No form to show again (the revoke buttons): an unknown id is a 404 page saying so.
    Nowhere,
}

/// The values of a posted action form, as typed (the client key trimmed), to parse and to
/// show again when refused.
fn action_form(body: &[u8]) -> ActionForm {
    let mut f = form_fields(body);
    let mut take = |k: &str| f.remove(k).unwrap_or_default();
    ActionForm {
        days: take("days"),
        reason: take("reason"),
        ends_at: take("ends_at"),
        note: take("note"),
        expires_at: take("expires_at"),
        client_key: take("client_key").trim().to_owned(),
        back: take("back"),
    }
}

/// One dashboard action, the same steps for every form. The session and the CSRF token were
/// checked by `require_session` before the handler ran (a POST without them never gets here);
/// `parsed` is the form read into what the registry takes (a message naming the field when a
/// value is invalid); `run` calls the same registry function as the admin API, with the
/// session's actor, and answers where the result is shown. The answer is then `303` there, or
/// the form again with the reason: `400` for a field, `409` for a clash, `404` for an unknown
/// installation, grant or token; anything else is logged and a plain 500 page.
async fn act<P>(
    on: &Signed,
    form: &ActionForm,
    back: Back<'_>,
    parsed: Result<P, String>,
    run: impl AsyncFnOnce(P) -> Result<String, ApiError>,
) -> HttpResponse {
    let (state, req, s) = on.parts();
    let result = match parsed {
        Ok(p) => run(p).await,
        Err(m) => Err(ApiError::bad_request("invalid_request", m)),
    };
    let e = match result {
        Ok(location) => return see_other(location),
        Err(e) => e,
    };
    let status = actix_web::ResponseError::status_code(&e);
    match (e, back) {
        (
            ApiError::BadRequest { message, .. } | ApiError::Conflict(message),
            Back::Installation(key, action),
        ) => {
            let error = pages::ActionError {
                action,
                message: &message,
                form,
            };
            installation_page(state, req, s, key, status, Some(error)).await
        }
        (
            ApiError::BadRequest { message, .. } | ApiError::Conflict(message),
            Back::AccessTokens,
        ) => access_tokens_page(state, req, s, status, Some((&message, form))).await,
        (ApiError::NotFound(_), Back::Installation(key, _)) => {
            installation_page(state, req, s, key, StatusCode::NOT_FOUND, None).await
        }
        (ApiError::NotFound(m), Back::Nowhere) => pages::html_response(
            StatusCode::NOT_FOUND,
            pages::message(&ctx(req, s), "Not found", &m),
        ),
        (other, _) => internal(req, other),
    }
}

/// `reason`, required and trimmed.
fn reason(form: &ActionForm) -> Result<String, String> {
    required("reason", &form.reason)
}

pub async fn extend_trial(on: Signed, path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let (state, req, s) = on.parts();
    let form = action_form(&body);
    let parsed = grants::parse_trial_days(&form.days)
        .map_err(|e| e.to_string())
        .and_then(|days| Ok((days, reason(&form)?)));
    let back = Back::Installation(&path, pages::Action::TrialExtension);
    act(&on, &form, back, parsed, async |(days, reason)| {
        let now = crate::store::now();
        grants::extend_trial(state.get_ref(), &path, days, Some(&reason), &s.actor, now).await?;
        Ok(installation_url(req, &path, "trial-extended"))
    })
    .await
}

pub async fn grant_free(on: Signed, path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let (state, req, s) = on.parts();
    let form = action_form(&body);
    let parsed =
        opt_date("ends_at", &form.ends_at).and_then(|ends_at| Ok((ends_at, reason(&form)?)));
    let back = Back::Installation(&path, pages::Action::Grant);
    act(&on, &form, back, parsed, async |(ends_at, reason)| {
        let now = crate::store::now();
        let to = state.get_ref();
        grants::grant_free(to, &path, ends_at, Some(&reason), &s.actor, now).await?;
        Ok(installation_url(req, &path, "granted"))
    })
    .await
}

/// The revoke buttons of grants and access tokens, `POST /{grants|access-tokens}/{id}/revoke`:
/// no form to show again, so an unknown id is a 404 page saying so.
pub async fn revoke(on: Signed, path: web::Path<(String, String)>) -> HttpResponse {
    let (state, req, s) = on.parts();
    let (what, id) = path.into_inner();
    act(
        &on,
        &ActionForm::default(),
        Back::Nowhere,
        Ok(()),
        async |()| {
            let (to, now) = (state.get_ref(), crate::store::now());
            if what == "grants" {
                let g = grants::revoke_grant(to, &id, &s.actor, now).await?;
                Ok(installation_url(req, &g.client_key, "grant-revoked"))
            } else {
                grants::revoke_access_token(to, &id, &s.actor, now).await?;
                Ok(format!("{}/access-tokens?done=token-revoked", root(req)))
            }
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Access tokens
// ---------------------------------------------------------------------------------------

/// The one-time message that carries a new token to the page after the redirect.
#[derive(serde::Serialize, serde::Deserialize)]
struct ShownToken {
    id: String,
    token: String,
}

async fn take_shown(
    state: &SharedState,
    s: &session::Session,
) -> Result<Option<pages::Shown>, sqlx::Error> {
    let Some(raw) = s.take_flash(&state.db).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_str::<ShownToken>(&raw)
        .ok()
        .map(|t| pages::Shown {
            install_url: views::install_url(&state.config.app_base_url, &t.token),
            id: t.id,
            token: t.token,
        }))
}

async fn access_tokens_page(
    state: &SharedState,
    req: &HttpRequest,
    s: &session::Session,
    status: StatusCode,
    error: Option<(&str, &ActionForm)>,
) -> HttpResponse {
    let items = match grants::list_access_tokens(&state.db).await {
        Ok(items) => items,
        Err(e) => return internal(req, e),
    };
    let shown = match take_shown(state, s).await {
        Ok(v) => v,
        Err(e) => return internal(req, e),
    };
    let done = query_value(req, "done").and_then(|d| done_message(&d));
    pages::html_response(
        status,
        pages::access_tokens(&ctx(req, s), &items, done, shown.as_ref(), error),
    )
}

pub async fn access_tokens(on: Signed) -> HttpResponse {
    let (state, req, s) = on.parts();
    access_tokens_page(state, req, s, StatusCode::OK, None).await
}

pub async fn create_access_token(on: Signed, body: web::Bytes) -> HttpResponse {
    let (state, req, s) = on.parts();
    let form = action_form(&body);
    let client_key = (!form.client_key.is_empty()).then_some(form.client_key.as_str());
    // Sent from an Installation page (`back=installation`): the answer goes back there.
    let from_page = client_key.filter(|_| form.back == "installation");
    let back = match from_page {
        Some(k) => Back::Installation(k, pages::Action::AccessToken),
        None => Back::AccessTokens,
    };
    let parsed = opt_date("expires_at", &form.expires_at)
        .and_then(|expires_at| Ok((expires_at, required("note", &form.note)?)));
    act(&on, &form, back, parsed, async |(expires_at, note)| {
        let now = crate::store::now();
        let made = grants::create_access_token(
            state.get_ref(),
            Some(&note),
            expires_at,
            client_key,
            &s.actor,
            now,
        )
        .await;
        let (row, token) = match made.map_err(ApiError::from) {
            Ok(v) => v,
            // The key is a field of this form: an unknown one is the user's to fix.
            Err(ApiError::NotFound(m)) => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("client_key: {m}"),
                ));
            }
            Err(e) => return Err(e),
        };
        let json = serde_json::to_string(&ShownToken { id: row.id, token }).unwrap_or_default();
        s.set_flash(&state.db, &json).await?;
        Ok(match from_page {
            Some(k) => installation_url(req, k, "token-created"),
            None => format!("{}/access-tokens?done=token-created", root(req)),
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Overview and Marketplace
// ---------------------------------------------------------------------------------------

pub async fn overview(on: Signed) -> HttpResponse {
    let (state, req, s) = on.parts();
    let now = crate::store::now();
    let summary = match installations::summary(&state.db, now).await {
        Ok(v) => v,
        Err(e) => return internal(req, e),
    };
    let charts = match super::charts::overview_charts(&state.db, &summary, now).await {
        Ok(m) => m,
        Err(e) => return internal(req, e),
    };
    pages::html_response(
        StatusCode::OK,
        pages::overview(&ctx(req, s), &summary, charts),
    )
}

async fn sync_view(state: &SharedState) -> Result<pages::SyncView, sqlx::Error> {
    let (matched, unmatched) = crate::store::marketplace::match_counts(&state.db).await?;
    Ok(pages::SyncView {
        configured: state.config.marketplace.is_some(),
        last_synced_at: crate::store::marketplace::last_synced_at(&state.db).await?,
        matched,
        unmatched,
    })
}

pub async fn marketplace(on: Signed) -> HttpResponse {
    let (state, req, s) = on.parts();
    let view = match sync_view(state).await {
        Ok(v) => v,
        Err(e) => return internal(req, e),
    };
    let done = query_value(req, "done").and_then(|d| done_message(&d));
    pages::html_response(
        StatusCode::OK,
        pages::marketplace(&ctx(req, s), &view, done, None),
    )
}

pub async fn marketplace_sync(on: Signed) -> HttpResponse {
    let (state, req, s) = on.parts();
    use actix_web::ResponseError;
    let (status, error) = match crate::marketplace::sync_once(
        &state.db,
        &state.marketplace,
        &state.metrics,
    )
    .await
    {
        Ok(_) => return see_other(format!("{}/marketplace?done=synced", root(req))),
        Err(e) => match ApiError::from(e) {
            // sync_once leaves reporting to its caller: an internal error is logged by
            // `internal`, a Marketplace failure here; a refusal is only shown.
            ApiError::BadGateway { message, .. } => {
                tracing::warn!(error = %message, "Marketplace sync failed; stored data unchanged");
                (StatusCode::BAD_GATEWAY, message)
            }
            ApiError::Internal(e) => return internal(req, ApiError::Internal(e)),
            other => (other.status_code(), other.to_string()),
        },
    };
    let view = match sync_view(state).await {
        Ok(v) => v,
        Err(e) => return internal(req, e),
    };
    pages::html_response(
        status,
        pages::marketplace(&ctx(req, s), &view, None, Some(&error)),
    )
}

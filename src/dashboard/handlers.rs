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
use crate::registry::{export, grants, installations, list_query, views};
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

pub async fn logout(state: SharedState, req: HttpRequest, Signed(s): Signed) -> HttpResponse {
    if let Err(e) = session::sign_out(&state.db, &s, crate::store::now()).await {
        return internal(&req, e);
    }
    let secure = state.config.app_base_url.scheme() == "https";
    let gone = session::set_cookie(secure, "", 0);
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("{}/login", root(&req))))
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

pub async fn not_found(req: HttpRequest, Signed(s): Signed) -> HttpResponse {
    pages::html_response(
        StatusCode::NOT_FOUND,
        pages::message(&ctx(&req, &s), "Not found", "There is no such page."),
    )
}

// ---------------------------------------------------------------------------------------
// Installations
// ---------------------------------------------------------------------------------------

pub async fn installations(state: SharedState, req: HttpRequest, Signed(s): Signed) -> Page {
    let c = ctx(&req, &s);
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
        Err(e) => Ok(internal(&req, e)),
    }
}

/// The CSV export of the current filter, as `GET /admin/installations?format=csv` streams it.
pub async fn installations_csv(state: SharedState, req: HttpRequest, Signed(s): Signed) -> Page {
    let form = ListForm::from_query(req.query_string());
    let list = match list_query::parse_list_query(&form.to_query(None), true) {
        Ok(l) => l,
        Err(e) => {
            return Ok(pages::html_response(
                StatusCode::BAD_REQUEST,
                pages::installations(&ctx(&req, &s), &form, None, Some(&e.to_string())),
            ));
        }
    };
    let stream = export::csv_stream(state.db.clone(), list.filter, list.sort);
    let stream = futures::StreamExt::map(stream, |chunk| {
        chunk.map_err(|e| {
            tracing::error!(error = ?e, "CSV export failed mid-stream");
            actix_web::error::ErrorInternalServerError("export failed")
        })
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"installations.csv\"",
        ))
        .streaming(stream))
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

pub async fn installation(
    state: SharedState,
    req: HttpRequest,
    Signed(s): Signed,
    path: web::Path<String>,
) -> HttpResponse {
    installation_page(&state, &req, &s, &path, StatusCode::OK, None).await
}

/// The answer to a refused action on an installation: 404 when the site is unknown, the page
/// again with the reason when a field is invalid (400) or the action clashes (409).
async fn action_refused(
    state: &SharedState,
    req: &HttpRequest,
    s: &session::Session,
    key: &str,
    action: pages::Action,
    form: &ActionForm,
    e: ApiError,
) -> HttpResponse {
    let status = actix_web::ResponseError::status_code(&e);
    match e {
        // 400 (a field) or 409 (e.g. free use with no end already granted): the page again.
        ApiError::BadRequest { message, .. } | ApiError::Conflict(message) => {
            let error = pages::ActionError {
                action,
                message: &message,
                form,
            };
            installation_page(state, req, s, key, status, Some(error)).await
        }
        ApiError::NotFound(_) => {
            installation_page(state, req, s, key, StatusCode::NOT_FOUND, None).await
        }
        other => internal(req, other),
    }
}

fn installation_url(req: &HttpRequest, key: &str, done: &str) -> String {
    format!(
        "{}/installations/{}?done={done}",
        root(req),
        pages::seg(key)
    )
}

pub async fn extend_trial(
    state: SharedState,
    req: HttpRequest,
    Signed(s): Signed,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let f = form_fields(&body);
    let form = ActionForm {
        days: f.get("days").cloned().unwrap_or_default(),
        reason: f.get("reason").cloned().unwrap_or_default(),
        ..Default::default()
    };
    let parsed = (|| {
        let days = grants::parse_trial_days(&form.days).map_err(|e| e.to_string())?;
        let reason = required("reason", &form.reason)?;
        Ok::<_, String>((days, reason))
    })();
    let result = match parsed {
        Ok((days, reason)) => grants::extend_trial(
            state.get_ref(),
            &path,
            days,
            Some(&reason),
            &s.actor,
            crate::store::now(),
        )
        .await
        .map(|_| ())
        .map_err(ApiError::from),
        Err(m) => Err(ApiError::bad_request("invalid_request", m)),
    };
    match result {
        Ok(()) => see_other(installation_url(&req, &path, "trial-extended")),
        Err(e) => {
            action_refused(
                &state,
                &req,
                &s,
                &path,
                pages::Action::TrialExtension,
                &form,
                e,
            )
            .await
        }
    }
}

pub async fn grant_free(
    state: SharedState,
    req: HttpRequest,
    Signed(s): Signed,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let f = form_fields(&body);
    let form = ActionForm {
        reason: f.get("reason").cloned().unwrap_or_default(),
        ends_at: f.get("ends_at").cloned().unwrap_or_default(),
        ..Default::default()
    };
    let parsed = (|| {
        let ends_at = opt_date("ends_at", &form.ends_at)?;
        let reason = required("reason", &form.reason)?;
        Ok::<_, String>((ends_at, reason))
    })();
    let result = match parsed {
        Ok((ends_at, reason)) => grants::grant_free(
            state.get_ref(),
            &path,
            ends_at,
            Some(&reason),
            &s.actor,
            crate::store::now(),
        )
        .await
        .map(|_| ())
        .map_err(ApiError::from),
        Err(m) => Err(ApiError::bad_request("invalid_request", m)),
    };
    match result {
        Ok(()) => see_other(installation_url(&req, &path, "granted")),
        Err(e) => action_refused(&state, &req, &s, &path, pages::Action::Grant, &form, e).await,
    }
}

pub async fn revoke_grant(
    state: SharedState,
    req: HttpRequest,
    Signed(s): Signed,
    path: web::Path<String>,
) -> HttpResponse {
    match grants::revoke_grant(state.get_ref(), &path, &s.actor, crate::store::now()).await {
        Ok(g) => see_other(installation_url(&req, &g.client_key, "grant-revoked")),
        Err(e) => match ApiError::from(e) {
            ApiError::NotFound(m) => pages::html_response(
                StatusCode::NOT_FOUND,
                pages::message(&ctx(&req, &s), "Not found", &m),
            ),
            other => internal(&req, other),
        },
    }
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
    error: Option<(&str, &ActionForm, &str)>,
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

pub async fn access_tokens(
    state: SharedState,
    req: HttpRequest,
    Signed(s): Signed,
) -> HttpResponse {
    access_tokens_page(&state, &req, &s, StatusCode::OK, None).await
}

pub async fn create_access_token(
    state: SharedState,
    req: HttpRequest,
    Signed(s): Signed,
    body: web::Bytes,
) -> HttpResponse {
    let f = form_fields(&body);
    let form = ActionForm {
        note: f.get("note").cloned().unwrap_or_default(),
        expires_at: f.get("expires_at").cloned().unwrap_or_default(),
        ..Default::default()
    };
    let client_key = f
        .get("client_key")
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty());
    let from_installation = f.get("back").is_some_and(|b| b == "installation");
    let parsed = (|| {
        let expires_at = opt_date("expires_at", &form.expires_at)?;
        let note = required("note", &form.note)?;
        Ok::<_, String>((expires_at, note))
    })();
    let result = match parsed {
        Ok((expires_at, note)) => grants::create_access_token(
            state.get_ref(),
            Some(&note),
            expires_at,
            client_key.as_deref(),
            &s.actor,
            crate::store::now(),
        )
        .await
        .map_err(ApiError::from),
        Err(m) => Err(ApiError::bad_request("invalid_request", m)),
    };
    match result {
        Ok((row, token)) => {
            let shown = ShownToken { id: row.id, token };
            let json = serde_json::to_string(&shown).unwrap_or_default();
            if let Err(e) = s.set_flash(&state.db, &json).await {
                return internal(&req, e);
            }
            match (&client_key, from_installation) {
                (Some(k), true) => see_other(installation_url(&req, k, "token-created")),
                _ => see_other(format!("{}/access-tokens?done=token-created", root(&req))),
            }
        }
        Err(e) => {
            let (status, message) = match e {
                ApiError::BadRequest { message, .. } => (StatusCode::BAD_REQUEST, message),
                ApiError::NotFound(m) => (StatusCode::BAD_REQUEST, format!("client_key: {m}")),
                other => return internal(&req, other),
            };
            match (&client_key, from_installation) {
                (Some(k), true) => {
                    let error = pages::ActionError {
                        action: pages::Action::AccessToken,
                        message: &message,
                        form: &form,
                    };
                    installation_page(&state, &req, &s, k, status, Some(error)).await
                }
                _ => {
                    let k = client_key.clone().unwrap_or_default();
                    access_tokens_page(&state, &req, &s, status, Some((&message, &form, &k))).await
                }
            }
        }
    }
}

pub async fn revoke_access_token(
    state: SharedState,
    req: HttpRequest,
    Signed(s): Signed,
    path: web::Path<String>,
) -> HttpResponse {
    match grants::revoke_access_token(state.get_ref(), &path, &s.actor, crate::store::now()).await {
        Ok(_) => see_other(format!("{}/access-tokens?done=token-revoked", root(&req))),
        Err(e) => match ApiError::from(e) {
            ApiError::NotFound(m) => pages::html_response(
                StatusCode::NOT_FOUND,
                pages::message(&ctx(&req, &s), "Not found", &m),
            ),
            other => internal(&req, other),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Overview and Marketplace
// ---------------------------------------------------------------------------------------

pub async fn overview(state: SharedState, req: HttpRequest, Signed(s): Signed) -> HttpResponse {
    let now = crate::store::now();
    let summary = match installations::summary(&state.db, now).await {
        Ok(v) => v,
        Err(e) => return internal(&req, e),
    };
    let charts = match super::charts::overview_charts(&state.db, &summary, now).await {
        Ok(m) => m,
        Err(e) => return internal(&req, e),
    };
    pages::html_response(
        StatusCode::OK,
        pages::overview(&ctx(&req, &s), &summary, charts),
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

pub async fn marketplace(state: SharedState, req: HttpRequest, Signed(s): Signed) -> HttpResponse {
    let view = match sync_view(&state).await {
        Ok(v) => v,
        Err(e) => return internal(&req, e),
    };
    let done = query_value(&req, "done").and_then(|d| done_message(&d));
    pages::html_response(
        StatusCode::OK,
        pages::marketplace(&ctx(&req, &s), &view, done, None),
    )
}

pub async fn marketplace_sync(
    state: SharedState,
    req: HttpRequest,
    Signed(s): Signed,
) -> HttpResponse {
    use actix_web::ResponseError;
    let (status, error) = match crate::marketplace::sync_once(
        &state.db,
        &state.marketplace,
        &state.metrics,
    )
    .await
    {
        Ok(_) => return see_other(format!("{}/marketplace?done=synced", root(&req))),
        Err(e) => match ApiError::from(e) {
            // sync_once leaves reporting to its caller: an internal error is logged by
            // `internal`, a Marketplace failure here; a refusal is only shown.
            ApiError::BadGateway { message, .. } => {
                tracing::warn!(error = %message, "Marketplace sync failed; stored data unchanged");
                (StatusCode::BAD_GATEWAY, message)
            }
            ApiError::Internal(e) => return internal(&req, ApiError::Internal(e)),
            other => (other.status_code(), other.to_string()),
        },
    };
    let view = match sync_view(&state).await {
        Ok(v) => v,
        Err(e) => return internal(&req, e),
    };
    pages::html_response(
        status,
        pages::marketplace(&ctx(&req, &s), &view, None, Some(&error)),
    )
}

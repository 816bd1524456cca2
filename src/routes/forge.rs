//! `POST /forge/lifecycle`, `/forge/pre-uninstall`, `/forge/heartbeat`: the Forge lifecycle
//! events and triggers a Forge app's manifest points at this service (README, "Moving your app
//! to Forge"). Authenticated by the Forge Invocation Token only — a Connect JWT is refused —
//! and the installation is the one the token names, never one the body names; see
//! [`crate::registry::forge_events`].

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::SecretString;

use crate::error::ApiError;
use crate::forge::events::Delivery;
use crate::forge::fit::{self, FitError};
use crate::guard::{self, FitRefusal};
use crate::registry::forge_events::{self, Target};
use crate::state::SharedState;

/// The header Forge puts the app system token in.
pub const SYSTEM_TOKEN_HEADER: &str = "x-forge-oauth-system";

/// Mounts the three routes. A vendor's own actix-web app can call this inside its `App` (with
/// an `AppState` in `app_data`), as it does [`super::lifecycle::configure`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, delivery) in [
        ("/forge/lifecycle", Delivery::Lifecycle),
        ("/forge/pre-uninstall", Delivery::PreUninstall),
        ("/forge/heartbeat", Delivery::Scheduled),
    ] {
        cfg.service(
            web::resource(path)
                .app_data(web::Data::new(delivery))
                .route(web::post().to(deliver))
                .default_service(web::to(super::method_not_allowed)),
        );
    }
}

#[tracing::instrument(skip_all, fields(route = %req.path()))]
async fn deliver(
    req: HttpRequest,
    body: Bytes,
    delivery: web::Data<Delivery>,
    state: SharedState,
) -> Result<HttpResponse, ApiError> {
    let target = match fit_target(&state, &req).await {
        Ok(t) => t,
        Err(refused) => return Ok(refused),
    };
    crate::telemetry::record_client_key(&req, &target.client_key);
    let system_token = req
        .headers()
        .get(SYSTEM_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| SecretString::from(v.trim().to_owned()));
    forge_events::handle(state.into_inner(), &target, **delivery, &body, system_token).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Verifies the request's FIT and finds (or registers at first sight) its installation,
/// whatever its status: an `installed` event must reach an uninstalled one, and Forge keeps
/// delivering to a disabled one. A Connect JWT, or no token, is a 401 like a bad FIT.
async fn fit_target(state: &SharedState, req: &HttpRequest) -> Result<Target, HttpResponse> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = match fit::bearer_token(authorization) {
        Some(Ok(token)) => token,
        Some(Err(e)) => return Err(guard::fit_refusal_response(state, &e)),
        None => return Err(guard::fit_refusal_response(state, &FitError::Missing)),
    };
    match guard::authenticate_fit(state, token, crate::store::now()).await {
        Ok((fit, tenant)) => Ok(Target {
            client_key: tenant.client_key().to_string(),
            installation_id: fit.installation_id,
        }),
        Err(FitRefusal::Token(e)) => Err(guard::fit_refusal_response(state, &e)),
        Err(FitRefusal::Unavailable) => Err(crate::error::json_error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service cannot verify requests right now; try again",
        )),
    }
}

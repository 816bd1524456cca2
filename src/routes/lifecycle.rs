//! `POST /installed`, `/uninstalled`, `/enabled`, `/disabled`. Verification happens inside the
//! handler (it needs the parsed body); see [`crate::registry::lifecycle`].

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::domain::LifecycleEvent;
use crate::error::ApiError;
use crate::guard::request_parts;
use crate::registry::lifecycle;
use crate::state::SharedState;

/// Mounts the four lifecycle callbacks at the paths the descriptor names
/// (docs/protocol.md#lifecycle-callbacks). A vendor's own actix-web app can call this inside its
/// `App` (with an `AppState` in `app_data`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, event) in [
        ("/installed", LifecycleEvent::Installed),
        ("/uninstalled", LifecycleEvent::Uninstalled),
        ("/enabled", LifecycleEvent::Enabled),
        ("/disabled", LifecycleEvent::Disabled),
    ] {
        cfg.service(
            web::resource(path)
                .app_data(web::Data::new(event))
                .route(web::post().to(callback))
                .default_service(web::to(super::method_not_allowed)),
        );
    }
    cfg.service(
        web::resource("/atlassian-connect.json")
            .route(web::get().to(descriptor))
            .default_service(web::to(super::method_not_allowed)),
    );
}

async fn callback(
    req: HttpRequest,
    body: Bytes,
    event: web::Data<LifecycleEvent>,
    state: SharedState,
) -> Result<HttpResponse, ApiError> {
    let accepted = lifecycle::handle(&state, **event, request_parts(&req), &body).await?;
    crate::telemetry::record_client_key(&req, &accepted.client_key);
    Ok(HttpResponse::NoContent().finish())
}

#[derive(serde::Deserialize)]
struct DescriptorQuery {
    #[serde(rename = "access-token")]
    access_token: Option<String>,
}

async fn descriptor(state: SharedState, query: web::Query<DescriptorQuery>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json; charset=utf-8")
        .json(state.descriptor.render(query.access_token.as_deref()))
}

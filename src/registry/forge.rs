//! Forge installations in the registry (docs/forge.md): the installation a verified Forge
//! Invocation Token speaks for — from memory when known, registered at first sight otherwise,
//! linked to the installation of the same site — and the events of Forge installations.
//!
//! Identity only ever comes from a verified [`Fit`], never from a request body.

use std::sync::Arc;

use serde_json::Value;

use crate::forge::fit::Fit;
use crate::registry::Error;
use crate::state::AppState;
use crate::store::forge::{self as store, Registered, Sighting};
use crate::tenants::TenantSnapshot;

pub use crate::store::forge::StatusChange;

/// What a verified FIT says about its installation, as the store records it.
pub fn sighting(fit: &Fit, app_key: &str) -> Sighting {
    // Bounded: a FIT is signed by Atlassian, but these strings end up in every listing.
    let short = |v: Option<&String>| v.map(|s| s.chars().take(500).collect::<String>());
    Sighting {
        installation_key: fit.installation_id.as_key(),
        installation_ari: fit.installation_id.ari(),
        app_id: fit.app_id.ari(),
        environment_type: fit.environment.kind.as_str().to_owned(),
        environment_id: short(fit.environment.id.as_ref()),
        cloud_id: short(fit.cloud_id.as_ref()),
        product: short(fit.product.as_ref()),
        site_url: short(fit.site_url.as_ref()).filter(|u| crate::domain::host_of(u).is_some()),
        api_base_url: short(fit.api_base_url.as_ref()),
        app_key: app_key.to_owned(),
    }
}

/// The installation of a verified FIT: from the tenant cache by installation id (no database
/// round trip once known); otherwise registered now — linked by `cloudId` and product to the
/// installation of the same site when there is one (a Connect tenant moving to Forge, a
/// reinstall), else a new Forge-only installation with status `installed`.
pub async fn resolve(state: &AppState, fit: &Fit) -> Result<Arc<TenantSnapshot>, Error> {
    if let Some(tenant) = state
        .tenants
        .get_by_installation(fit.installation_id)
        .await?
    {
        return Ok(tenant);
    }
    let now = crate::store::now();
    let registered = store::register(&state.db, &sighting(fit, &state.app_key), now).await?;
    let key = registered.client_key().to_owned();
    match &registered {
        Registered::Created(_) => {
            tracing::info!(installation_id = %fit.installation_id, "Forge installation registered at first sight")
        }
        Registered::Linked {
            previous_installation_id,
            ..
        } => {
            tracing::info!(
                installation_id = %fit.installation_id,
                client_key = %key,
                previous = previous_installation_id.as_deref().unwrap_or(""),
                "Forge installation linked to the installation of the same site"
            )
        }
        Registered::Known(_) => {}
    }
    state.tenants.invalidate(&key).await;
    state
        .tenants
        .get_by_installation(fit.installation_id)
        .await?
        .ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "Forge installation {} vanished right after registration",
                fit.installation_id
            ))
        })
}

/// Appends a Forge event (`event_type`, the non-secret `payload`) to the installation's
/// history and applies `change`; `last_seen_at` moves to now. The tenant cache of this process
/// forgets the installation when its status changed. False when the installation is gone.
pub async fn record_event(
    state: &AppState,
    tenant: &TenantSnapshot,
    event_type: &str,
    change: Option<StatusChange>,
    payload: &Value,
) -> Result<bool, Error> {
    let now = crate::store::now();
    let written = store::record_event(
        &state.db,
        tenant.client_key(),
        event_type,
        change,
        payload,
        now,
    )
    .await?;
    if written && change.is_some() {
        state.tenants.invalidate(tenant.client_key()).await;
    }
    Ok(written)
}

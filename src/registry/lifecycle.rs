//! Verified lifecycle callbacks (docs/protocol.md#lifecycle-callbacks and
//! docs/protocol.md#signed-install-and-install-keys).
//!
//! Order of checks, each failure leaving the database untouched:
//! 1. the token — present, well-formed, allowed `alg`, signature (RS256 by the key fetched for
//!    its `kid`, or HS256 by the tenant's stored secret on `enabled`/`disabled`), `exp`/`iat`/
//!    `nbf` with leeway, `aud` for signed installs, `qsh` of the request as received: 401;
//! 2. the body — a JSON object with the required string fields, `eventType` matching the route,
//!    `key` equal to the app key: 400;
//! 3. `iss` equal to the body's `clientKey`: 401.
//!
//! Only then is anything written.

use serde_json::{Map, Value};

use crate::connect::RequestParts;
use crate::connect::jwt::{self, Claims, JwtError, QshPolicy};
use crate::connect::qsh;
use crate::domain::{LifecycleEvent, host_of};
use crate::registry::{Error, grants};
use crate::state::AppState;
use crate::store::installations::{self, Applied, InstallRecord, Site};
use crate::store::lifecycle_tokens::TokenUse;

/// What a verified callback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub client_key: String,
    pub applied: Applied,
    /// `access-token` from the `installed` URL (descriptor installs from `install_url`).
    pub access_token: Option<String>,
}

/// Why a callback was refused. Its own type rather than [`Error`] because the answers are the
/// protocol's: a token problem is 401 (or 503 when the key server is down), a body problem 400
/// with the codes `invalid_json`, `missing_field` or `invalid_request`.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error(transparent)]
    Token(JwtError),
    #[error("the token's iss does not match the payload's clientKey")]
    IssMismatch,
    /// The same signed token was already applied with another body.
    #[error("this signed token was already used with another body")]
    Replayed,
    /// The body is not a JSON object.
    #[error("{0}")]
    NotJson(&'static str),
    #[error("{0}: is required")]
    MissingField(&'static str),
    /// A field with a wrong type or value ([`Error::Invalid`]), or the database failed.
    #[error(transparent)]
    Registry(#[from] Error),
}

impl From<sqlx::Error> for CallbackError {
    fn from(e: sqlx::Error) -> Self {
        CallbackError::Registry(e.into())
    }
}

/// One lifecycle callback, the whole job: verify it, apply it and, once it was written, drop
/// the tenant from this process's cache and redeem the access token an `installed` URL
/// carried. Counted in `lifecycle_events_total` by event and outcome.
pub async fn handle(
    state: &AppState,
    event: LifecycleEvent,
    parts: RequestParts<'_>,
    body: &[u8],
) -> Result<Accepted, CallbackError> {
    let result = verify_and_apply(state, event, parts, body).await;
    let outcome = match &result {
        Ok(a) if a.applied == Applied::Written => "accepted",
        Ok(_) => "ignored",
        Err(CallbackError::Token(JwtError::KeyUnavailable)) => "error",
        Err(CallbackError::Token(_) | CallbackError::IssMismatch | CallbackError::Replayed) => {
            "unauthorized"
        }
        Err(
            CallbackError::NotJson(_)
            | CallbackError::MissingField(_)
            | CallbackError::Registry(Error::Invalid { .. }),
        ) => "bad_request",
        Err(CallbackError::Registry(_)) => "error",
    };
    state
        .metrics
        .lifecycle_events
        .with_label_values(&[event.as_str(), outcome])
        .inc();
    if let Ok(accepted) = &result {
        after_written(state, accepted).await;
    }
    result
}

/// After a verified callback was written: drop the tenant from this process's cache, and
/// redeem the access token an `installed` URL carried (docs/licensing.md#access-tokens). A
/// failed redemption is logged and never fails the install; a token another site already
/// redeemed grants nothing.
async fn after_written(state: &AppState, accepted: &Accepted) {
    if accepted.applied != Applied::Written {
        return;
    }
    state.tenants.invalidate(&accepted.client_key).await;
    if let Some(token) = &accepted.access_token {
        let now = crate::store::now();
        match grants::redeem_access_token(state, token, &accepted.client_key, "site", now).await {
            Ok(grant) => {
                tracing::info!(client_key = %accepted.client_key, grant_id = %grant.id, "access token from the install URL redeemed")
            }
            Err(e) => {
                tracing::warn!(client_key = %accepted.client_key, error = %e, "access token from the install URL not redeemed")
            }
        }
    }
}

async fn verify_and_apply(
    state: &AppState,
    event: LifecycleEvent,
    parts: RequestParts<'_>,
    body: &[u8],
) -> Result<Accepted, CallbackError> {
    let (claims, signature) = verify_token(state, event, parts)
        .await
        .map_err(|e| token_error(state, e))?;
    let payload = Payload::parse(body, event, &state.app_key)?;
    if claims.iss.as_deref() != Some(payload.client_key.as_str()) {
        state
            .metrics
            .verification_failures
            .with_label_values(&["iss_mismatch"])
            .inc();
        return Err(CallbackError::IssMismatch);
    }
    let iat = claims.iat.unwrap_or_default();
    let now = crate::store::now();
    let stored = payload.stored_json();
    // The token is accepted until exp + leeway (checked above, so exp is present): that is
    // how long a presentation of it must be remembered.
    let accepted_until = claims
        .exp
        .unwrap_or_default()
        .saturating_add(state.config.jwt_leeway_secs as i64);
    let token = TokenUse::new(
        &signature,
        body,
        chrono::DateTime::from_timestamp(accepted_until, 0).unwrap_or(now),
    );
    let callback = installations::Callback {
        token: &token,
        iat,
        payload: &stored,
        now,
    };
    let applied = match event {
        LifecycleEvent::Installed => {
            let mut rec = payload.install_record()?;
            rec.shared_secret = state.config.secrets.seal(
                crate::secrets::Field::SHARED_SECRET,
                &rec.client_key,
                &rec.shared_secret,
            );
            // A Forge-only row holding this installation id becomes this tenant: the cache
            // must forget the key it had.
            let holder = match &rec.forge_installation_id {
                Some(id) => crate::store::forge::client_key_by_installation(&state.db, id)
                    .await?
                    .filter(|k| *k != rec.client_key),
                None => None,
            };
            let applied = installations::record_install(&state.db, &rec, &callback).await?;
            if let Some(old) = holder {
                state.tenants.invalidate(&old).await;
            }
            applied
        }
        other => {
            let key = &payload.client_key;
            installations::record_transition(&state.db, key, other.as_str(), &callback).await?
        }
    };
    match applied {
        Applied::Written => {
            tracing::info!(client_key = %payload.client_key, event = event.as_str(), "lifecycle event recorded")
        }
        Applied::Stale => {
            tracing::warn!(client_key = %payload.client_key, event = event.as_str(), "stale lifecycle token ignored")
        }
        Applied::Unknown => {
            tracing::warn!(client_key = %payload.client_key, event = event.as_str(), "lifecycle event for an unknown tenant ignored")
        }
        Applied::Retry => {
            tracing::info!(client_key = %payload.client_key, event = event.as_str(), "retried lifecycle callback: already applied")
        }
        Applied::Replayed => {
            state
                .metrics
                .verification_failures
                .with_label_values(&["replayed"])
                .inc();
            tracing::warn!(client_key = %payload.client_key, event = event.as_str(), "lifecycle token replayed with another body refused");
            return Err(CallbackError::Replayed);
        }
    }
    if applied == Applied::Written && event == LifecycleEvent::Installed {
        state.host_refresh.installed(&payload.client_key); // background license + cloudId read
    }
    let access_token = (event == LifecycleEvent::Installed)
        .then(|| query_param(parts.query, "access-token"))
        .flatten();
    Ok(Accepted {
        client_key: payload.client_key,
        applied,
        access_token,
    })
}

/// Step 1: the token. Returns verified claims and the token's signature (its third segment,
/// the identity of this signed token for replay detection); `iss` is compared with the body
/// later.
async fn verify_token(
    state: &AppState,
    event: LifecycleEvent,
    parts: RequestParts<'_>,
) -> Result<(Claims, String), JwtError> {
    let token = jwt::extract_token(parts.authorization, parts.query)?.ok_or(JwtError::Missing)?;
    let signature = token
        .rsplit_once('.')
        .map(|(_, s)| s.to_owned())
        .ok_or(JwtError::Malformed)?;
    let (header, unverified) = jwt::peek(&token)?;
    let leeway = state.config.jwt_leeway_secs;
    let now = chrono::Utc::now().timestamp();
    let claims = match header.alg.as_str() {
        "RS256" => {
            let kid = header.kid.as_deref().ok_or(JwtError::MissingKid)?;
            // What can be checked without the key is checked before the key is
            // fetched, so a junk token never costs an outbound request. The signature covers
            // these claims: once it verifies, they are the claims checked here.
            jwt::check_times(&unverified, now, leeway)?;
            jwt::check_audience(&unverified, state.config.app_base_url.as_str())?;
            jwt::check_qsh(
                &unverified,
                &qsh::qsh(parts.method, parts.path, parts.query, &state.base_path),
                QshPolicy::RequestOnly,
            )?;
            let key = state.install_keys.get(kid).await?;
            jwt::verify_rs256(&token, &key)?
        }
        // A shared-secret token is only meaningful once the tenant exists: never on
        // installed/uninstalled (no trust on first use: docs/protocol.md#signed-install-and-install-keys).
        "HS256" if matches!(event, LifecycleEvent::Enabled | LifecycleEvent::Disabled) => {
            let iss = unverified
                .iss
                .as_deref()
                .ok_or(JwtError::MissingClaim("iss"))?;
            let mut tenant = installations::get(&state.db, iss)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "tenant lookup failed");
                    JwtError::KeyUnavailable
                })?
                .ok_or(JwtError::BadSignature)?;
            crate::secrets::open_row_secret(&state.config.secrets, &mut tenant);
            let secret = tenant.shared_secret.ok_or(JwtError::BadSignature)?;
            let claims = jwt::verify_hs256(&token, secret.as_bytes())?;
            jwt::check_times(&claims, now, leeway)?;
            jwt::check_qsh(
                &claims,
                &qsh::qsh(parts.method, parts.path, parts.query, &state.base_path),
                QshPolicy::RequestOnly,
            )?;
            claims
        }
        other => return Err(JwtError::bad_algorithm(other)),
    };
    Ok((claims, signature))
}

fn token_error(state: &AppState, e: JwtError) -> CallbackError {
    state
        .metrics
        .verification_failures
        .with_label_values(&[e.reason()])
        .inc();
    tracing::info!(reason = e.reason(), "lifecycle callback rejected");
    CallbackError::Token(e)
}

/// Step 2: the body.
struct Payload {
    obj: Map<String, Value>,
    client_key: String,
}

impl Payload {
    fn parse(body: &[u8], event: LifecycleEvent, app_key: &str) -> Result<Payload, CallbackError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| CallbackError::NotJson("the body is not valid JSON"))?;
        let Value::Object(obj) = value else {
            return Err(CallbackError::NotJson("the body must be a JSON object"));
        };
        let p = Payload {
            client_key: required(&obj, "clientKey")?,
            obj,
        };
        let key = required(&p.obj, "key")?;
        let base_url = required(&p.obj, "baseUrl")?;
        required(&p.obj, "productType")?;
        let event_type = required(&p.obj, "eventType")?;
        if event == LifecycleEvent::Installed {
            required(&p.obj, "sharedSecret")?;
        }
        for field in OPTIONAL {
            optional(&p.obj, field)?;
        }
        if event_type != event.as_str() {
            let why = format!("expected \"{}\" on this route", event.as_str());
            return Err(Error::invalid("eventType", why).into());
        }
        if key != app_key {
            return Err(Error::invalid("key", "is not this app's key").into());
        }
        match url::Url::parse(&base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => return Err(Error::invalid("baseUrl", "is not an http(s) URL").into()),
        }
        Ok(p)
    }

    fn str(&self, field: &str) -> Option<String> {
        self.obj
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn install_record(&self) -> Result<InstallRecord, CallbackError> {
        let base_url = self.str("baseUrl").unwrap_or_default();
        Ok(InstallRecord {
            client_key: self.client_key.clone(),
            site: Site {
                app_key: self.str("key").unwrap_or_default(),
                base_host: host_of(&base_url)
                    .ok_or_else(|| Error::invalid("baseUrl", "has no host"))?,
                base_url: base_url.trim_end_matches('/').to_owned(),
                display_url: self.str("displayUrl"),
                product_type: self.str("productType").unwrap_or_default(),
                description: self.str("description"),
                server_version: self.str("serverVersion"),
                plugins_version: self.str("pluginsVersion"),
                oauth_client_id: self.str("oauthClientId"),
            },
            shared_secret: self.str("sharedSecret").unwrap_or_default(),
            forge_installation_id: self
                .str("installationId")
                .as_deref()
                .and_then(crate::forge::ids::InstallationId::parse)
                .map(|id| id.as_key()),
            installation_id: self.str("installationId"),
            service_entitlement_number: self.str("serviceEntitlementNumber"),
            entitlement_id: self.str("entitlementId"),
            entitlement_number: self.str("entitlementNumber"),
        })
    }

    /// The payload as kept in the event history: without the shared secret.
    fn stored_json(&self) -> Value {
        let mut obj = self.obj.clone();
        obj.remove("sharedSecret");
        Value::Object(obj)
    }
}

const OPTIONAL: [&str; 11] = [
    "displayUrl",
    "description",
    "serverVersion",
    "pluginsVersion",
    "oauthClientId",
    "installationId",
    "serviceEntitlementNumber",
    "entitlementId",
    "entitlementNumber",
    "displayUrlServicedeskHelpCenter",
    "sharedSecret",
];

fn required(obj: &Map<String, Value>, field: &'static str) -> Result<String, CallbackError> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(Error::invalid(field, "must not be empty").into()),
        None | Some(Value::Null) => Err(CallbackError::MissingField(field)),
        Some(_) => Err(Error::invalid(field, "must be a string").into()),
    }
}

fn optional(obj: &Map<String, Value>, field: &'static str) -> Result<(), Error> {
    match obj.get(field) {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(Error::invalid(field, "must be a string")),
    }
}

/// The first value of a form-encoded query parameter.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

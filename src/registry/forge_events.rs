//! Forge lifecycle events and triggers (`POST /forge/lifecycle`, `/forge/pre-uninstall`,
//! `/forge/heartbeat`), applied to an installation that a verified Forge Invocation Token
//! named. What Forge sends, and why identity never comes from the body:
//! docs/protocol.md#forge-lifecycle-and-triggers.
//!
//! * `avi:forge:installed:app` registers (the token already did, at first sight) or
//!   re-activates the installation: status `installed`, `uninstalled_at` cleared.
//! * `avi:forge:upgraded:app` is recorded in the history.
//! * The pre-uninstall trigger sets status `uninstalled` and `uninstalled_at`. Forge keeps the
//!   app running for a while after that, and its tokens are still served; only an
//!   `installed` sets the status back.
//! * The hourly trigger sets `last_seen_at`: its absence is how an uninstall shows.
//! * With `x-forge-oauth-system`, the app system token is kept for the installation
//!   (encrypted when `SECRETS_KEY` is set) and a read of the Forge License API is asked for.
//!
//! Forge waits 5 seconds and redelivers on a failure or a timeout, so the work runs in a task
//! of its own and the answer waits for it at most [`ANSWER_WITHIN`]: an unusually slow
//! database finishes the write after the answer rather than making Forge retry. A redelivery
//! (or Forge's occasional duplicate) changes the row to the same values again and adds no
//! second history entry ([`crate::store::forge_events::apply`]).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::forge::events::{self, Delivery, EventKind};
use crate::forge::ids::InstallationId;
use crate::registry::Error;
use crate::secrets::Field;
use crate::state::AppState;
use crate::store::forge_events::{self as store, Recorded, Transition};

/// The longest a delivery waits for its write before it is answered anyway.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(800);
/// A system token longer than this is not one (Atlassian's are a few KiB at most).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Atlassian: a system token delivered directly to a remote is valid for at least 2 hours…
const TOKEN_MIN_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(2);
/// … and at most 4.
const TOKEN_MAX_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(4);

/// The installation a verified token named.
#[derive(Debug, Clone)]
pub struct Target {
    /// The row's key.
    pub client_key: String,
    pub installation_id: InstallationId,
}

/// Applies one delivery for `target`. `body` is only read for the event type (and a few
/// fields for the history); a bad body is a 400 and nothing changes.
pub async fn handle(
    state: Arc<AppState>,
    target: &Target,
    delivery: Delivery,
    body: &[u8],
    system_token: Option<SecretString>,
) -> Result<(), Error> {
    let event = match events::parse(delivery, body) {
        Ok(e) => e,
        Err(e) => {
            count(&state, delivery_label(delivery), "bad_request");
            return Err(Error::invalid("body", e.to_string()));
        }
    };
    let token = system_token.and_then(|t| {
        let usable = usable_token(t.expose_secret());
        if !usable {
            tracing::warn!("an x-forge-oauth-system header that is not a token was ignored");
        }
        usable.then_some(t)
    });
    let target = target.clone();
    let work = tokio::spawn(async move { apply(&state, &target, &event, token).await });
    match tokio::time::timeout(ANSWER_WITHIN, work).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(Error::Internal(anyhow::anyhow!(
            "event task failed: {join}"
        ))),
        // Still writing: answered now, finished in the background (logged there on failure).
        Err(_) => Ok(()),
    }
}

async fn apply(
    state: &AppState,
    target: &Target,
    event: &events::ForgeEvent,
    token: Option<SecretString>,
) -> Result<(), Error> {
    let now = crate::store::now();
    let label = event.kind.history_type();
    let result = async {
        let transition = match event.kind {
            EventKind::Installed => Some(Transition::Installed),
            EventKind::Upgraded => Some(Transition::Upgraded),
            EventKind::PreUninstall => Some(Transition::PreUninstall),
            EventKind::Scheduled => None,
        };
        let recorded = match transition {
            Some(t) => {
                store::apply(
                    &state.db,
                    &target.client_key,
                    t,
                    event.kind.history_type(),
                    &event.record,
                    now,
                )
                .await?
            }
            None => {
                store::heartbeat(&state.db, &target.client_key, now).await?;
                Recorded::New
            }
        };
        if let Some(token) = &token {
            keep_token(state, target, token.expose_secret(), now).await?;
        }
        Ok::<_, sqlx::Error>(recorded)
    }
    .await;
    match result {
        Ok(recorded) => {
            if transition_changes_status(event.kind) {
                state.tenants.invalidate(&target.client_key).await;
            }
            if token.is_some() {
                state.forge_license.installed(&target.client_key);
            }
            let outcome = match recorded {
                Recorded::New => "accepted",
                Recorded::Duplicate => "duplicate",
                Recorded::Unknown => "ignored",
            };
            if recorded == Recorded::Unknown {
                tracing::warn!(client_key = %target.client_key, event = label, "a Forge event for an installation that is not in the registry");
            }
            count(state, label, outcome);
            Ok(())
        }
        Err(e) => {
            tracing::error!(client_key = %target.client_key, event = label, error = %e, "applying a Forge event failed");
            count(state, label, "error");
            Err(e.into())
        }
    }
}

fn transition_changes_status(kind: EventKind) -> bool {
    matches!(kind, EventKind::Installed | EventKind::PreUninstall)
}

fn delivery_label(delivery: Delivery) -> &'static str {
    match delivery {
        Delivery::Lifecycle => "forge:lifecycle",
        Delivery::PreUninstall => EventKind::PreUninstall.history_type(),
        Delivery::Scheduled => EventKind::Scheduled.history_type(),
    }
}

fn count(state: &AppState, event: &str, outcome: &str) {
    state
        .metrics
        .lifecycle_events
        .with_label_values(&[event, outcome])
        .inc();
}

/// Seals and stores the token with its expiry. The row key of the encryption is the Forge
/// installation id, which stays with the token even when the row's client key changes (a
/// Connect `installed` naming the installation later).
async fn keep_token(
    state: &AppState,
    target: &Target,
    token: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let expires_at = token_expiry(token, now);
    let sealed = state.config.secrets.seal(
        Field::FORGE_SYSTEM_TOKEN,
        &target.installation_id.as_key(),
        token,
    );
    crate::store::forge_license::store_token(&state.db, &target.client_key, &sealed, expires_at)
        .await?;
    Ok(())
}

/// A header value that can be a token: printable ASCII without spaces, bounded.
pub fn usable_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Until when a system token may be used. Atlassian calls the tokens opaque, yet documents
/// reading their `exp` claim for the expiry: when the token is a JWT with a numeric `exp`, that
/// (never more than the documented 4 hours ahead); otherwise the documented minimum, 2 hours.
/// The claim is read without verification: it only decides when we stop *using* the token.
pub fn token_expiry(token: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    let exp = crate::connect::jwt::segments(token, MAX_TOKEN_LEN)
        .and_then(|(_, claims, _)| URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|claims| claims.get("exp").and_then(serde_json::Value::as_i64))
        .and_then(|exp| DateTime::<Utc>::from_timestamp(exp, 0));
    match exp {
        Some(exp) => exp.min(now + TOKEN_MAX_LIFETIME),
        None => now + TOKEN_MIN_LIFETIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.as_bytes())
        )
    }

    #[test]
    fn expiry_from_exp_or_the_documented_lifetimes() {
        let now: DateTime<Utc> = "2026-12-03T08:00:00Z".parse().unwrap();
        let in_3h = now.timestamp() + 3 * 3600;
        assert_eq!(
            token_expiry(&jwt(&format!(r#"{{"exp":{in_3h}}}"#)), now).timestamp(),
            in_3h
        );
        // Further than 4 hours: 4 hours.
        let in_9h = now.timestamp() + 9 * 3600;
        assert_eq!(
            token_expiry(&jwt(&format!(r#"{{"exp":{in_9h}}}"#)), now),
            now + TOKEN_MAX_LIFETIME
        );
        // Already expired stays expired.
        let past = now.timestamp() - 10;
        assert_eq!(
            token_expiry(&jwt(&format!(r#"{{"exp":{past}}}"#)), now).timestamp(),
            past
        );
        // Opaque, or a JWT without a usable exp: 2 hours.
        for opaque in [
            "opaque-token".to_owned(),
            jwt(r#"{"exp":"soon"}"#),
            jwt("not json"),
            "a.b".to_owned(),
        ] {
            assert_eq!(
                token_expiry(&opaque, now),
                now + TOKEN_MIN_LIFETIME,
                "{opaque}"
            );
        }
    }

    #[test]
    fn usable_tokens() {
        assert!(usable_token("eyJ.abc-_.x~y+/="));
        assert!(!usable_token(""));
        assert!(!usable_token("two words"));
        assert!(!usable_token("line\nbreak"));
        assert!(!usable_token("é"));
        assert!(!usable_token(&"x".repeat(MAX_TOKEN_LEN + 1)));
    }
}

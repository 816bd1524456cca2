//! The bodies Forge POSTs to a remote for lifecycle events and triggers, parsed. Pure: no
//! HTTP framework, no database.
//!
//! Three deliveries, one route each (see docs/protocol.md, "Forge lifecycle and triggers"):
//! * [`Delivery::Lifecycle`] — a `trigger` module subscribed to `avi:forge:installed:app` and
//!   `avi:forge:upgraded:app` (developer.atlassian.com/platform/forge/events-reference/life-cycle/);
//! * [`Delivery::PreUninstall`] — the `preUninstall` module
//!   (…/manifest-reference/modules/pre-uninstall-trigger/): `{context: {cloudId, moduleKey},
//!   contextToken}`;
//! * [`Delivery::Scheduled`] — a `scheduledTrigger` (…/remote/scheduled-triggers/), same shape.
//!
//! Atlassian does not say whether a remote receives the event itself or wrapped as
//! `{"payload": event}` (the retry section of …/remote/sending-product-events/ shows the
//! latter, public remotes read the former), so both are accepted. A redelivery carries
//! `retryContext {retryCount, retryReason, retryData}`, inside the event or beside it.
//!
//! Nothing in a body is trusted: the installation, site and environment come from the verified
//! Forge Invocation Token, never from here. The body only says *which* event it is; what is
//! kept of it for the installation's history ([`ForgeEvent::record`]) is a short list of known
//! fields, bounded in length, and never the `contextToken` (a Forge token, which must not be
//! stored or logged).

use serde_json::{Map, Value};

/// The longest string kept from a body (ids and versions are far shorter).
pub const MAX_FIELD: usize = 200;

pub const INSTALLED: &str = "avi:forge:installed:app";
pub const UPGRADED: &str = "avi:forge:upgraded:app";
/// The history's name for the pre-uninstall trigger (Forge gives it none).
pub const PRE_UNINSTALL: &str = "forge:pre_uninstall";

/// Which route received the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Lifecycle,
    PreUninstall,
    Scheduled,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Installed,
    Upgraded,
    PreUninstall,
    Scheduled,
}

impl EventKind {
    /// The `event_type` of the installation's history: Forge's own event names, and two names
    /// of ours for the modules that have none.
    pub fn history_type(self) -> &'static str {
        match self {
            EventKind::Installed => INSTALLED,
            EventKind::Upgraded => UPGRADED,
            EventKind::PreUninstall => PRE_UNINSTALL,
            EventKind::Scheduled => "forge:scheduled",
        }
    }
}

/// A redelivery's `retryContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryContext {
    pub retry_count: u32,
    pub retry_reason: Option<String>,
}

/// One parsed delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct ForgeEvent {
    pub kind: EventKind,
    /// The installation id the body names (`id`), for the record only: identity comes from the
    /// FIT, and a body naming another installation changes nothing for that one.
    pub body_installation_id: Option<String>,
    /// `app.version` of an installed/upgraded event.
    pub app_version: Option<String>,
    /// `installerAccountId` / `upgraderAccountId`.
    pub account_id: Option<String>,
    /// Present on a redelivery.
    pub retry: Option<RetryContext>,
    /// What the installation's history keeps of the body: known fields only, each bounded, no
    /// token.
    pub record: Value,
}

impl ForgeEvent {
    /// True for a redelivery of an event Forge already sent (the first attempt may have been
    /// applied: every handler must be idempotent anyway).
    pub fn is_retry(&self) -> bool {
        self.retry.as_ref().is_some_and(|r| r.retry_count > 0)
    }
}

/// Why a body was refused (`400`). Messages name fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not JSON")]
    NotJson,
    #[error("the body is not a JSON object")]
    NotObject,
    #[error("`eventType` is not a string")]
    BadEventType,
    #[error(
        "the event is not a Forge lifecycle event this route handles (avi:forge:installed:app, avi:forge:upgraded:app)"
    )]
    UnknownEvent,
}

/// Parses a delivery received on `delivery`'s route. An empty body counts as `{}` for the
/// triggers (they carry nothing we need); a lifecycle event must say which event it is, by
/// `eventType` or, when that is absent, by `installerAccountId` / `upgraderAccountId` (the
/// field only that event has).
pub fn parse(delivery: Delivery, body: &[u8]) -> Result<ForgeEvent, EventError> {
    let whole: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|_| EventError::NotJson)?
    };
    let Value::Object(outer) = whole else {
        return Err(EventError::NotObject);
    };
    let event = match outer.get("payload") {
        Some(Value::Object(inner)) => inner,
        Some(_) => return Err(EventError::NotObject),
        None => &outer,
    };
    // Fields may sit in the event or in the envelope beside it; the event's own win.
    let field = |name: &str| event.get(name).or_else(|| outer.get(name));

    let event_type = match field("eventType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(EventError::BadEventType),
    };
    let kind = match delivery {
        Delivery::PreUninstall => EventKind::PreUninstall,
        Delivery::Scheduled => EventKind::Scheduled,
        Delivery::Lifecycle => match event_type {
            Some(t) if t.eq_ignore_ascii_case(INSTALLED) => EventKind::Installed,
            Some(t) if t.eq_ignore_ascii_case(UPGRADED) => EventKind::Upgraded,
            Some(_) => return Err(EventError::UnknownEvent),
            None if event.contains_key("installerAccountId") => EventKind::Installed,
            None if event.contains_key("upgraderAccountId") => EventKind::Upgraded,
            None => return Err(EventError::UnknownEvent),
        },
    };

    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(bounded);
    let app = event.get("app");
    let account_id = match kind {
        EventKind::Installed => text(event.get("installerAccountId")),
        EventKind::Upgraded => text(event.get("upgraderAccountId")),
        _ => None,
    };
    let retry = match field("retryContext") {
        Some(Value::Object(r)) => Some(RetryContext {
            retry_count: r
                .get("retryCount")
                .and_then(Value::as_u64)
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            retry_reason: text(r.get("retryReason")),
        }),
        _ => None,
    };
    let parsed = ForgeEvent {
        kind,
        body_installation_id: text(event.get("id")),
        app_version: text(app.and_then(|a| a.get("version"))),
        account_id,
        retry,
        record: Value::Null,
    };
    let record = record(&parsed, event);
    Ok(ForgeEvent { record, ..parsed })
}

/// The history entry: the event's name and the few fields worth showing, bounded. The site
/// (`context.cloudId` or the `context` ARI) and module key are kept as the body said them.
fn record(e: &ForgeEvent, event: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("eventType".into(), Value::from(e.kind.history_type()));
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            out.insert(key.into(), Value::String(v));
        }
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(bounded);
    put("id", e.body_installation_id.clone());
    put("appVersion", e.app_version.clone());
    put(
        "appName",
        text(event.get("app").and_then(|a| a.get("name"))),
    );
    put(
        "environmentId",
        text(event.get("environment").and_then(|v| v.get("id"))),
    );
    match e.kind {
        EventKind::Installed => put("installerAccountId", e.account_id.clone()),
        EventKind::Upgraded => put("upgraderAccountId", e.account_id.clone()),
        _ => {}
    }
    match event.get("context") {
        Some(Value::String(ari)) => put("context", Some(bounded(ari))),
        Some(Value::Object(c)) => {
            put("cloudId", text(c.get("cloudId")));
            put("moduleKey", text(c.get("moduleKey")));
        }
        _ => {}
    }
    if let Some(r) = &e.retry {
        let mut retry = Map::new();
        retry.insert("retryCount".into(), Value::from(r.retry_count));
        if let Some(reason) = &r.retry_reason {
            retry.insert("retryReason".into(), Value::String(reason.clone()));
        }
        out.insert("retryContext".into(), Value::Object(retry));
    }
    Value::Object(out)
}

/// At most [`MAX_FIELD`] characters, control characters dropped: these strings are shown in
/// the admin API, the dashboard and the CLI.
fn bounded(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_FIELD)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTALLED_BODY: &str = include_str!("../../tests/fixtures/forge/installed.json");
    const UPGRADED_BODY: &str = include_str!("../../tests/fixtures/forge/upgraded.json");
    const WRAPPED_RETRY: &str =
        include_str!("../../tests/fixtures/forge/installed-wrapped-retry.json");
    const PRE_UNINSTALL: &str = include_str!("../../tests/fixtures/forge/pre-uninstall.json");
    const SCHEDULED: &str = include_str!("../../tests/fixtures/forge/scheduled.json");

    #[test]
    fn installed_as_documented() {
        let e = parse(Delivery::Lifecycle, INSTALLED_BODY.as_bytes()).unwrap();
        assert_eq!(e.kind, EventKind::Installed);
        assert_eq!(
            e.body_installation_id.as_deref(),
            Some("fff8e466-31f4-4c73-a337-c3309dd930dc")
        );
        assert_eq!(e.app_version.as_deref(), Some("9.0.0"));
        assert_eq!(e.account_id.as_deref(), Some("4ad9aa0c52dc1b420a791d12"));
        assert!(!e.is_retry());
        assert_eq!(e.record["eventType"], INSTALLED);
        assert_eq!(e.record["appName"], "My App Name");
        assert_eq!(
            e.record["environmentId"],
            "23863033-1de4-4ebf-b30d-c906264a1e92"
        );
        assert_eq!(
            e.record["context"],
            "ari:cloud:jira::site/4c8e2f9a-1b3d-4e5f-a6b7-c8d9e0f1a2b3"
        );
        assert_eq!(e.record["installerAccountId"], "4ad9aa0c52dc1b420a791d12");
        // Fields not on the list are not kept.
        assert!(e.record.get("app").is_none());
    }

    #[test]
    fn upgraded_as_documented() {
        let e = parse(Delivery::Lifecycle, UPGRADED_BODY.as_bytes()).unwrap();
        assert_eq!(e.kind, EventKind::Upgraded);
        assert_eq!(e.app_version.as_deref(), Some("10.0.0"));
        assert_eq!(e.record["upgraderAccountId"], "4ad9aa0c52dc1b420a791d12");
    }

    #[test]
    fn a_wrapped_redelivery() {
        let e = parse(Delivery::Lifecycle, WRAPPED_RETRY.as_bytes()).unwrap();
        assert_eq!(e.kind, EventKind::Installed);
        assert_eq!(
            e.retry,
            Some(RetryContext {
                retry_count: 2,
                retry_reason: Some("INVALID_REMOTE_INVOCATION_ERROR".into())
            })
        );
        assert!(e.is_retry());
        assert_eq!(e.record["retryContext"]["retryCount"], 2);
        // The wrapped and the bare event say the same.
        let bare = parse(Delivery::Lifecycle, INSTALLED_BODY.as_bytes()).unwrap();
        assert_eq!(e.body_installation_id, bare.body_installation_id);
        assert_eq!(e.account_id, bare.account_id);
        // What the history keeps differs only by the retryContext.
        let mut kept = e.record.clone();
        kept.as_object_mut().unwrap().remove("retryContext");
        assert_eq!(kept, bare.record);
    }

    #[test]
    fn retry_context_beside_the_event() {
        let body = r#"{"payload":{"eventType":"avi:forge:upgraded:app","id":"x"},
                       "retryContext":{"retryCount":1,"retryReason":"TIMEOUT_ERROR","retryData":null}}"#;
        let e = parse(Delivery::Lifecycle, body.as_bytes()).unwrap();
        assert_eq!(e.kind, EventKind::Upgraded);
        assert_eq!(
            e.retry.unwrap().retry_reason.as_deref(),
            Some("TIMEOUT_ERROR")
        );
        // An eventType on the envelope only.
        let body = r#"{"eventType":"avi:forge:installed:app","payload":{"id":"x"}}"#;
        assert_eq!(
            parse(Delivery::Lifecycle, body.as_bytes()).unwrap().kind,
            EventKind::Installed
        );
    }

    #[test]
    fn without_event_type_the_account_field_tells() {
        let e = parse(
            Delivery::Lifecycle,
            br#"{"id":"x","installerAccountId":"a","app":{"id":"y","version":"1.0.0"}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Installed);
        let e = parse(
            Delivery::Lifecycle,
            br#"{"payload":{"upgraderAccountId":"a"}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Upgraded);
    }

    #[test]
    fn pre_uninstall_keeps_no_token() {
        let e = parse(Delivery::PreUninstall, PRE_UNINSTALL.as_bytes()).unwrap();
        assert_eq!(e.kind, EventKind::PreUninstall);
        assert_eq!(e.record["eventType"], "forge:pre_uninstall");
        assert_eq!(e.record["cloudId"], "4f6d9508-93c9-4c2e-abd7-916c34920012");
        assert_eq!(e.record["moduleKey"], "example-pre-uninstall");
        let kept = e.record.to_string();
        assert!(!kept.contains("eyJ"), "{kept}");
        assert!(!kept.contains("contextToken"), "{kept}");
    }

    #[test]
    fn scheduled_and_empty_bodies() {
        let e = parse(Delivery::Scheduled, SCHEDULED.as_bytes()).unwrap();
        assert_eq!(e.kind, EventKind::Scheduled);
        assert_eq!(e.record["moduleKey"], "heartbeat");
        assert!(!e.record.to_string().contains("eyJ"));
        for body in [&b""[..], b"  \n", b"{}"] {
            assert_eq!(
                parse(Delivery::Scheduled, body).unwrap().kind,
                EventKind::Scheduled
            );
            assert_eq!(
                parse(Delivery::PreUninstall, body).unwrap().kind,
                EventKind::PreUninstall
            );
        }
    }

    #[test]
    fn the_route_decides_for_triggers() {
        // An installed event sent to the pre-uninstall route is a pre-uninstall: the route is
        // what the manifest wired, the body's eventType cannot turn it into something else.
        let e = parse(Delivery::PreUninstall, INSTALLED_BODY.as_bytes()).unwrap();
        assert_eq!(e.kind, EventKind::PreUninstall);
        assert_eq!(e.record["eventType"], "forge:pre_uninstall");
    }

    #[test]
    fn refusals() {
        let lifecycle = |b: &str| parse(Delivery::Lifecycle, b.as_bytes());
        assert_eq!(lifecycle("{not json"), Err(EventError::NotJson));
        assert_eq!(lifecycle(r#"["a"]"#), Err(EventError::NotObject));
        assert_eq!(lifecycle("null"), Err(EventError::NotObject));
        assert_eq!(lifecycle(r#"{"payload":"x"}"#), Err(EventError::NotObject));
        assert_eq!(
            lifecycle(r#"{"eventType":7}"#),
            Err(EventError::BadEventType)
        );
        assert_eq!(
            lifecycle(r#"{"eventType":"avi:jira:created:issue"}"#),
            Err(EventError::UnknownEvent)
        );
        assert_eq!(
            lifecycle(r#"{"eventType":"avi:forge:uninstalled:app"}"#),
            Err(EventError::UnknownEvent)
        );
        assert_eq!(lifecycle("{}"), Err(EventError::UnknownEvent));
        assert_eq!(lifecycle(""), Err(EventError::UnknownEvent));
        assert_eq!(
            parse(Delivery::Scheduled, b"[1]"),
            Err(EventError::NotObject)
        );
    }

    #[test]
    fn hostile_strings_are_bounded_and_stripped() {
        let long = "x".repeat(10_000);
        let body = format!(
            r#"{{"eventType":"avi:forge:installed:app","id":"{long}","installerAccountId":"a\u001b[31mb\nc",
                "app":{{"version":"{long}","name":"n"}},"retryContext":{{"retryCount":99999999999}}}}"#
        );
        let e = parse(Delivery::Lifecycle, body.as_bytes()).unwrap();
        assert_eq!(e.body_installation_id.unwrap().len(), MAX_FIELD);
        assert_eq!(e.app_version.unwrap().len(), MAX_FIELD);
        assert_eq!(e.account_id.as_deref(), Some("a[31mbc"));
        assert_eq!(e.retry.unwrap().retry_count, u32::MAX);
        assert!(e.record.to_string().len() < 1000);
    }
}

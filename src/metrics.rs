//! Prometheus metrics, rendered at `GET /metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::licensing::Source;
use crate::verified_tokens::FitSource;

/// Every `source` label of `license_decisions_total`, in [`Metrics::license_decision`]'s order.
const DECISION_LABELS: [&str; 7] = [
    "lic",
    "fit",
    "grant",
    "access_token",
    "known_license",
    "enforcement_off",
    "unlicensed",
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub lifecycle_events: IntCounterVec,
    pub verification_failures: IntCounterVec,
    /// Refused Forge Invocation Tokens by reason ([`crate::forge::fit::FitError::reason`]).
    pub fit_verification_failures: IntCounterVec,
    pub license_decisions: IntCounterVec,
    pub host_license_checks: IntCounterVec,
    /// Reads of the Forge License API by outcome.
    pub forge_license_reads: IntCounterVec,
    pub marketplace_syncs: IntCounterVec,
    /// `license_decisions_total` per label, resolved once: the guard counts every request,
    /// and a label lookup (hash and lock) per request is measurable there.
    decisions: [IntCounter; DECISION_LABELS.len()],
    /// `fit_tokens_total{source}`: accepted FITs, `recalled` from memory or `verified` in full.
    fit_tokens: [IntCounter; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let http_requests = counter(
            "http_requests_total",
            "HTTP requests by route, method and status",
            &["route", "method", "status"],
        );
        let lifecycle_events = counter(
            "lifecycle_events_total",
            "Lifecycle callbacks by event type and outcome",
            &["event", "outcome"],
        );
        let verification_failures = counter(
            "jwt_verification_failures_total",
            "Rejected product requests and callbacks by reason",
            &["reason"],
        );
        let fit_verification_failures = counter(
            "fit_verification_failures_total",
            "Rejected Forge Invocation Tokens by reason",
            &["reason"],
        );
        // Every reason shows from the start (at 0), so a dashboard can tell "none" from
        // "not exported".
        for reason in crate::forge::fit::FitError::ALL_REASONS {
            fit_verification_failures.with_label_values(&[reason]);
        }
        let license_decisions = counter(
            "license_decisions_total",
            "License decisions by source (unlicensed when refused)",
            &["source"],
        );
        let fit_tokens = counter(
            "fit_tokens_total",
            "Accepted Forge Invocation Tokens: recalled from memory or verified in full (RS256)",
            &["source"],
        );
        let fit_tokens =
            ["recalled", "verified"].map(|label| fit_tokens.with_label_values(&[label]));
        let forge_license_reads = counter(
            "forge_license_api_reads_total",
            "Background reads of the Forge License API by outcome",
            &["outcome"],
        );
        let host_license_checks = counter(
            "host_license_checks_total",
            "Reads of the product's license endpoint and tenant_info by outcome",
            &["call", "outcome"],
        );
        let marketplace_syncs = counter(
            "marketplace_syncs_total",
            "Marketplace license syncs by outcome",
            &["outcome"],
        );
        let http_latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route and status",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_latency.clone()))
            .expect("unique metric");
        let decisions = DECISION_LABELS.map(|label| license_decisions.with_label_values(&[label]));
        Metrics {
            decisions,
            fit_tokens,
            registry,
            http_requests,
            http_latency,
            lifecycle_events,
            verification_failures,
            fit_verification_failures,
            license_decisions,
            host_license_checks,
            forge_license_reads,
            marketplace_syncs,
        }
    }

    /// Counts one license decision: what licensed the request, or `None` when it was refused.
    pub fn license_decision(&self, licensed_by: Option<Source>) {
        let index = match licensed_by {
            Some(Source::Lic) => 0,
            Some(Source::Fit) => 1,
            Some(Source::Grant) => 2,
            Some(Source::AccessToken) => 3,
            Some(Source::KnownLicense) => 4,
            Some(Source::EnforcementOff) => 5,
            None => 6,
        };
        debug_assert_eq!(
            Some(DECISION_LABELS[index]),
            licensed_by.map(Source::as_str).or(Some("unlicensed"))
        );
        self.decisions[index].inc();
    }

    /// Counts one accepted FIT by how it was accepted.
    pub fn fit_accepted(&self, source: FitSource) {
        self.fit_tokens[match source {
            FitSource::Recalled => 0,
            FitSource::Verified => 1,
        }]
        .inc();
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

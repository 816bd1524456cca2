//! License rules, pure: no I/O, no clock of their own (`now` is passed in).
//!
//! Two questions are answered here:
//! * [`decide`] — may this verified request through? (docs/licensing.md#the-request-decision)
//! * [`view`] — what does the registry show as the installation's license state?
//!   (`license.state`, `source`, `effective_trial_end`:
//!   docs/licensing.md#the-registrys-licence-state)

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{GrantKind, LicenseState};

/// What the rules need to know of a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantFacts {
    pub kind: GrantKind,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl GrantFacts {
    /// Started, not ended, not revoked.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.starts_at <= now && self.ends_at.is_none_or(|e| e > now)
    }
}

/// Where a piece of license data came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// The `lic` parameter of a verified, query-bound request.
    Lic,
    /// The `app.license` of a verified Forge Invocation Token.
    Fit,
    /// The product's license endpoint.
    Host,
    /// The Forge License API (`GET /forge/app/v1/license`).
    ForgeLicenseApi,
    /// The Marketplace reporting API.
    Marketplace,
}

/// One observation of a tenant's license.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LicenseData {
    pub source: DataSource,
    pub at: DateTime<Utc>,
    pub active: bool,
    pub evaluation: bool,
}

/// What is known of a tenant's license, as recorded: the input of [`view`] and
/// [`known_license`]. The store fills it from the installation row
/// (`InstallationRow::observations`); tests and benches build it directly. The fields are the
/// facts as stored, so that what they mean (`lic` is `"active"` or not; which Marketplace
/// time counts) is decided here, once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// The last `lic` bound by a verified, query-bound token, and when it was seen.
    pub lic: Option<String>,
    pub lic_seen_at: Option<DateTime<Utc>>,
    /// The product's license endpoint: active, evaluation, and when it was read.
    pub host_active: Option<bool>,
    pub host_evaluation: Option<bool>,
    pub host_checked_at: Option<DateTime<Utc>>,
    /// The Marketplace reporting API: `status`, `licenseType`, its own `lastUpdated`, when
    /// this service synced it, and the evaluation's end.
    pub mp_status: Option<String>,
    pub mp_license_type: Option<String>,
    pub mp_last_updated: Option<DateTime<Utc>>,
    pub mp_synced_at: Option<DateTime<Utc>>,
    pub mp_trial_end: Option<DateTime<Utc>>,
    /// The last Forge Invocation Token's `app.license`: active, evaluation, trial end, and
    /// when it was seen.
    pub fit_active: Option<bool>,
    pub fit_evaluation: Option<bool>,
    pub fit_trial_end: Option<DateTime<Utc>>,
    pub fit_seen_at: Option<DateTime<Utc>>,
    /// The Forge License API's last answer and when it was read.
    pub forge_api_active: Option<bool>,
    pub forge_api_evaluation: Option<bool>,
    pub forge_api_trial_end: Option<DateTime<Utc>>,
    pub forge_api_checked_at: Option<DateTime<Utc>>,
}

impl Observations {
    /// The observations, each when present: `[lic, host, marketplace, fit, forge_api]`.
    pub fn data(&self) -> [Option<LicenseData>; 5] {
        let lic = match (&self.lic, self.lic_seen_at) {
            (Some(lic), Some(at)) => Some(LicenseData {
                source: DataSource::Lic,
                at,
                active: lic == "active",
                evaluation: false,
            }),
            _ => None,
        };
        let host = match (self.host_active, self.host_checked_at) {
            (Some(active), Some(at)) => Some(LicenseData {
                source: DataSource::Host,
                at,
                active,
                evaluation: self.host_evaluation.unwrap_or(false),
            }),
            _ => None,
        };
        // The Marketplace's own `lastUpdated` says when its data changed; it lags the product
        // by up to a day, so it only wins over a product read made before that change.
        let mp = match (&self.mp_status, self.mp_last_updated.or(self.mp_synced_at)) {
            (Some(status), Some(at)) => Some(LicenseData {
                source: DataSource::Marketplace,
                at,
                active: status.eq_ignore_ascii_case("active"),
                evaluation: self
                    .mp_license_type
                    .as_deref()
                    .is_some_and(is_evaluation_type),
            }),
            _ => None,
        };
        let fit = match (self.fit_active, self.fit_seen_at) {
            (Some(active), Some(at)) => Some(LicenseData {
                source: DataSource::Fit,
                at,
                active,
                evaluation: self.fit_evaluation.unwrap_or(false),
            }),
            _ => None,
        };
        let forge_api = match (self.forge_api_active, self.forge_api_checked_at) {
            (Some(active), Some(at)) => Some(LicenseData {
                source: DataSource::ForgeLicenseApi,
                at,
                active,
                evaluation: self.forge_api_evaluation.unwrap_or(false),
            }),
            _ => None,
        };
        [lic, host, mp, fit, forge_api]
    }

    /// The trial end Forge reported (the FIT's `trialEndDate`, else the License API's), only
    /// while it says the licence is an evaluation: Connect never told this.
    pub fn forge_trial_end(&self) -> Option<DateTime<Utc>> {
        let fit = self
            .fit_trial_end
            .filter(|_| self.fit_evaluation == Some(true));
        let api = self
            .forge_api_trial_end
            .filter(|_| self.forge_api_evaluation == Some(true));
        fit.or(api)
    }
}

impl Observations {
    /// What the sources outside the request say, newest first wins: the product's licence
    /// endpoint and the Marketplace. Forge sources (the Forge License API, the licence of a FIT
    /// from an allowed environment) join here once they are recorded per installation.
    pub fn outside(&self) -> Option<LicenseData> {
        let [_, host, mp, fit, forge_api] = self.data();
        newest([host, mp, fit, forge_api])
    }
}

/// Whether an outside source says the site is licensed: the newest of the product's licence
/// endpoint and the Marketplace says active (docs/licensing.md#lic_trust). A site licensed only
/// by the `lic` its requests carried is not corroborated.
pub fn corroborated(outside: Option<&LicenseData>) -> bool {
    outside.is_some_and(|d| d.active)
}

/// `LIC_TRUST`: how far a query-bound `lic=active` is believed (docs/licensing.md#lic_trust).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LicTrust {
    /// The `lic` of a verified query-bound token decides (Atlassian's documented rule).
    #[default]
    Request,
    /// `lic=active` licenses only when an outside source also says active: a site whose
    /// product only claims a licence (a staging or development install) gets none from it.
    Corroborated,
}

impl LicTrust {
    pub fn parse(s: &str) -> Option<LicTrust> {
        match s {
            "request" => Some(LicTrust::Request),
            "corroborated" => Some(LicTrust::Corroborated),
            _ => None,
        }
    }
}

/// Whether a Marketplace `licenseType` is a trial: `EVALUATION`, and the variants the
/// reporting API also uses (`NET_NEW_EVALUATION`, `UPGRADE_EVALUATION`), in any case.
pub fn is_evaluation_type(license_type: &str) -> bool {
    license_type.to_ascii_uppercase().contains("EVALUATION")
}

/// The newest of some observations: the latest `at`, and on a tie the later [`DataSource`]
/// (Marketplace over the Forge License API over the product over a FIT over `lic`). The one ordering of observations, used here and
/// by the tenant cache ([`crate::tenants`]), which keeps the `lic` part up to date itself.
pub fn newest(items: impl IntoIterator<Item = Option<LicenseData>>) -> Option<LicenseData> {
    items
        .into_iter()
        .flatten()
        .max_by_key(|d| (d.at, d.source as u8))
}

/// The tenant's last known license: the newest of the last `lic` seen, the product's license
/// endpoint and the Marketplace. Used for requests whose token binds no `lic`.
pub fn known_license(observations: &Observations) -> Option<LicenseData> {
    newest(observations.data())
}

crate::domain::text_enum! {
    /// Why a request was let through (`license_source` of `/api/whoami`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Source {
        Lic => "lic",
        /// The `app.license` of a Forge Invocation Token.
        Fit => "fit",
        Grant => "grant",
        AccessToken => "access_token",
        KnownLicense => "known_license",
        EnforcementOff => "enforcement_off",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub licensed: bool,
    /// What decided it; for a refusal, the `lic` or known license that said no (or `None`
    /// when nothing was known).
    pub source: Option<Source>,
}

/// What the decision knows of the tenant's licence besides its grants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// The last known licence: the newest of the last `lic` seen and the outside sources.
    pub license: Option<LicenseData>,
    /// The newest outside source alone ([`Observations::outside`]).
    pub outside: Option<LicenseData>,
}

/// The request decision, first match wins (docs/licensing.md#the-request-decision):
/// enforcement off; an active grant or redeemed access token; the `lic` bound by a query-bound
/// token — `active` licenses, anything else refuses (`bound_lic` is `None` for context tokens,
/// whose query the token does not cover, and for tokens without `lic`); with no bound `lic`,
/// the tenant's last known license.
///
/// With [`LicTrust::Corroborated`] a bound `lic=active` licenses only when the outside sources
/// say active too ([`corroborated`]), and without a bound `lic` the last known licence is the
/// outside sources' alone (an earlier `lic=active` is no evidence either).
pub fn decide(
    enforcement: bool,
    trust: LicTrust,
    grants: &[GrantFacts],
    bound_lic: Option<&str>,
    known: &Known,
    now: DateTime<Utc>,
) -> Decision {
    let said = bound_lic.map(|lic| {
        let believed = match trust {
            LicTrust::Request => true,
            LicTrust::Corroborated => corroborated(known.outside.as_ref()),
        };
        (lic == "active" && believed, Source::Lic)
    });
    decide_with(enforcement, grants, said, last_known(trust, known), now)
}

/// The decision for a request carrying a Forge Invocation Token, first match wins:
/// enforcement off; an active grant or redeemed access token; the token's `app.license`
/// active (`active`, else `isActive`) — licensed, or unlicensed when it says `false`
/// (`fit_active` is `None` when the token has no licence, or one that names neither field);
/// with nothing said, the installation's last known license.
///
/// The token's own licence is Atlassian's word, signed: believed under either `trust`. The
/// fallback follows `trust` as in [`decide`]: with [`LicTrust::Corroborated`] it is the outside
/// sources' alone (the Forge sources, the product's licence endpoint, the Marketplace), so an
/// earlier Connect `lic=active` that nothing corroborated licenses no FIT either.
pub fn decide_fit(
    enforcement: bool,
    trust: LicTrust,
    grants: &[GrantFacts],
    fit_active: Option<bool>,
    known: &Known,
    now: DateTime<Utc>,
) -> Decision {
    let said = fit_active.map(|active| (active, Source::Fit));
    decide_with(enforcement, grants, said, last_known(trust, known), now)
}

/// The last known licence a request without its own falls back on: any observation, or with
/// [`LicTrust::Corroborated`] the outside sources' alone.
fn last_known(trust: LicTrust, known: &Known) -> Option<&LicenseData> {
    match trust {
        LicTrust::Request => known.license.as_ref(),
        LicTrust::Corroborated => known.outside.as_ref(),
    }
}

/// The shared order: `said` is what the request itself carries, trusted (a `lic` bound by a
/// query-bound token, a FIT's licence).
fn decide_with(
    enforcement: bool,
    grants: &[GrantFacts],
    said: Option<(bool, Source)>,
    known: Option<&LicenseData>,
    now: DateTime<Utc>,
) -> Decision {
    let yes = |source| Decision {
        licensed: true,
        source: Some(source),
    };
    if !enforcement {
        return yes(Source::EnforcementOff);
    }
    let active = |kind| grants.iter().any(|g| g.kind == kind && g.active_at(now));
    if active(GrantKind::Free) || active(GrantKind::TrialExtension) {
        return yes(Source::Grant);
    }
    if active(GrantKind::AccessToken) {
        return yes(Source::AccessToken);
    }
    if let Some((licensed, source)) = said {
        return Decision {
            licensed,
            source: Some(source),
        };
    }
    match known {
        Some(k) => Decision {
            licensed: k.active,
            source: Some(Source::KnownLicense),
        },
        None => Decision {
            licensed: false,
            source: None,
        },
    }
}

crate::domain::text_enum! {
    /// `license.source` of the Installation JSON.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ViewSource {
        Lic => "lic",
        Host => "host",
        Marketplace => "marketplace",
        Grant => "grant",
        Fit => "fit",
        ForgeLicenseApi => "forge_license_api",
    }
}

impl From<DataSource> for ViewSource {
    fn from(s: DataSource) -> Self {
        match s {
            DataSource::Lic => ViewSource::Lic,
            DataSource::Host => ViewSource::Host,
            DataSource::Marketplace => ViewSource::Marketplace,
            DataSource::Fit => ViewSource::Fit,
            DataSource::ForgeLicenseApi => ViewSource::ForgeLicenseApi,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LicenseView {
    pub state: LicenseState,
    pub source: Option<ViewSource>,
    pub effective_trial_end: Option<DateTime<Utc>>,
    /// An outside source says the site is licensed ([`corroborated`]).
    pub corroborated: bool,
}

/// The registry's license state (docs/licensing.md#the-registrys-licence-state), first match
/// wins: `free` — an active free grant or redeemed access token; `trial` — an active trial
/// extension, or the latest license data (product endpoint or Marketplace, whichever is newer)
/// says an active evaluation; `active` — the latest license data or the last `lic` seen
/// (whichever is newest) says active; `unlicensed` — everything else, including no data yet.
pub fn view(observations: &Observations, grants: &[GrantFacts], now: DateTime<Utc>) -> LicenseView {
    let effective_trial_end = grants
        .iter()
        .filter(|g| g.kind == GrantKind::TrialExtension && g.revoked_at.is_none())
        .filter_map(|g| g.ends_at)
        .chain(observations.mp_trial_end)
        .chain(observations.forge_trial_end())
        .max();
    let corroborated = corroborated(observations.outside().as_ref());
    let at = |state, source| LicenseView {
        state,
        source,
        effective_trial_end,
        corroborated,
    };
    let active = |kind| grants.iter().any(|g| g.kind == kind && g.active_at(now));
    if active(GrantKind::Free) || active(GrantKind::AccessToken) {
        return at(LicenseState::Free, Some(ViewSource::Grant));
    }
    if active(GrantKind::TrialExtension) {
        return at(LicenseState::Trial, Some(ViewSource::Grant));
    }
    let [lic, host, mp, fit, forge_api] = observations.data();
    // A FIT's licence is structured data like the product's or the Marketplace's (it says
    // whether it is an evaluation), not a bare yes/no like `lic`.
    let data = newest([host, mp, fit, forge_api]);
    if let Some(d) = data.filter(|d| d.active && d.evaluation) {
        return at(LicenseState::Trial, Some(d.source.into()));
    }
    match newest([data, lic]) {
        Some(d) if d.active => at(LicenseState::Active, Some(d.source.into())),
        Some(d) => at(LicenseState::Unlicensed, Some(d.source.into())),
        None => at(LicenseState::Unlicensed, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::hours(h)
    }

    fn grant(kind: GrantKind, starts: i64, ends: Option<i64>, revoked: Option<i64>) -> GrantFacts {
        GrantFacts {
            kind,
            starts_at: t(starts),
            ends_at: ends.map(t),
            revoked_at: revoked.map(t),
        }
    }

    fn known(active: bool) -> LicenseData {
        LicenseData {
            source: DataSource::Host,
            at: t(0),
            active,
            evaluation: false,
        }
    }

    /// The decision's truth table: every branch, in the order of
    /// docs/licensing.md#the-request-decision.
    #[test]
    fn decide_truth_table() {
        let now = t(10);
        let free = grant(GrantKind::Free, 0, None, None);
        let ext = grant(GrantKind::TrialExtension, 0, Some(20), None);
        let token = grant(GrantKind::AccessToken, 0, None, None);
        let ended = grant(GrantKind::Free, 0, Some(5), None);
        let revoked = grant(GrantKind::Free, 0, None, Some(9));
        let future = grant(GrantKind::Free, 11, None, None);
        let yes = |s| Decision {
            licensed: true,
            source: Some(s),
        };
        let no = |s| Decision {
            licensed: false,
            source: s,
        };
        type Case<'a> = (
            bool,
            Vec<GrantFacts>,
            Option<&'a str>,
            Option<LicenseData>,
            Decision,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // enforcement off beats everything, even lic=none
            (false, vec![], Some("none"), Some(known(false)), yes(Source::EnforcementOff)),
            // grants beat lic=none and a dead known license
            (true, vec![free.clone()], Some("none"), Some(known(false)), yes(Source::Grant)),
            (true, vec![ext.clone()], Some("none"), None, yes(Source::Grant)),
            (true, vec![token.clone()], Some("none"), None, yes(Source::AccessToken)),
            // a grant beats a token when both are there
            (true, vec![token.clone(), free.clone()], None, None, yes(Source::Grant)),
            // inactive grants count for nothing
            (true, vec![ended.clone(), revoked.clone(), future.clone()], None, None, no(None)),
            (true, vec![ended, revoked, future], Some("active"), None, yes(Source::Lic)),
            // a bound lic decides, either way, before the known license
            (true, vec![], Some("active"), Some(known(false)), yes(Source::Lic)),
            (true, vec![], Some("none"), Some(known(true)), no(Some(Source::Lic))),
            (true, vec![], Some("garbage"), Some(known(true)), no(Some(Source::Lic))),
            // no bound lic: the known license
            (true, vec![], None, Some(known(true)), yes(Source::KnownLicense)),
            (true, vec![], None, Some(known(false)), no(Some(Source::KnownLicense))),
            (true, vec![], None, None, no(None)),
        ];
        for (i, (enf, grants, lic, license, want)) in cases.into_iter().enumerate() {
            // The known licence here is an outside source's: corroborated trust decides the
            // same, except that a lic=active it does not back up licenses nothing.
            let known = Known {
                license,
                outside: license,
            };
            assert_eq!(
                decide(enf, LicTrust::Request, &grants, lic, &known, now),
                want,
                "case {i}"
            );
            let backed = license.is_some_and(|l| l.active);
            let want = if want.source == Some(Source::Lic) && !backed {
                Decision {
                    licensed: false,
                    source: Some(Source::Lic),
                }
            } else {
                want
            };
            assert_eq!(
                decide(enf, LicTrust::Corroborated, &grants, lic, &known, now),
                want,
                "case {i}, corroborated"
            );
        }
    }

    fn lic_seen(active: bool) -> LicenseData {
        LicenseData {
            source: DataSource::Lic,
            at: t(5),
            active,
            evaluation: false,
        }
    }

    fn yes(source: Source) -> Decision {
        Decision {
            licensed: true,
            source: Some(source),
        }
    }

    fn no(source: Option<Source>) -> Decision {
        Decision {
            licensed: false,
            source,
        }
    }

    /// What the `LIC_TRUST` tests know of a site that sent `lic=active`: nothing else
    /// (`lic_only`), an outside source saying inactive (`outside_dead`) or active
    /// (`outside_live`).
    fn trust_evidence() -> [Known; 3] {
        [None, Some(known(false)), Some(known(true))].map(|outside| Known {
            license: Some(lic_seen(true)),
            outside,
        })
    }

    /// `LIC_TRUST=corroborated`: a bound `lic=active` needs an outside source saying active;
    /// without a bound `lic`, only the outside sources count.
    #[test]
    fn corroborated_trust_needs_an_outside_source() {
        let now = t(10);
        let [lic_only, outside_dead, outside_live] = trust_evidence();
        let free = grant(GrantKind::Free, 0, None, None);
        type TrustCase<'a> = (LicTrust, Vec<GrantFacts>, Option<&'a str>, Known, Decision);
        #[rustfmt::skip]
        let cases: Vec<TrustCase> = vec![
            // request trust: the lic decides, and a last lic=active is a known licence
            (LicTrust::Request, vec![], Some("active"), Known::default(), yes(Source::Lic)),
            (LicTrust::Request, vec![], None, lic_only, yes(Source::KnownLicense)),
            // corroborated: lic=active alone, or against a dead outside licence, refuses
            (LicTrust::Corroborated, vec![], Some("active"), Known::default(), no(Some(Source::Lic))),
            (LicTrust::Corroborated, vec![], Some("active"), lic_only, no(Some(Source::Lic))),
            (LicTrust::Corroborated, vec![], Some("active"), outside_dead, no(Some(Source::Lic))),
            (LicTrust::Corroborated, vec![], Some("active"), outside_live, yes(Source::Lic)),
            // lic=none needs no corroboration to refuse
            (LicTrust::Corroborated, vec![], Some("none"), outside_live, no(Some(Source::Lic))),
            // no bound lic: the outside sources alone
            (LicTrust::Corroborated, vec![], None, lic_only, no(None)),
            (LicTrust::Corroborated, vec![], None, outside_dead, no(Some(Source::KnownLicense))),
            (LicTrust::Corroborated, vec![], None, outside_live, yes(Source::KnownLicense)),
            // grants and enforcement off still come first
            (LicTrust::Corroborated, vec![free], Some("active"), Known::default(), yes(Source::Grant)),
        ];
        for (i, (trust, grants, lic, known, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                decide(true, trust, &grants, lic, &known, now),
                want,
                "case {i}"
            );
        }
        assert_eq!(
            decide(
                false,
                LicTrust::Corroborated,
                &[],
                Some("active"),
                &Known::default(),
                now
            ),
            yes(Source::EnforcementOff)
        );
    }

    #[test]
    fn corroborated_means_the_newest_outside_source_says_active() {
        let mut o = Observations {
            lic: Some("active".into()),
            lic_seen_at: Some(t(9)),
            ..Observations::default()
        };
        assert!(
            !corroborated(o.outside().as_ref()),
            "lic alone is not corroboration"
        );
        assert!(!view(&o, &[], t(10)).corroborated);
        o.host_active = Some(true);
        o.host_checked_at = Some(t(1));
        assert!(corroborated(o.outside().as_ref()));
        assert!(view(&o, &[], t(10)).corroborated);
        // a newer Marketplace row saying inactive wins over the product's older answer
        o.mp_status = Some("inactive".into());
        o.mp_last_updated = Some(t(2));
        assert!(!corroborated(o.outside().as_ref()));
        o.mp_status = Some("active".into());
        assert!(corroborated(o.outside().as_ref()));
        assert_eq!(
            LicTrust::parse("corroborated"),
            Some(LicTrust::Corroborated)
        );
        assert_eq!(LicTrust::parse("request"), Some(LicTrust::Request));
        assert_eq!(LicTrust::parse("Request"), None);
    }

    #[test]
    fn evaluation_types() {
        for t in [
            "EVALUATION",
            "evaluation",
            "NET_NEW_EVALUATION",
            "upgrade_evaluation",
        ] {
            assert!(is_evaluation_type(t), "{t}");
        }
        for t in ["COMMERCIAL", "ACADEMIC", "DEVELOPER", ""] {
            assert!(!is_evaluation_type(t), "{t}");
        }
    }

    #[test]
    fn grant_activity_edges() {
        let g = grant(GrantKind::Free, 1, Some(3), None);
        assert!(!g.active_at(t(0)));
        assert!(g.active_at(t(1)));
        assert!(g.active_at(t(2)));
        assert!(!g.active_at(t(3)), "ends_at is exclusive");
    }

    #[test]
    fn view_states_in_order() {
        let now = t(10);
        let mut r = Observations::default();
        assert_eq!(view(&r, &[], now).state, LicenseState::Unlicensed);
        assert_eq!(view(&r, &[], now).source, None);

        r.lic = Some("active".into());
        r.lic_seen_at = Some(t(1));
        let v = view(&r, &[], now);
        assert_eq!(
            (v.state, v.source),
            (LicenseState::Active, Some(ViewSource::Lic))
        );

        // newer product data saying evaluation → trial
        r.host_active = Some(true);
        r.host_evaluation = Some(true);
        r.host_checked_at = Some(t(2));
        let v = view(&r, &[], now);
        assert_eq!(
            (v.state, v.source),
            (LicenseState::Trial, Some(ViewSource::Host))
        );

        // newer Marketplace data says commercial and active
        r.mp_status = Some("active".into());
        r.mp_license_type = Some("COMMERCIAL".into());
        r.mp_last_updated = Some(t(3));
        let v = view(&r, &[], now);
        assert_eq!(
            (v.state, v.source),
            (LicenseState::Active, Some(ViewSource::Marketplace))
        );

        // a newer lic=none makes it unlicensed
        r.lic = Some("none".into());
        r.lic_seen_at = Some(t(4));
        let v = view(&r, &[], now);
        assert_eq!(
            (v.state, v.source),
            (LicenseState::Unlicensed, Some(ViewSource::Lic))
        );

        // an active trial extension → trial; a free grant beats it
        let ext = grant(GrantKind::TrialExtension, 0, Some(20), None);
        let v = view(&r, std::slice::from_ref(&ext), now);
        assert_eq!(
            (v.state, v.source),
            (LicenseState::Trial, Some(ViewSource::Grant))
        );
        let free = grant(GrantKind::Free, 0, None, None);
        assert_eq!(
            view(&r, &[ext.clone(), free], now).state,
            LicenseState::Free
        );
        let token = grant(GrantKind::AccessToken, 0, None, None);
        assert_eq!(view(&r, &[token], now).state, LicenseState::Free);
    }

    #[test]
    fn effective_trial_end_is_the_later_of_trial_end_and_extensions() {
        let now = t(10);
        let mut r = Observations::default();
        assert_eq!(view(&r, &[], now).effective_trial_end, None);
        r.mp_trial_end = Some(t(30));
        assert_eq!(view(&r, &[], now).effective_trial_end, Some(t(30)));
        let short = grant(GrantKind::TrialExtension, 0, Some(20), None);
        assert_eq!(
            view(&r, std::slice::from_ref(&short), now).effective_trial_end,
            Some(t(30))
        );
        let long = grant(GrantKind::TrialExtension, 0, Some(50), None);
        assert_eq!(
            view(&r, &[short.clone(), long], now).effective_trial_end,
            Some(t(50))
        );
        let revoked = grant(GrantKind::TrialExtension, 0, Some(90), Some(5));
        assert_eq!(
            view(&r, &[short, revoked], now).effective_trial_end,
            Some(t(30))
        );
    }

    /// The FIT decision in the order of docs/forge.md#the-licence-decision-for-a-fit: enforcement
    /// off, grants, the token's licence either way, and only without one the last known license.
    #[test]
    fn decide_fit_truth_table() {
        let now = t(10);
        let free = grant(GrantKind::Free, 0, None, None);
        let token = grant(GrantKind::AccessToken, 0, None, None);
        let yes = |s| Decision {
            licensed: true,
            source: Some(s),
        };
        let no = |s| Decision {
            licensed: false,
            source: s,
        };
        type Case = (
            bool,
            Vec<GrantFacts>,
            Option<bool>,
            Option<LicenseData>,
            Decision,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (false, vec![], Some(false), Some(known(false)), yes(Source::EnforcementOff)),
            (true, vec![free.clone()], Some(false), None, yes(Source::Grant)),
            (true, vec![token], Some(false), None, yes(Source::AccessToken)),
            (true, vec![], Some(true), Some(known(false)), yes(Source::Fit)),
            (true, vec![], Some(false), Some(known(true)), no(Some(Source::Fit))),
            (true, vec![], None, Some(known(true)), yes(Source::KnownLicense)),
            (true, vec![], None, Some(known(false)), no(Some(Source::KnownLicense))),
            (true, vec![], None, None, no(None)),
        ];
        for (i, (enf, grants, fit, license, want)) in cases.into_iter().enumerate() {
            // Every observation here is an outside one: both trust settings agree.
            let known = Known {
                license,
                outside: license,
            };
            for trust in [LicTrust::Request, LicTrust::Corroborated] {
                assert_eq!(
                    decide_fit(enf, trust, &grants, fit, &known, now),
                    want,
                    "case {i}, {trust:?}"
                );
            }
        }
    }

    /// `LIC_TRUST=corroborated` on the FIT path: the token's own licence decides as always,
    /// but without one the fallback is the outside sources' alone — a last Connect
    /// `lic=active` that nothing corroborated is not enough.
    #[test]
    fn decide_fit_follows_lic_trust_for_the_fallback() {
        let now = t(10);
        let [lic_only, outside_dead, outside_live] = trust_evidence();
        let free = grant(GrantKind::Free, 0, None, None);
        type TrustCase = (LicTrust, Vec<GrantFacts>, Option<bool>, Known, Decision);
        #[rustfmt::skip]
        let cases: Vec<TrustCase> = vec![
            // request trust: a last lic=active is a known licence for a FIT without one
            (LicTrust::Request, vec![], None, lic_only, yes(Source::KnownLicense)),
            // corroborated: not without an outside source saying active
            (LicTrust::Corroborated, vec![], None, lic_only, no(None)),
            (LicTrust::Corroborated, vec![], None, outside_dead, no(Some(Source::KnownLicense))),
            (LicTrust::Corroborated, vec![], None, outside_live, yes(Source::KnownLicense)),
            // the token's own licence is signed by Atlassian: it decides either way
            (LicTrust::Corroborated, vec![], Some(true), lic_only, yes(Source::Fit)),
            (LicTrust::Corroborated, vec![], Some(false), outside_live, no(Some(Source::Fit))),
            // grants still come first
            (LicTrust::Corroborated, vec![free], None, lic_only, yes(Source::Grant)),
        ];
        for (i, (trust, grants, fit, known, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                decide_fit(true, trust, &grants, fit, &known, now),
                want,
                "case {i}"
            );
        }
        assert_eq!(
            decide_fit(false, LicTrust::Corroborated, &[], None, &lic_only, now),
            yes(Source::EnforcementOff)
        );
    }

    #[test]
    fn a_fit_licence_feeds_the_view_and_the_trial_end() {
        let now = t(10);
        let mut r = Observations {
            fit_active: Some(true),
            fit_evaluation: Some(true),
            fit_trial_end: Some(t(40)),
            fit_seen_at: Some(t(5)),
            ..Observations::default()
        };
        let v = view(&r, &[], now);
        assert_eq!(
            (v.state, v.source, v.effective_trial_end),
            (LicenseState::Trial, Some(ViewSource::Fit), Some(t(40)))
        );
        // A trial extension is measured against that end.
        let ext = grant(GrantKind::TrialExtension, 0, Some(60), None);
        assert_eq!(
            view(&r, std::slice::from_ref(&ext), now).effective_trial_end,
            Some(t(60))
        );
        // Not an evaluation: active, and its trial end no longer counts.
        r.fit_evaluation = Some(false);
        let v = view(&r, &[], now);
        assert_eq!(
            (v.state, v.source, v.effective_trial_end),
            (LicenseState::Active, Some(ViewSource::Fit), None)
        );
        // The FIT's licence is known license data for requests without one.
        assert_eq!(known_license(&r).map(|d| d.source), Some(DataSource::Fit));
        // A newer License API answer wins over an older FIT.
        r.forge_api_active = Some(false);
        r.forge_api_checked_at = Some(t(6));
        let v = view(&r, &[], now);
        assert_eq!(
            (v.state, v.source),
            (LicenseState::Unlicensed, Some(ViewSource::ForgeLicenseApi))
        );
    }
}

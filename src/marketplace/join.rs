//! Which installation a Marketplace license belongs to, and the values to look the
//! candidates up by. Pure; the lookup itself is [`crate::store::marketplace::candidates`].

use super::parser::{normalize_host, normalize_sen};
use crate::store::marketplace::{Candidate, JoinValues, StagedLicense};

/// Which key joined a license to its installation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKey {
    CloudId,
    EntitlementId,
    EntitlementNumber,
    Sen,
    Hostname,
}

fn same(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.trim().eq_ignore_ascii_case(b.trim()))
}

/// One join level: its key and the test a candidate must pass.
type JoinLevel<'a> = (JoinKey, &'a dyn Fn(&Candidate) -> bool);

/// Joins a license to an installation, best key first (docs/protocol.md#marketplace-reporting-api): (`cloudId`, app key);
/// `appEntitlementId` then `appEntitlementNumber` against the installed payload's or the
/// license endpoint's entitlement; the SEN (`licenseId` or `addonLicenseId`, with or without
/// `SEN-`) against the payload's or the license endpoint's; the site host name. The first
/// level with a match decides; within it an installed site beats an uninstalled one, then the
/// latest install.
pub fn join<'c>(
    lic: &StagedLicense,
    candidates: &'c [Candidate],
) -> Option<(&'c Candidate, JoinKey)> {
    let best = |pred: &dyn Fn(&Candidate) -> bool| {
        candidates.iter().filter(|c| pred(c)).max_by(|a, b| {
            (a.status != "uninstalled", a.installed_at, &a.client_key).cmp(&(
                b.status != "uninstalled",
                b.installed_at,
                &b.client_key,
            ))
        })
    };
    let lic_sens: Vec<String> = [&lic.license_id, &lic.addon_license_id]
        .into_iter()
        .flatten()
        .filter_map(|s| normalize_sen(s))
        .collect();
    let host = lic.cloud_site_hostname.as_deref().and_then(normalize_host);
    let levels: [JoinLevel<'_>; 5] = [
        (JoinKey::CloudId, &|c| {
            lic.cloud_id
                .as_deref()
                .is_some_and(|id| same(c.cloud_id.as_deref(), id))
                && lic.addon_key.as_deref().is_none_or(|k| k == c.app_key)
        }),
        (JoinKey::EntitlementId, &|c| {
            lic.app_entitlement_id.as_deref().is_some_and(|id| {
                same(c.entitlement_id.as_deref(), id)
                    || same(c.host_license_entitlement_id.as_deref(), id)
            })
        }),
        (JoinKey::EntitlementNumber, &|c| {
            lic.app_entitlement_number.as_deref().is_some_and(|n| {
                same(c.entitlement_number.as_deref(), n)
                    || same(c.host_license_entitlement_number.as_deref(), n)
            })
        }),
        (JoinKey::Sen, &|c| {
            [&c.service_entitlement_number, &c.host_license_sen]
                .into_iter()
                .flatten()
                .filter_map(|s| normalize_sen(s))
                .any(|s| lic_sens.contains(&s))
        }),
        (JoinKey::Hostname, &|c| {
            host.as_deref() == Some(c.base_host.as_str())
        }),
    ];
    levels
        .into_iter()
        .find_map(|(key, pred)| best(pred).map(|c| (c, key)))
}

/// The values of a page to look installations up by (SENs in both spellings).
pub fn join_values(rows: &[StagedLicense]) -> JoinValues {
    fn push(list: &mut Vec<String>, v: Option<String>) {
        if let Some(v) = v {
            if !list.contains(&v) {
                list.push(v);
            }
        }
    }
    let mut v = JoinValues::default();
    for r in rows {
        push(&mut v.cloud_ids, r.cloud_id.clone());
        push(&mut v.entitlement_ids, r.app_entitlement_id.clone());
        push(&mut v.entitlement_numbers, r.app_entitlement_number.clone());
        for sen in [&r.license_id, &r.addon_license_id]
            .into_iter()
            .flatten()
            .filter_map(|s| normalize_sen(s))
        {
            push(&mut v.sens, Some(format!("SEN-{sen}")));
            push(&mut v.sens, Some(sen));
        }
        push(
            &mut v.hosts,
            r.cloud_site_hostname.as_deref().and_then(normalize_host),
        );
    }
    v
}

/// One row per license key within a batch (the higher rank wins), as one INSERT needs.
pub fn dedup_batch(mut rows: Vec<StagedLicense>) -> Vec<StagedLicense> {
    rows.sort_by(|a, b| {
        a.license_key
            .cmp(&b.license_key)
            .then_with(|| b.rank_key.cmp(&a.rank_key))
    });
    rows.dedup_by(|later, first| later.license_key == first.license_key);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketplace::parser::parse_license;
    use crate::marketplace::parser::tests::{day, evaluation_sample};
    use serde_json::json;

    fn cand(key: &str) -> Candidate {
        Candidate {
            client_key: key.into(),
            app_key: "com.example.acme-reports".into(),
            base_host: format!("{key}.atlassian.net"),
            status: "enabled".into(),
            installed_at: day(2025, 1, 1),
            ..Candidate::default()
        }
    }

    #[test]
    fn join_order() {
        let lic = parse_license(&evaluation_sample());
        let mut by_host = cand("acme-corp");
        by_host.base_host = "acme-corp.atlassian.net".into();
        let mut by_sen = cand("sen");
        by_sen.service_entitlement_number = Some("30551234".into()); // addonLicenseId
        let mut by_sen_host = cand("sen-host");
        by_sen_host.host_license_sen = Some("sen-30550987".into()); // licenseId
        let mut by_number = cand("number");
        by_number.host_license_entitlement_number = Some("E-4K2-9QJ-7WZ-P3M".into());
        let mut by_id = cand("id");
        by_id.entitlement_id = Some("5B1D0C8E-2F4A-4C55-9D61-7A2E9F0B3C11".into());
        let mut by_cloud = cand("cloud");
        by_cloud.cloud_id = Some("0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10".into());
        let mut other_app = by_cloud.clone();
        other_app.client_key = "other-app".into();
        other_app.app_key = "com.example.other".into();

        let mut all = vec![
            by_host.clone(),
            by_sen.clone(),
            by_number.clone(),
            by_id.clone(),
            other_app.clone(),
        ];
        // Without the cloudId installation (the other app's does not count), the entitlement id wins.
        assert_eq!(
            join(&lic, &all).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("id", JoinKey::EntitlementId))
        );
        all.push(by_cloud);
        assert_eq!(
            join(&lic, &all).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("cloud", JoinKey::CloudId))
        );
        let rest = vec![by_host.clone(), by_sen.clone(), by_number];
        assert_eq!(
            join(&lic, &rest).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("number", JoinKey::EntitlementNumber))
        );
        let rest = vec![by_host.clone(), by_sen];
        assert_eq!(
            join(&lic, &rest).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("sen", JoinKey::Sen))
        );
        let rest = vec![by_host.clone(), by_sen_host];
        assert_eq!(
            join(&lic, &rest).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("sen-host", JoinKey::Sen))
        );
        let rest = vec![by_host.clone(), other_app];
        assert_eq!(
            join(&lic, &rest).map(|(c, k)| (c.client_key.as_str(), k)),
            Some(("acme-corp", JoinKey::Hostname))
        );
        assert_eq!(join(&lic, &[cand("nobody")]), None);
    }

    #[test]
    fn installed_beats_uninstalled_then_latest_install() {
        let lic = parse_license(&evaluation_sample());
        let mut old = cand("old");
        old.base_host = "acme-corp.atlassian.net".into();
        old.installed_at = day(2025, 2, 1);
        let mut gone = old.clone();
        gone.client_key = "gone".into();
        gone.status = "uninstalled".into();
        gone.installed_at = day(2025, 3, 1);
        let mut new = old.clone();
        new.client_key = "new".into();
        new.installed_at = day(2025, 2, 15);
        let all = [old, gone, new];
        assert_eq!(
            join(&lic, &all).map(|(c, _)| c.client_key.as_str()),
            Some("new")
        );
    }

    #[test]
    fn dedup_keeps_the_better_row() {
        let mut a = parse_license(&json!({"addonLicenseId": "1", "lastUpdated": "2025-01-01"}));
        a.tier = Some("old".into());
        let mut b = parse_license(&json!({"addonLicenseId": "1", "lastUpdated": "2025-02-01"}));
        b.tier = Some("new".into());
        let c = parse_license(&json!({"addonLicenseId": "2"}));
        let rows = dedup_batch(vec![a, c, b]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].tier.as_deref(), Some("new"));
    }

    #[test]
    fn join_values_carry_both_sen_spellings() {
        let v = join_values(&[parse_license(&evaluation_sample())]);
        assert!(v.sens.contains(&"SEN-30550987".to_string()));
        assert!(v.sens.contains(&"30550987".to_string()));
        assert!(v.sens.contains(&"SEN-30551234".to_string()));
        assert!(v.sens.contains(&"30551234".to_string()));
        assert_eq!(v.hosts, vec!["acme-corp.atlassian.net".to_string()]);
    }
}

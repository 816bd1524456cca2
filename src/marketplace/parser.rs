//! Reading the Marketplace's answers: a page of licenses and one license as it is stored
//! (ids, dates, tier, contacts, the rank among rows of one installation). Pure; the fields are
//! those of the reporting API (docs/protocol.md#marketplace-reporting-api).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::MarketplaceError;
use crate::store::marketplace::StagedLicense;

#[derive(Deserialize)]
pub struct Page {
    #[serde(rename = "_links", default)]
    pub links: Option<Links>,
    pub licenses: Vec<Value>,
}

#[derive(Deserialize)]
pub struct Links {
    #[serde(default)]
    pub next: Option<Link>,
}

#[derive(Deserialize)]
pub struct Link {
    pub href: String,
}

pub fn parse_page(body: &[u8]) -> Result<Page, MarketplaceError> {
    let page: Page =
        serde_json::from_slice(body).map_err(|e| MarketplaceError::Malformed(e.to_string()))?;
    if let Some(i) = page.licenses.iter().position(|l| !l.is_object()) {
        return Err(MarketplaceError::Malformed(format!(
            "licenses[{i}] is not an object"
        )));
    }
    Ok(page)
}

/// A string field; numbers are accepted as text (ids are numeric strings but may arrive as
/// numbers). Blank strings count as absent.
fn text(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `YYYY-MM-DD` as 00:00 UTC, or an RFC 3339 / naive ISO timestamp (newer data).
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let t = if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)?.and_utc()
    } else if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc)
    } else {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc()
    };
    // Outside this range it is not a license date, and PostgreSQL could not store it.
    use chrono::Datelike;
    (1900..=9999)
        .contains(&t.year())
        .then(|| t.trunc_subsecs(6))
}

fn date(v: &Value, field: &str) -> Option<DateTime<Utc>> {
    text(v, field).as_deref().and_then(parse_date)
}

/// A SEN without its `SEN-` prefix, upper-cased: `SEN-123`, `sen-123` and `123` are the same.
pub fn normalize_sen(s: &str) -> Option<String> {
    let t = s.trim();
    let rest = match t.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("SEN-") => &t[4..],
        _ => t,
    };
    let rest = rest.trim();
    (!rest.is_empty()).then(|| rest.to_ascii_uppercase())
}

/// A site host as the installations table keeps it (lower case, no scheme, no dot at the end).
pub fn normalize_host(s: &str) -> Option<String> {
    let s = s.trim();
    let host = if s.contains("://") {
        crate::domain::host_of(s)?
    } else {
        s.split('/').next().unwrap_or_default().to_ascii_lowercase()
    };
    let host = host.trim_end_matches('.').to_owned();
    (!host.is_empty()).then_some(host)
}

/// `{name, email, phone}` of a contact object as JSON text; `None` when absent or empty.
fn contact(v: Option<&Value>) -> Option<String> {
    let c = v.filter(|c| c.is_object())?;
    let (name, email, phone) = (text(c, "name"), text(c, "email"), text(c, "phone"));
    if name.is_none() && email.is_none() && phone.is_none() {
        return None;
    }
    Some(json!({ "name": name, "email": email, "phone": phone }).to_string())
}

fn is_evaluation(license_type: Option<&str>) -> bool {
    license_type.is_some_and(crate::licensing::is_evaluation_type)
}

/// The preference of a row when one installation has several: larger wins. Fixed-width
/// digits, so that the database compares them the same way under every collation.
pub fn rank_key(
    last_updated: Option<DateTime<Utc>>,
    evaluation: bool,
    active: bool,
    maintenance_end: Option<DateTime<Utc>>,
) -> String {
    let micros = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp_micros().max(0));
    format!(
        "{:019}{}{}{:019}",
        micros(last_updated),
        u8::from(!evaluation),
        u8::from(active),
        micros(maintenance_end)
    )
}

/// One license object as stored (not yet joined).
pub fn parse_license(v: &Value) -> StagedLicense {
    let raw = v.to_string();
    let app_entitlement_id = text(v, "appEntitlementId");
    let addon_license_id = text(v, "addonLicenseId");
    let license_id = text(v, "licenseId");
    let license_key = app_entitlement_id
        .clone()
        .or_else(|| addon_license_id.clone())
        .or_else(|| license_id.clone())
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(raw.as_bytes()))));
    let license_type = text(v, "licenseType");
    let tier = text(v, "tier");
    let status = text(v, "status");
    let maintenance_start = date(v, "maintenanceStartDate");
    let maintenance_end = date(v, "maintenanceEndDate");
    let evaluation_start = date(v, "evaluationStartDate");
    let evaluation_end = date(v, "evaluationEndDate");
    let last_updated = date(v, "lastUpdated");
    let evaluation = is_evaluation(license_type.as_deref());
    let (trial_start, trial_end) = if evaluation {
        (
            evaluation_start.or(maintenance_start),
            evaluation_end.or(maintenance_end),
        )
    } else {
        (None, None)
    };
    let active = status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("active"));
    let details = v.get("contactDetails");
    let detail = |f: &str| details.and_then(|d| text(d, f));
    StagedLicense {
        rank_key: rank_key(last_updated, evaluation, active, maintenance_end),
        license_key,
        addon_key: text(v, "addonKey"),
        addon_license_id,
        app_entitlement_id,
        app_entitlement_number: text(v, "appEntitlementNumber"),
        license_id,
        host_license_id: text(v, "hostLicenseId"),
        cloud_id: text(v, "cloudId"),
        cloud_site_hostname: text(v, "cloudSiteHostname"),
        hosting: text(v, "hosting"),
        user_count: tier.as_deref().and_then(crate::domain::tier_user_count),
        license_type,
        tier,
        status,
        maintenance_start,
        maintenance_end,
        evaluation_start,
        evaluation_end,
        company: detail("company"),
        country: detail("country"),
        region: detail("region"),
        technical_contact: contact(details.and_then(|d| d.get("technicalContact"))),
        billing_contact: contact(details.and_then(|d| d.get("billingContact"))),
        last_updated,
        client_key: None,
        raw,
        trial_start,
        trial_end,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    #[test]
    fn sens() {
        assert_eq!(normalize_sen("SEN-30550987").as_deref(), Some("30550987"));
        assert_eq!(normalize_sen(" sen-30550987 ").as_deref(), Some("30550987"));
        assert_eq!(normalize_sen("30550987").as_deref(), Some("30550987"));
        assert_eq!(normalize_sen("SEN-"), None);
        assert_eq!(normalize_sen("SÉN-1").as_deref(), Some("SÉN-1"));
        assert_eq!(normalize_sen("SE"), Some("SE".into()));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("Acme-Corp.atlassian.net.").as_deref(),
            Some("acme-corp.atlassian.net")
        );
        assert_eq!(
            normalize_host("https://acme.atlassian.net/wiki").as_deref(),
            Some("acme.atlassian.net")
        );
        assert_eq!(normalize_host(" "), None);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("2025-03-31"), Some(day(2025, 3, 31)));
        assert_eq!(
            parse_date("2025-03-31T10:00:00.5+02:00"),
            Some(
                Utc.with_ymd_and_hms(2025, 3, 31, 8, 0, 0).unwrap()
                    + chrono::Duration::milliseconds(500)
            )
        );
        assert_eq!(
            parse_date("2025-03-31T10:00:00"),
            Some(Utc.with_ymd_and_hms(2025, 3, 31, 10, 0, 0).unwrap())
        );
        assert_eq!(parse_date("NA"), None);
        assert_eq!(parse_date("0001-01-01"), None);
    }

    #[test]
    fn pages_must_be_json_with_licenses() {
        assert!(parse_page(b"{\"licenses\": []}").is_ok());
        assert!(matches!(
            parse_page(b"<html>"),
            Err(MarketplaceError::Malformed(_))
        ));
        assert!(matches!(
            parse_page(b"{}"),
            Err(MarketplaceError::Malformed(_))
        ));
        assert!(matches!(
            parse_page(b"{\"licenses\": [1]}"),
            Err(MarketplaceError::Malformed(_))
        ));
        let p = parse_page(br#"{"_links": {"next": {"href": "/x?offset=2"}}, "licenses": [{}]}"#)
            .unwrap();
        assert_eq!(
            p.links.and_then(|l| l.next).map(|n| n.href).as_deref(),
            Some("/x?offset=2")
        );
    }

    /// An evaluation license as the reporting API sends it (docs/protocol.md#marketplace-reporting-api).
    pub(crate) fn evaluation_sample() -> Value {
        json!({
            "addonLicenseId": "30551234",
            "appEntitlementId": "5b1d0c8e-2f4a-4c55-9d61-7a2e9f0b3c11",
            "appEntitlementNumber": "E-4K2-9QJ-7WZ-P3M",
            "hostLicenseId": "30550987",
            "licenseId": "SEN-30550987",
            "cloudId": "0c3130ff-8e2b-4d4f-b1a9-6b6f4d2c8e10",
            "cloudSiteHostname": "acme-corp.atlassian.net",
            "addonKey": "com.example.acme-reports",
            "hosting": "Cloud",
            "lastUpdated": "2025-03-03",
            "licenseType": "EVALUATION",
            "maintenanceStartDate": "2025-03-01",
            "maintenanceEndDate": "2025-03-31",
            "status": "active",
            "tier": "Evaluation",
            "contactDetails": {
                "company": "Acme Corp", "country": "Germany", "region": "EMEA",
                "technicalContact": { "email": "admin@acme-corp.example", "name": "Ada Admin", "phone": "+49 30 1234567", "city": "Berlin" },
                "billingContact": { "email": "billing@acme-corp.example", "name": "Bill Payer" }
            },
            "evaluationStartDate": "2025-03-02",
            "evaluationEndDate": "2025-04-01"
        })
    }

    #[test]
    fn parses_a_license() {
        let l = parse_license(&evaluation_sample());
        assert_eq!(l.license_key, "5b1d0c8e-2f4a-4c55-9d61-7a2e9f0b3c11");
        assert_eq!(l.user_count, None);
        assert_eq!(l.maintenance_end, Some(day(2025, 3, 31)));
        // Evaluation dates win over the maintenance window when present.
        assert_eq!(l.trial_start, Some(day(2025, 3, 2)));
        assert_eq!(l.trial_end, Some(day(2025, 4, 1)));
        assert_eq!(l.company.as_deref(), Some("Acme Corp"));
        let tech: Value = serde_json::from_str(l.technical_contact.as_deref().unwrap()).unwrap();
        assert_eq!(
            tech,
            json!({"name": "Ada Admin", "email": "admin@acme-corp.example", "phone": "+49 30 1234567"})
        );
        let billing: Value = serde_json::from_str(l.billing_contact.as_deref().unwrap()).unwrap();
        assert_eq!(billing["phone"], Value::Null);

        let mut v = evaluation_sample();
        let o = v.as_object_mut().unwrap();
        o.remove("evaluationStartDate");
        o.remove("evaluationEndDate");
        o.insert("licenseType".into(), json!("COMMERCIAL"));
        o.insert("tier".into(), json!("100 Users"));
        let l = parse_license(&v);
        assert_eq!(l.user_count, Some(100));
        assert_eq!((l.trial_start, l.trial_end), (None, None));

        let mut v = evaluation_sample();
        let o = v.as_object_mut().unwrap();
        o.remove("evaluationStartDate");
        o.remove("evaluationEndDate");
        let l = parse_license(&v);
        assert_eq!(l.trial_start, Some(day(2025, 3, 1)));
        assert_eq!(l.trial_end, Some(day(2025, 3, 31)));
    }

    #[test]
    fn the_tier_gives_the_user_count_in_both_spellings() {
        for tier in ["10 Users", "10Users"] {
            let l = parse_license(&json!({"addonLicenseId": "1", "tier": tier}));
            assert_eq!(l.user_count, Some(10), "{tier}");
            assert_eq!(l.tier.as_deref(), Some(tier));
        }
        let l = parse_license(&json!({"addonLicenseId": "1", "tier": "Unlimited Users"}));
        assert_eq!(l.user_count, None);
    }

    #[test]
    fn license_keys_fall_back() {
        let l = parse_license(&json!({"addonLicenseId": 123, "licenseId": "SEN-9"}));
        assert_eq!(l.license_key, "123");
        let l = parse_license(&json!({"licenseId": "SEN-9"}));
        assert_eq!(l.license_key, "SEN-9");
        let a = parse_license(&json!({"tier": "10 Users"}));
        let b = parse_license(&json!({"tier": "10 Users"}));
        assert!(a.license_key.starts_with("sha256:"));
        assert_eq!(a.license_key, b.license_key);
    }

    #[test]
    fn winner_ranking() {
        let newer = rank_key(Some(day(2025, 3, 4)), true, false, None);
        let older = rank_key(Some(day(2025, 3, 3)), false, true, Some(day(2030, 1, 1)));
        assert!(newer > older, "later lastUpdated wins");
        let eval = rank_key(Some(day(2025, 3, 3)), true, true, Some(day(2025, 3, 31)));
        let paid = rank_key(Some(day(2025, 3, 3)), false, true, Some(day(2026, 3, 3)));
        assert!(paid > eval, "on a tie a non-evaluation row wins");
        let inactive = rank_key(Some(day(2025, 3, 3)), false, false, Some(day(2027, 1, 1)));
        assert!(paid > inactive, "then an active row");
        let unknown = rank_key(None, false, true, None);
        assert!(older > unknown, "rows without lastUpdated lose");
        assert_eq!(newer.len(), unknown.len());
        assert!(newer.chars().all(|c| c.is_ascii_digit()));
    }
}

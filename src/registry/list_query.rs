//! The query of `GET /admin/installations` (and the flags of `connect-keeper installations
//! list`): filters, sort, page size, format, and the opaque keyset cursors. Every error names
//! the parameter it is about.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::LicenseState;
use crate::domain::Status;
use crate::registry::error::Error;
use crate::store::listing::{After, Filter, KeyValue, Sort};

/// Default and largest page size of `GET /admin/installations`.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
/// Products the `product` filter accepts (the `productType` values of Connect cloud apps).
pub const PRODUCTS: [&str; 2] = ["jira", "confluence"];

/// What to answer for `GET /admin/installations`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Json,
    Csv,
}

/// A validated list request.
#[derive(Clone, Debug, PartialEq)]
pub struct ListRequest {
    pub filter: Filter,
    pub sort: Sort,
    pub limit: u32,
    pub after: Option<After>,
    pub format: Format,
}

impl Default for ListRequest {
    fn default() -> Self {
        ListRequest {
            filter: Filter::default(),
            sort: Sort::default(),
            limit: DEFAULT_LIMIT,
            after: None,
            format: Format::Json,
        }
    }
}

fn comma_values(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|v| !v.is_empty())
}

/// `installed,enabled` → statuses; an unknown value is a 400 naming `status`.
pub fn parse_statuses(raw: &str) -> Result<Vec<Status>, Error> {
    comma_values(raw)
        .map(|v| {
            Status::parse(v).ok_or_else(|| {
                Error::invalid(
                    "status",
                    format!(
                        "unknown value {v:?}; expected installed, enabled, disabled or uninstalled"
                    ),
                )
            })
        })
        .collect()
}

/// `active,trial` → license states; an unknown value is a 400 naming `license`.
pub fn parse_licenses(raw: &str) -> Result<Vec<LicenseState>, Error> {
    comma_values(raw)
        .map(|v| {
            LicenseState::parse(v).ok_or_else(|| {
                Error::invalid(
                    "license",
                    format!("unknown value {v:?}; expected active, trial, free or unlicensed"),
                )
            })
        })
        .collect()
}

pub fn parse_products(raw: &str) -> Result<Vec<String>, Error> {
    comma_values(raw)
        .map(|v| {
            PRODUCTS
                .iter()
                .find(|p| **p == v)
                .map(|p| (*p).to_owned())
                .ok_or_else(|| {
                    Error::invalid(
                        "product",
                        format!(
                            "unknown value {v:?}; expected one of {}",
                            PRODUCTS.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

/// `connect,forge` → flavours; an unknown value is a 400 naming `flavour`.
pub fn parse_flavours(raw: &str) -> Result<Vec<crate::domain::Flavour>, Error> {
    comma_values(raw)
        .map(|v| {
            crate::domain::Flavour::parse(v).ok_or_else(|| {
                Error::invalid(
                    "flavour",
                    format!("unknown value {v:?}; expected connect, connect_on_forge or forge"),
                )
            })
        })
        .collect()
}

/// `true` or `false`; anything else is a 400 naming `corroborated`.
pub fn parse_corroborated(raw: &str) -> Result<bool, Error> {
    match raw.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Error::invalid(
            "corroborated",
            format!("unknown value {other:?}; expected true or false"),
        )),
    }
}

pub fn parse_sort(raw: &str) -> Result<Sort, Error> {
    Sort::parse(raw.trim()).ok_or_else(|| {
        Error::invalid(
            "sort",
            format!(
                "unknown value {raw:?}; expected installed_at, -installed_at, trial_end or base_url"
            ),
        )
    })
}

pub fn parse_limit(raw: &str) -> Result<u32, Error> {
    match raw.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(Error::invalid(
            "limit",
            format!("must be a whole number from 1 to {MAX_LIMIT}, got {raw:?}"),
        )),
    }
}

/// A date (`2026-05-01`, meaning its midnight UTC) or an RFC 3339 instant.
pub fn parse_date_param(field: &'static str, raw: &str) -> Result<DateTime<Utc>, Error> {
    let raw = raw.trim();
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Error::invalid(
                field,
                format!(
                    "expected a date (YYYY-MM-DD) or an RFC 3339 time such as \
                     2026-12-31T18:00:00Z, got {raw:?}"
                ),
            )
        })
}

/// An RFC 3339 instant (request bodies and CLI `--until`).
pub fn parse_rfc3339(field: &'static str, raw: &str) -> Result<DateTime<Utc>, Error> {
    rfc3339(raw).map_err(|why| Error::invalid(field, why))
}

/// [`parse_rfc3339`] without a field: the error says what was expected.
pub fn rfc3339(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!("expected an RFC 3339 timestamp such as 2026-12-31T00:00:00Z, got {raw:?}")
        })
}

/// Parses the query string of `GET /admin/installations`. `accepts_csv` is true when the
/// `Accept` header asks for `text/csv` (an explicit `format` wins).
pub fn parse_list_query(query: &str, accepts_csv: bool) -> Result<ListRequest, Error> {
    let mut multi: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        multi
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }
    let joined = |k: &str| multi.get(k).map(|vs| vs.join(","));
    let last = |k: &str| multi.get(k).and_then(|vs| vs.last().cloned());

    let mut req = ListRequest::default();
    if let Some(v) = joined("status") {
        req.filter.statuses = parse_statuses(&v)?;
    }
    if let Some(v) = joined("license") {
        req.filter.licenses = parse_licenses(&v)?;
    }
    if let Some(v) = joined("product") {
        req.filter.products = parse_products(&v)?;
    }
    if let Some(v) = joined("flavour") {
        req.filter.flavours = parse_flavours(&v)?;
    }
    if let Some(v) = last("q") {
        let v = v.trim().to_owned();
        if v.chars().count() > 200 {
            return Err(Error::invalid("q", "longer than 200 characters"));
        }
        req.filter.q = (!v.is_empty()).then_some(v);
    }
    if let Some(v) = last("trial_ends_before") {
        req.filter.trial_ends_before = Some(parse_date_param("trial_ends_before", &v)?);
    }
    if let Some(v) = last("corroborated") {
        req.filter.corroborated = Some(parse_corroborated(&v)?);
    }
    if let Some(v) = last("sort") {
        req.sort = parse_sort(&v)?;
    }
    if let Some(v) = last("limit") {
        req.limit = parse_limit(&v)?;
    }
    if let Some(v) = last("cursor").filter(|c| !c.is_empty()) {
        req.after = Some(decode_cursor(req.sort, &v)?);
    }
    req.format = match last("format").as_deref() {
        Some("csv") => Format::Csv,
        Some("json") => Format::Json,
        Some(other) => {
            return Err(Error::invalid(
                "format",
                format!("unknown value {other:?}; expected json or csv"),
            ));
        }
        None if accepts_csv => Format::Csv,
        None => Format::Json,
    };
    Ok(req)
}

// ---------------------------------------------------------------------------------------
// Cursors
// ---------------------------------------------------------------------------------------

/// The decoded form of a cursor: the sort it was made for, the last row's sort value and
/// client key. Opaque to clients (base64url of this JSON).
#[derive(Serialize, Deserialize)]
struct CursorBody {
    s: String,
    v: Option<String>,
    k: String,
}

pub fn encode_cursor(sort: Sort, after: &After) -> String {
    let v = match &after.value {
        // Full precision: the next page starts strictly after this exact value, so a rounded
        // one could return the same row again.
        KeyValue::Time(t) => Some(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        KeyValue::Text(s) => Some(s.clone()),
        KeyValue::Null => None,
    };
    let body = CursorBody {
        s: sort.as_str().to_owned(),
        v,
        k: after.client_key.clone(),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

pub fn decode_cursor(sort: Sort, raw: &str) -> Result<After, Error> {
    let bad = |why: &str| Error::invalid("cursor", why);
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim().trim_end_matches('='))
        .map_err(|_| bad("not a cursor from a previous page"))?;
    let body: CursorBody =
        serde_json::from_slice(&bytes).map_err(|_| bad("not a cursor from a previous page"))?;
    if body.s != sort.as_str() {
        return Err(bad(&format!(
            "made for sort={}, not sort={}",
            body.s,
            sort.as_str()
        )));
    }
    let value = match (sort, body.v) {
        (Sort::InstalledAt | Sort::InstalledAtDesc | Sort::TrialEnd, Some(v)) => {
            let t = DateTime::parse_from_rfc3339(&v)
                .map_err(|_| bad("not a cursor from a previous page"))?;
            KeyValue::Time(t.with_timezone(&Utc))
        }
        (Sort::TrialEnd, None) => KeyValue::Null,
        (Sort::BaseUrl, Some(v)) => KeyValue::Text(v),
        _ => return Err(bad("not a cursor from a previous page")),
    };
    Ok(After {
        value,
        client_key: body.k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_sort() {
        // nanoseconds included: a rounded cursor would repeat the row it ends on
        let t = Utc::now();
        for (sort, value) in [
            (Sort::InstalledAt, KeyValue::Time(t)),
            (Sort::InstalledAtDesc, KeyValue::Time(t)),
            (Sort::TrialEnd, KeyValue::Time(t)),
            (Sort::TrialEnd, KeyValue::Null),
            (
                Sort::BaseUrl,
                KeyValue::Text("https://a.example/wiki".into()),
            ),
        ] {
            let after = After {
                value,
                client_key: "ck-1".into(),
            };
            let c = encode_cursor(sort, &after);
            assert_eq!(decode_cursor(sort, &c).unwrap(), after);
        }
        let c = encode_cursor(
            Sort::BaseUrl,
            &After {
                value: KeyValue::Text("x".into()),
                client_key: "k".into(),
            },
        );
        assert!(decode_cursor(Sort::InstalledAt, &c).is_err());
        for garbage in ["", "!!!", "bm90IGpzb24", "eyJzIjoiaW5zdGFsbGVkX2F0In0"] {
            let e = decode_cursor(Sort::InstalledAt, garbage).unwrap_err();
            assert!(e.to_string().starts_with("cursor:"), "{e}");
        }
    }

    #[test]
    fn list_query_errors_name_the_parameter() {
        for (q, field) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=ten", "limit"),
            ("status=enabled,gone", "status"),
            ("license=paid", "license"),
            ("sort=name", "sort"),
            ("product=bamboo", "product"),
            ("cursor=garbage", "cursor"),
            ("trial_ends_before=next-week", "trial_ends_before"),
            ("format=xml", "format"),
        ] {
            let e = parse_list_query(q, false).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{field}:")), "{q}: {e}");
        }
    }

    #[test]
    fn list_query_reads_every_parameter() {
        let r = parse_list_query(
            "status=enabled,disabled&status=installed&license=trial&product=jira&q=Acme\
             &trial_ends_before=2026-05-01&sort=-installed_at&limit=500&format=csv",
            false,
        )
        .unwrap();
        assert_eq!(
            r.filter.statuses,
            vec![Status::Enabled, Status::Disabled, Status::Installed]
        );
        assert_eq!(r.filter.licenses, vec![LicenseState::Trial]);
        assert_eq!(r.filter.products, vec!["jira".to_owned()]);
        assert_eq!(r.filter.q.as_deref(), Some("Acme"));
        assert_eq!(
            r.filter.trial_ends_before.unwrap().to_rfc3339(),
            "2026-05-01T00:00:00+00:00"
        );
        assert_eq!(r.sort, Sort::InstalledAtDesc);
        assert_eq!(r.limit, 500);
        assert_eq!(r.format, Format::Csv);
        assert_eq!(parse_list_query("", true).unwrap().format, Format::Csv);
        assert_eq!(
            parse_list_query("format=json", true).unwrap().format,
            Format::Json
        );
        assert_eq!(parse_list_query("", false).unwrap().limit, DEFAULT_LIMIT);
    }
}

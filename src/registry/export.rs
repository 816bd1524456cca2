//! The CSV export of installations (`GET /admin/installations?format=csv` and
//! `connect-keeper installations list --format csv`): one flat row per installation, streamed
//! in batches so memory stays flat.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::Stream;

use crate::registry::error::Error;
use crate::registry::installations::all_matching;
use crate::registry::views::Installation;
use crate::store::Db;
use crate::store::listing::{Filter, Sort};

/// The CSV columns: the Installation's fields with nested ones flattened by `_`
/// (`license.state` → `license_state`, `customer.company` → `customer_company`,
/// `customer.technical_contact.email` → `technical_contact_email`). Grants are a list and
/// are left out; `license_state` shows their effect.
pub const CSV_HEADER: [&str; 45] = [
    "client_key",
    "app_key",
    "base_url",
    "display_url",
    "product_type",
    "description",
    "cloud_id",
    "installation_id",
    "service_entitlement_number",
    "entitlement_id",
    "entitlement_number",
    "status",
    "installed_at",
    "updated_at",
    "uninstalled_at",
    "last_seen_at",
    "license_state",
    "license_source",
    "license_lic_last_seen",
    "license_lic_seen_at",
    "license_type",
    "license_evaluation",
    "license_tier",
    "license_user_count",
    "license_maintenance_start",
    "license_maintenance_end",
    "license_trial_start",
    "license_trial_end",
    "license_effective_trial_end",
    "license_marketplace_status",
    "license_synced_at",
    "license_corroborated",
    "customer_company",
    "customer_country",
    "customer_region",
    "technical_contact_name",
    "technical_contact_email",
    "technical_contact_phone",
    "billing_contact_name",
    "billing_contact_email",
    "billing_contact_phone",
    "active_grants",
    "flavour",
    "forge_environment_type",
    "forge_environment_id",
];

fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

/// One CSV record in [`CSV_HEADER`] order. Every cell goes through
/// [`crate::sanitize::csv_cell`]: company names, contacts, descriptions and URLs come from
/// sites and the Marketplace, and a spreadsheet would run one that begins with `=`.
pub fn csv_record(i: &Installation, now: DateTime<Utc>) -> Vec<String> {
    let l = &i.license;
    let c = i.customer.as_ref();
    let tc = c.and_then(|c| c.technical_contact.as_ref());
    let bc = c.and_then(|c| c.billing_contact.as_ref());
    let active_grants = i
        .grants
        .iter()
        .filter(|g| {
            g.revoked_at.is_none() && g.starts_at <= now && g.ends_at.is_none_or(|e| e > now)
        })
        .count();
    let env = i.forge_environment.as_ref();
    crate::sanitize::csv_record([
        opt(&i.client_key),
        i.app_key.clone(),
        i.base_url.clone(),
        opt(&i.display_url),
        i.product_type.clone(),
        opt(&i.description),
        opt(&i.cloud_id),
        opt(&i.installation_id),
        opt(&i.service_entitlement_number),
        opt(&i.entitlement_id),
        opt(&i.entitlement_number),
        i.status.clone(),
        ts(Some(i.installed_at)),
        ts(Some(i.updated_at)),
        ts(i.uninstalled_at),
        ts(i.last_seen_at),
        l.state.clone(),
        opt(&l.source),
        opt(&l.lic_last_seen),
        ts(l.lic_seen_at),
        opt(&l.license_type),
        l.evaluation.map(|b| b.to_string()).unwrap_or_default(),
        opt(&l.tier),
        l.user_count.map(|n| n.to_string()).unwrap_or_default(),
        ts(l.maintenance_start),
        ts(l.maintenance_end),
        ts(l.trial_start),
        ts(l.trial_end),
        ts(l.effective_trial_end),
        opt(&l.marketplace_status),
        ts(l.synced_at),
        l.corroborated.to_string(),
        c.map(|c| opt(&c.company)).unwrap_or_default(),
        c.map(|c| opt(&c.country)).unwrap_or_default(),
        c.map(|c| opt(&c.region)).unwrap_or_default(),
        tc.map(|c| opt(&c.name)).unwrap_or_default(),
        tc.map(|c| opt(&c.email)).unwrap_or_default(),
        tc.map(|c| opt(&c.phone)).unwrap_or_default(),
        bc.map(|c| opt(&c.name)).unwrap_or_default(),
        bc.map(|c| opt(&c.email)).unwrap_or_default(),
        bc.map(|c| opt(&c.phone)).unwrap_or_default(),
        active_grants.to_string(),
        i.flavour.clone(),
        env.map(|e| e.kind.clone()).unwrap_or_default(),
        env.and_then(|e| e.id.clone()).unwrap_or_default(),
    ])
}

fn csv_bytes(records: impl IntoIterator<Item = Vec<String>>) -> Result<Bytes, Error> {
    let mut w = csv::Writer::from_writer(Vec::with_capacity(64 * 1024));
    for r in records {
        w.write_record(&r).map_err(|e| Error::Internal(e.into()))?;
    }
    let buf = w
        .into_inner()
        .map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))?;
    Ok(Bytes::from(buf))
}

/// The whole export as a stream of CSV chunks: the header row, then one chunk per batch.
pub fn csv_stream(db: Db, filter: Filter, sort: Sort) -> impl Stream<Item = Result<Bytes, Error>> {
    use futures::StreamExt;
    let header = futures::stream::once(async {
        csv_bytes([CSV_HEADER.iter().map(|s| (*s).to_owned()).collect()])
    });
    let now = crate::store::now();
    let body = all_matching(db, filter, sort).map(move |batch| {
        let batch = batch?;
        csv_bytes(batch.iter().map(|i| csv_record(i, now)))
    });
    header.chain(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_has_a_value_for_every_column() {
        let row = crate::store::installations::tests_support::blank_row("ck");
        let rec = csv_record(&Installation::from_row(&row, &[]), Utc::now());
        assert_eq!(rec.len(), CSV_HEADER.len());
    }
}

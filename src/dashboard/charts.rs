//! The Overview's charts, drawn as SVG by the server (no script, no outside library).

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use crate::error::ApiError;
use crate::registry::vendor as reg;
use crate::store::Db;

/// Every chart of the Overview.
pub async fn overview_charts(
    _db: &Db,
    _summary: &reg::Summary,
    _now: DateTime<Utc>,
) -> Result<Markup, ApiError> {
    Ok(html! {})
}

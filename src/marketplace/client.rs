//! The Marketplace reporting API as the sync uses it: one page at a time, with the vendor's
//! credentials, bounded in size and time, retried where a retry can help. Pages are parsed by
//! [`super::parser`].

use std::time::Duration;

use secrecy::ExposeSecret;
use url::Url;

use super::MarketplaceError;
use super::parser::{Page, parse_page};
use crate::config::{Config, MarketplaceCredentials};
use crate::http_client::{BodyError, read_limited};

/// Largest page body accepted (a real page of 50 is ~100 KiB).
const MAX_PAGE_BYTES: usize = 32 << 20;
/// Retries of one page after a 5xx, 429, timeout or network error.
const PAGE_RETRIES: u32 = 2;

/// The Marketplace of one app: where it is (`MARKETPLACE_URL`), the vendor's credentials when
/// configured, the app key whose licenses are read, and the timings of a page request.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    creds: Option<MarketplaceCredentials>,
    app_key: String,
    timeout: Duration,
    retry_base: Duration,
}

impl Client {
    /// The client of `config`'s Marketplace for the app `app_key`, over `http` (whose
    /// connection settings it shares).
    pub fn new(config: &Config, app_key: &str, http: reqwest::Client) -> Client {
        Client {
            http,
            base: config.marketplace_url.clone(),
            creds: config.marketplace.clone(),
            app_key: app_key.to_owned(),
            timeout: config.marketplace_timeout,
            retry_base: config.marketplace_retry_base,
        }
    }

    /// The vendor's credentials; `None` when the three `MARKETPLACE_*` settings are not all set.
    pub fn credentials(&self) -> Option<&MarketplaceCredentials> {
        self.creds.as_ref()
    }

    /// `MARKETPLACE_URL`.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The first page of the app's licenses for the vendor of `creds`.
    pub fn first_page(&self, creds: &MarketplaceCredentials) -> String {
        first_page_url(&self.base, &creds.vendor_id, &self.app_key)
    }

    /// One page, retried on 5xx, 429, timeouts and network errors.
    #[tracing::instrument(skip_all, fields(page = page_no))]
    pub async fn fetch_page(
        &self,
        creds: &MarketplaceCredentials,
        url: &str,
        page_no: usize,
    ) -> Result<Page, MarketplaceError> {
        let mut delay = self.retry_base;
        let mut attempt = 0;
        loop {
            match self.fetch_once(creds, url).await {
                Err(e) if e.retryable() && attempt < PAGE_RETRIES => {
                    tracing::info!(error = %e, attempt, "Marketplace page failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn fetch_once(
        &self,
        creds: &MarketplaceCredentials,
        url: &str,
    ) -> Result<Page, MarketplaceError> {
        let res = self
            .http
            .get(url)
            .basic_auth(&creds.user, Some(creds.api_token.expose_secret()))
            .header("accept", "application/json")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| MarketplaceError::from_reqwest(&e))?;
        let status = res.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(MarketplaceError::Refused(status.as_u16()));
        }
        if !status.is_success() {
            return Err(MarketplaceError::Status(status.as_u16()));
        }
        let body = read_limited(res, MAX_PAGE_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => MarketplaceError::Malformed("page too large".into()),
                BodyError::Read(e) => MarketplaceError::from_reqwest(&e),
            })?;
        parse_page(&body)
    }
}

/// The first page: the app's cloud licenses with data insights (evaluation dates), 50 a page.
pub fn first_page_url(base: &Url, vendor_id: &str, app_key: &str) -> String {
    format!(
        "{}/rest/2/vendors/{vendor_id}/reporting/licenses?addon={app_key}&hosting=cloud&withDataInsights=true&limit=50",
        base.as_str().trim_end_matches('/')
    )
}

/// Resolves a `_links.next.href`. The Marketplace sends paths relative to its root; they are
/// taken relative to `MARKETPLACE_URL` (which may carry a path prefix, e.g. behind a proxy).
/// An absolute link must stay on the same origin: the credentials go with every request.
pub fn resolve_next(base: &Url, href: &str) -> Result<String, MarketplaceError> {
    let href = href.trim();
    if href.is_empty() {
        return Err(MarketplaceError::Malformed("empty next link".into()));
    }
    if href.starts_with('/') && !href.starts_with("//") {
        return Ok(format!("{}{href}", base.as_str().trim_end_matches('/')));
    }
    let url = base
        .join(href)
        .map_err(|_| MarketplaceError::Malformed("unparsable next link".into()))?;
    if url.origin() != base.origin() {
        return Err(MarketplaceError::ForeignLink);
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_links() {
        let base = Url::parse("https://marketplace.atlassian.com").unwrap();
        assert_eq!(
            resolve_next(
                &base,
                "/rest/2/vendors/1/reporting/licenses?offset=50&limit=50"
            )
            .unwrap(),
            "https://marketplace.atlassian.com/rest/2/vendors/1/reporting/licenses?offset=50&limit=50"
        );
        let prefixed = Url::parse("http://127.0.0.1:9000/mp/").unwrap();
        assert_eq!(
            resolve_next(&prefixed, "/rest/2/x?offset=2").unwrap(),
            "http://127.0.0.1:9000/mp/rest/2/x?offset=2"
        );
        assert_eq!(
            resolve_next(&base, "https://marketplace.atlassian.com/rest/2/x?offset=2").unwrap(),
            "https://marketplace.atlassian.com/rest/2/x?offset=2"
        );
        assert!(matches!(
            resolve_next(&base, "https://evil.example/steal"),
            Err(MarketplaceError::ForeignLink)
        ));
        assert!(matches!(
            resolve_next(&base, "//evil.example/steal"),
            Err(MarketplaceError::ForeignLink)
        ));
        assert!(matches!(
            resolve_next(&base, " "),
            Err(MarketplaceError::Malformed(_))
        ));
        assert_eq!(
            first_page_url(&base, "1234567", "com.example.acme-reports"),
            "https://marketplace.atlassian.com/rest/2/vendors/1234567/reporting/licenses?addon=com.example.acme-reports&hosting=cloud&withDataInsights=true&limit=50"
        );
    }
}

//! Signing calls from the app to the product as the app's "add-on user" (docs/protocol.md#outbound-signing).

use serde_json::json;

use super::jwt::sign_hs256;
use super::qsh::qsh_for_url;

/// Lifetime of an outbound token: the convention of ACE, toolsplus and the atlassian-jwt README.
/// Each request is signed separately, so a short lifetime costs nothing.
pub const OUTBOUND_TOKEN_TTL_SECS: i64 = 180;

/// Returns the JWT to send as `Authorization: JWT <token>` for one product request.
///
/// `url` is the full URL that will be requested (with its query, exactly as it will be sent, since
/// the product hashes what it receives); `product_base_url` is the tenant's `baseUrl` from the
/// install payload, whose path (e.g. `/wiki` on Confluence) is not part of the hash. `iss` is the
/// app key, not the tenant's clientKey: the product looks the app up by it. A relative `url` such
/// as `/rest/api/content` also works, as long as it does not repeat the base path.
pub fn sign_product_request(
    method: &str,
    url: &str,
    product_base_url: &str,
    app_key: &str,
    shared_secret: &[u8],
    now: i64,
) -> String {
    let claims = json!({
        "iss": app_key,
        "iat": now,
        "exp": now.saturating_add(OUTBOUND_TOKEN_TTL_SECS),
        "qsh": qsh_for_url(method, url, product_base_url),
    });
    sign_hs256(&claims, shared_secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::jwt::{QshPolicy, TokenKind, check_qsh, check_times, verify_hs256};
    use crate::connect::qsh::{hash_canonical, qsh_for_url};

    const SECRET: &[u8] = b"tenant-shared-secret";
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn confluence_path_is_relative_to_wiki() {
        let base = "https://acme.atlassian.net/wiki";
        let url = "https://acme.atlassian.net/wiki/rest/atlassian-connect/1/addons/my-app";
        let token = sign_product_request("GET", url, base, "my-app", SECRET, NOW);

        let claims = verify_hs256(&token, SECRET).expect("verifies with the shared secret");
        assert_eq!(claims.iss.as_deref(), Some("my-app"));
        assert_eq!(claims.iat, Some(NOW));
        assert_eq!(claims.exp, Some(NOW + 180));
        assert_eq!(
            claims.qsh.as_deref(),
            Some(hash_canonical("GET&/rest/atlassian-connect/1/addons/my-app&").as_str())
        );
        assert_eq!(check_times(&claims, NOW + 180, 0), Ok(()));
        assert!(check_times(&claims, NOW + 181, 0).is_err());
    }

    #[test]
    fn jira_path_and_query() {
        let base = "https://acme.atlassian.net/";
        let url =
            "https://acme.atlassian.net/rest/api/3/search?jql=project+%3D+TEST&fields=summary";
        let token = sign_product_request("get", url, base, "my-app", SECRET, NOW);

        let claims = verify_hs256(&token, SECRET).expect("verifies");
        let expected =
            hash_canonical("GET&/rest/api/3/search&fields=summary&jql=project%20%3D%20TEST");
        assert_eq!(claims.qsh.as_deref(), Some(expected.as_str()));
        // The product recomputes the same hash from the request it receives.
        assert_eq!(
            check_qsh(
                &claims,
                &qsh_for_url("GET", url, base),
                QshPolicy::RequestOnly
            ),
            Ok(TokenKind::QueryBound)
        );
        assert!(verify_hs256(&token, b"other-secret").is_err());
    }

    #[test]
    fn method_is_bound() {
        let base = "https://acme.atlassian.net";
        let url = "https://acme.atlassian.net/rest/api/3/issue/TEST-1";
        let token = sign_product_request("DELETE", url, base, "my-app", SECRET, NOW);
        let claims = verify_hs256(&token, SECRET).expect("verifies");
        assert_eq!(
            check_qsh(
                &claims,
                &qsh_for_url("GET", url, base),
                QshPolicy::RequestOnly
            ),
            Err(crate::connect::jwt::JwtError::QshMismatch)
        );
    }
}

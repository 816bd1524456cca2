//! Minting FITs and key sets for tests and benchmarks: a valid claim set, tokens signed with
//! the repository's test keys (`tests/fixtures/rsa_*.pem`), and the JWKS that publishes them.
//!
//! The keys are public test material: nothing signed with them may ever be trusted outside a
//! test, which is why a production key set never contains them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};

pub const PRIVATE_PEM: &str = include_str!("../../tests/fixtures/rsa_private.pem");
pub const PUBLIC_PEM: &str = include_str!("../../tests/fixtures/rsa_public.pem");
pub const OTHER_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/rsa_other_private.pem");
pub const OTHER_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/rsa_other_public.pem");

/// The key id under which [`PUBLIC_PEM`] is published by [`jwks`] in tests.
pub const KID: &str = "forge-kid-1";
pub const APP_UUID: &str = "6f0d9f4c-3c59-4a4e-9b52-2f9c8a1e7d10";
pub const INSTALLATION_UUID: &str = "a1b2c3d4-0000-4e5f-8a9b-0c1d2e3f4a5b";
pub const ENVIRONMENT_ID: &str =
    "ari:cloud:ecosystem::environment/6f0d9f4c-3c59-4a4e-9b52-2f9c8a1e7d10/prod-env";
pub const CLOUD_ID: &str = "4c8e2f9a-1b3d-4e5f-a6b7-c8d9e0f1a2b3";

pub fn app_ari() -> String {
    format!("ari:cloud:ecosystem::app/{APP_UUID}")
}

pub fn installation_ari(uuid: &str) -> String {
    format!("ari:cloud:ecosystem::installation/{uuid}")
}

/// A valid FIT claim set at `now` for [`APP_UUID`] / [`INSTALLATION_UUID`] on a Jira site
/// [`CLOUD_ID`], production, with a user and no licence (tests add `app.license`).
pub fn claims(now: i64) -> Value {
    json!({
        "iss": "forge/invocation-token",
        "aud": app_ari(),
        "iat": now,
        "nbf": now,
        "exp": now + 25,
        "jti": format!("jti-{now}"),
        "principal": "user-1",
        "app": {
            "id": app_ari(),
            "appVersion": "2.0.0",
            "installationId": installation_ari(INSTALLATION_UUID),
            "installation": {
                "id": installation_ari(INSTALLATION_UUID),
                "contexts": [{
                    "name": "jira",
                    "cloudId": CLOUD_ID,
                    "apiBaseUrl": format!("https://api.atlassian.com/ex/jira/{CLOUD_ID}")
                }]
            },
            "apiBaseUrl": format!("https://api.atlassian.com/ex/jira/{CLOUD_ID}"),
            "environment": {"type": "PRODUCTION", "id": ENVIRONMENT_ID},
            "module": {"type": "core:endpoint", "key": "remote-endpoint"}
        },
        "context": {"cloudId": CLOUD_ID, "siteUrl": "https://acme.atlassian.net"}
    })
}

/// The same claims for another installation (and, when given, another site).
pub fn claims_for(now: i64, installation_uuid: &str, cloud_id: Option<&str>) -> Value {
    let mut c = claims(now);
    c["app"]["installationId"] = json!(installation_ari(installation_uuid));
    c["app"]["installation"]["id"] = json!(installation_ari(installation_uuid));
    match cloud_id {
        Some(cloud) => {
            c["app"]["installation"]["contexts"][0]["cloudId"] = json!(cloud);
            c["context"]["cloudId"] = json!(cloud);
        }
        None => {
            c["app"]["installation"]["contexts"] = json!([]);
            c.as_object_mut().expect("object").remove("context");
        }
    }
    c
}

/// Signs `claims` with [`PRIVATE_PEM`] under `kid`.
pub fn mint(claims: &Value, kid: &str) -> String {
    sign(claims, Some(kid), Algorithm::RS256, PRIVATE_PEM)
}

/// Signs `claims` with [`OTHER_PRIVATE_PEM`] (not in the usual key set) under `kid`.
pub fn mint_other(claims: &Value, kid: &str) -> String {
    sign(claims, Some(kid), Algorithm::RS256, OTHER_PRIVATE_PEM)
}

/// Signs with [`PRIVATE_PEM`] and any RSA algorithm, with or without a `kid`.
pub fn mint_with_header(claims: &Value, kid: Option<&str>, alg: Algorithm) -> String {
    sign(claims, kid, alg, PRIVATE_PEM)
}

fn sign(claims: &Value, kid: Option<&str>, alg: Algorithm, pem: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("test private key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign test FIT")
}

/// One JWK (`kty` RSA, `use` sig, `alg` RS256) for a PEM public key.
pub fn jwk(kid: &str, public_pem: &str) -> Value {
    let key = DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("test public key");
    let der = key.try_get_as_bytes().expect("DER");
    let provider = CryptoProvider::try_get_default().expect("a jsonwebtoken crypto provider");
    let (n, e) =
        (provider.key_utils.rsa_pub_components_from_public_key)(der).expect("RSA components");
    json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(n),
        "e": URL_SAFE_NO_PAD.encode(e),
    })
}

/// A key set publishing each `(kid, public PEM)`.
pub fn jwks(keys: &[(&str, &str)]) -> Value {
    json!({"keys": keys.iter().map(|(kid, pem)| jwk(kid, pem)).collect::<Vec<_>>()})
}

//! The request path's CPU cost: verify-and-decide for one product request — find the token,
//! decode it, HMAC-SHA256, time checks, qsh of the request, license decision — with the tenant
//! already in memory (as the cache serves it); and the same for a context token the process
//! already verified. The Forge counterparts: a FIT verified in full (RS256, key from the
//! cached key set) and a FIT the process already verified. Run: `cargo bench --bench verify`.

use std::hint::black_box;
use std::sync::Arc;

use chrono::{Duration, Utc};
use connect_keeper::connect::RequestParts;
use connect_keeper::connect::jwt::{QshPolicy, sign_hs256};
use connect_keeper::connect::qsh;
use connect_keeper::domain::{GrantKind, Status};
use connect_keeper::guard::{Rules, authorize, present, present_cached, remember};
use connect_keeper::licensing::{GrantFacts, Observations};
use connect_keeper::tenants::{TenantRecord, TenantSnapshot};
use connect_keeper::verified_tokens::{VerifiedFits, VerifiedTokens, recall_fit, verify_fit};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const SECRET: &str = "ATCOTL2v9kq-a-realistic-length-shared-secret-0123456789";
const CLIENT_KEY: &str = "9a4ff1a0-3b1c-3a7e-8d2b-5c9e0f1d2a3b";
/// What the product appends to an issue panel's URL (docs/protocol.md#lic).
const PANEL_QUERY: &str = "issueKey=ACME-42&projectKey=ACME&xdm_e=https%3A%2F%2Facme-corp.atlassian.net\
&xdm_c=channel-acme-issue-panel&cp=&xdm_deprecated_addon_key_do_not_use=connect-keeper-app\
&lic=active&cv=1001.0.0-SNAPSHOT";

fn tenant(grants: Vec<GrantFacts>) -> Arc<TenantSnapshot> {
    let record = TenantRecord {
        client_key: CLIENT_KEY.into(),
        base_url: "https://acme-corp.atlassian.net".into(),
        product_type: "jira".into(),
        shared_secret: Some(SECRET.into()),
        status: Some(Status::Enabled),
        ..TenantRecord::default()
    };
    Arc::new(TenantSnapshot::new(
        record,
        &Observations::default(),
        grants,
    ))
}

fn verify(c: &mut Criterion) {
    let now = Utc::now();
    let t = now.timestamp();
    let rules = |policy| Rules {
        policy,
        base_path: "",
        leeway_secs: 30,
        enforcement: true,
        lic_trust: connect_keeper::licensing::LicTrust::Request,
    };
    let claims = |qsh: String| {
        json!({"iss": CLIENT_KEY, "sub": "557058:f0e1d2c3-account", "qsh": qsh,
               "iat": t, "exp": t + 180, "context": {}})
    };

    // An iframe page: query-bound token in `jwt`, lic bound by it.
    let page_token = sign_hs256(
        &claims(qsh::qsh("GET", "/panel", PANEL_QUERY, "")),
        SECRET.as_bytes(),
    );
    let page_query = format!("{PANEL_QUERY}&jwt={page_token}");
    let page_tenant = tenant(vec![]);
    c.bench_function("verify_and_decide/page_query_bound_lic", |b| {
        b.iter(|| {
            let parts = RequestParts {
                method: "GET",
                path: "/panel",
                query: black_box(&page_query),
                authorization: None,
            };
            let presented = present(&parts).expect("token");
            let v = authorize(
                &presented,
                Some(page_tenant.clone()),
                &parts,
                &rules(QshPolicy::RequestOnly),
                now,
            )
            .expect("verified");
            assert!(v.decision.licensed);
            v
        })
    });

    // An API call from the iframe: context token in the header, licensed by a grant.
    let ctx_header = format!(
        "JWT {}",
        sign_hs256(&claims("context-qsh".into()), SECRET.as_bytes())
    );
    let grant = GrantFacts {
        kind: GrantKind::Free,
        starts_at: now - Duration::days(1),
        ends_at: None,
        revoked_at: None,
    };
    let api_tenant = tenant(vec![grant]);
    // One `/api/whoami` request through the guard's two steps; `cache` is the guard's
    // verified-token cache, or `None` for a token never seen before.
    let api_call = |cache: Option<&VerifiedTokens>| {
        let parts = RequestParts {
            method: "GET",
            path: "/api/whoami",
            query: "",
            authorization: Some(black_box(&ctx_header)),
        };
        let presented = match cache {
            Some(cache) => present_cached(&parts, cache),
            None => present(&parts),
        }
        .expect("token");
        let v = authorize(
            &presented,
            Some(api_tenant.clone()),
            &parts,
            &rules(QshPolicy::RequestOrContext),
            now,
        )
        .expect("verified");
        assert!(v.decision.licensed);
        if let Some(cache) = cache {
            remember(&presented, &v, cache);
        }
        v
    };
    c.bench_function("verify_and_decide/api_context_grant", |b| {
        b.iter(|| api_call(None))
    });

    // The same API call with a context token the process already verified (an iframe reuses
    // its token for every call until it nearly expires): the guard's path when the token is
    // remembered for this tenant snapshot — every check but the HMAC and the decoding.
    let remembered = VerifiedTokens::default();
    api_call(Some(&remembered));
    c.bench_function("verify_and_decide/api_context_grant_remembered", |b| {
        b.iter(|| api_call(Some(&remembered)))
    });

    // A Forge Remote call: a FIT in `Authorization: Bearer`, the key found by `kid` in the
    // cached key set (a map look-up, as `ForgeKeys::cached`), RS256, every claim check, the
    // installation already in memory, and the licence decided from `app.license`.
    let fit_claims = {
        let mut c = connect_keeper::forge::testing::claims(t);
        c["app"]["license"] = json!({"active": true, "type": "commercial"});
        c
    };
    let fit_header = format!(
        "Bearer {}",
        connect_keeper::forge::testing::mint(&fit_claims, connect_keeper::forge::testing::KID)
    );
    let keys: std::collections::HashMap<String, Arc<jsonwebtoken::DecodingKey>> = [(
        connect_keeper::forge::testing::KID.to_owned(),
        Arc::new(
            jsonwebtoken::DecodingKey::from_rsa_pem(
                connect_keeper::forge::testing::PUBLIC_PEM.as_bytes(),
            )
            .expect("test key"),
        ),
    )]
    .into();
    let policy = connect_keeper::forge::fit::FitPolicy {
        app_ids: vec![
            connect_keeper::forge::ids::AppId::parse(connect_keeper::forge::testing::APP_UUID)
                .expect("app id"),
        ],
        environments: vec![connect_keeper::forge::ids::EnvironmentType::Production],
        leeway_secs: 30,
    };
    let fit_tenant = tenant(vec![]);
    // One FIT request through the guard's steps; `cache` is the guard's verified-FIT cache, or
    // `None` for a FIT never seen before.
    let fit_call = |cache: Option<&VerifiedFits>| {
        use connect_keeper::forge::fit;
        let token = fit::bearer_token(Some(black_box(&fit_header)))
            .expect("bearer")
            .expect("token");
        let current = |kid: &str| keys.get(kid).cloned();
        let recalled = cache.and_then(|c| recall_fit(c, token, current, &policy, t));
        let verified = match recalled {
            Some(recalled) => recalled.expect("recalled"),
            None => {
                let kid = fit::peek_kid(token).expect("kid");
                let key = keys.get(&kid).expect("cached key");
                match cache {
                    Some(cache) => verify_fit(cache, token, &kid, key, &policy, t),
                    None => fit::verify(token, key, &policy, t).map(Arc::new),
                }
                .expect("verified")
            }
        };
        let d = connect_keeper::licensing::decide_fit(
            true,
            connect_keeper::licensing::LicTrust::Request,
            fit_tenant.grants(),
            verified.license.as_ref().and_then(|l| l.active),
            &fit_tenant.known(),
            now,
        );
        assert!(d.licensed);
        d
    };
    c.bench_function("verify_and_decide/fit_known_installation", |b| {
        b.iter(|| fit_call(None))
    });

    // The same FIT presented again (Forge's bridge reuses the token of `requestRemote`): found
    // in the verified-FIT cache with the key the key set still holds — every check but the
    // RS256 signature and the decoding.
    let remembered_fits = VerifiedFits::default();
    fit_call(Some(&remembered_fits));
    c.bench_function("verify_and_decide/fit_cached", |b| {
        b.iter(|| fit_call(Some(&remembered_fits)))
    });

    // For scale: the qsh of the page request alone.
    c.bench_function("qsh/page_request", |b| {
        b.iter(|| qsh::qsh("GET", "/panel", black_box(&page_query), ""))
    });
}

criterion_group!(benches, verify);
criterion_main!(benches);

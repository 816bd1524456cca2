//! `examples/vendor_app.rs`, the crate used as a library, compiled into this test binary: every
//! module URL of the descriptor it serves is a route it serves (no 404), and docs/library.md
//! shows the example's code exactly as it is.

use actix_web::{App, test as actix_test, web};
use serde_json::{Value, json};

use crate::helpers::*;

#[allow(dead_code)] // its `main` runs only as the example
#[path = "../../examples/vendor_app.rs"]
mod example;

/// A module URL as the product calls it: `{context.parameters}` filled in.
fn filled(url: &str) -> String {
    let mut out = String::new();
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        out.push_str(&rest[..open]);
        out.push_str("ACME-1");
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

both_backends! {
    async fn the_vendor_app_serves_every_module_of_its_descriptor(backend) {
        let app = TestApp::spawn_with(backend, &[("DESCRIPTOR_PATH", example::DESCRIPTOR)]).await;
        let service = actix_test::init_service(
            App::new()
                .app_data(web::Data::from(app.state.clone()))
                .configure(example::routes),
        )
        .await;
        let req = actix_test::TestRequest::get().uri("/atlassian-connect.json").to_request();
        let descriptor: Value = actix_test::call_and_read_body_json(&service, req).await;
        assert_eq!(descriptor["key"], "vendor-app-example");

        // A licensed site, installed with the example's app key.
        let mut body = app.installed_payload("ck-vendor", "vendor-secret");
        body["key"] = json!("vendor-app-example");
        app.install_payload(&body).await;
        connect_keeper::registry::grants::grant_free(
            app.state.as_ref(), "ck-vendor", None, None, "test", connect_keeper::store::now(),
        )
        .await
        .unwrap();

        let call = |method: &'static str, url: String| {
            let token = hs256_query_bound(method, &url, "ck-vendor", "vendor-secret", json!({}));
            let sep = if url.contains('?') { '&' } else { '?' };
            let uri = format!("{url}{sep}jwt={token}");
            let req = match method {
                "POST" => actix_test::TestRequest::post().uri(&uri).set_payload("{}"),
                _ => actix_test::TestRequest::get().uri(&uri),
            };
            actix_test::call_service(&service, req.to_request())
        };
        let mut checked = 0;
        for (kind, modules) in descriptor["modules"].as_object().unwrap() {
            for module in modules.as_array().unwrap() {
                let url = filled(module["url"].as_str().unwrap());
                let method = if kind == "webhooks" { "POST" } else { "GET" };
                let res = call(method, url.clone()).await;
                assert!(res.status().is_success(), "{kind} {method} {url}: {}", res.status());
                checked += 1;
            }
        }
        assert!(checked >= 2, "{descriptor}");
        // The shipped server's page is not this app's: a module pointing there would 404.
        assert_eq!(call("GET", "/panel".into()).await.status(), 404);
    }
}

/// The ```rust block under `heading` in a Markdown text.
fn rust_block<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let section = &markdown[markdown.find(heading).expect("the heading")..];
    let start = section.find("```rust").expect("a rust block");
    let code = &section[start..];
    let code = &code[code.find('\n').unwrap() + 1..];
    &code[..code.find("\n```").expect("the block's end")]
}

#[test]
fn docs_library_md_shows_the_example_as_it_is() {
    let doc = include_str!("../../docs/library.md");
    let example = include_str!("../../examples/vendor_app.rs");
    let code = &example[example.find("\nuse ").expect("a use line") + 1..];
    assert_eq!(
        rust_block(doc, "## A complete app").trim(),
        code.trim(),
        "docs/library.md must show examples/vendor_app.rs from its first `use` on: copy it over"
    );
}

//! Every published QSH vector (tests/fixtures/qsh-vectors.json; docs/protocol.md#query-string-hash-qsh) must reproduce both the canonical request and its hash.
//! Failures are collected rather than stopping at the first, so one run shows the whole picture.

use connect_keeper::connect::qsh::{canonical_for_url, hash_canonical, qsh_for_url};
use serde_json::Value;

const EXPECTED_VECTORS: usize = 114;

fn field<'a>(vector: &'a Value, name: &str) -> &'a str {
    vector[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {name:?} missing or not a string: {vector}"))
}

#[test]
fn all_qsh_vectors_pass() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/qsh-vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("read qsh-vectors.json");
    let vectors: Vec<Value> = serde_json::from_str(&text).expect("parse qsh-vectors.json");

    let total = vectors.len();
    let mut failures = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let (method, url, base_url) = (field(v, "method"), field(v, "url"), field(v, "base_url"));
        let (want_canonical, want_qsh) = (field(v, "canonical"), field(v, "qsh"));

        let got_canonical = canonical_for_url(method, url, base_url);
        let got_qsh = qsh_for_url(method, url, base_url);
        let mut problems = Vec::new();
        if got_canonical != want_canonical {
            problems.push(format!(
                "canonical: got {got_canonical:?}, want {want_canonical:?}"
            ));
        }
        if got_qsh != want_qsh {
            problems.push(format!("qsh: got {got_qsh}, want {want_qsh}"));
        }
        // Guards against a vector whose own canonical and hash disagree.
        if hash_canonical(want_canonical) != want_qsh {
            problems.push("vector's canonical does not hash to its qsh".to_owned());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "#{i} {method} {url} (base {base_url}) [{}]: {}",
                field(v, "source"),
                problems.join("; ")
            ));
        }
    }

    let passed = total - failures.len();
    assert!(
        failures.is_empty(),
        "{passed}/{total} QSH vectors passed; failures:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        total, EXPECTED_VECTORS,
        "{passed}/{total} QSH vectors passed, but {EXPECTED_VECTORS} vectors were expected"
    );
    println!("{passed}/{total} QSH vectors passed");
}

//! The two migration folders must describe the same schema history: sqlx applies
//! `migrations/sqlite/` or `migrations/postgres/` depending on the backend, and records each
//! version it ran. A migration added to one folder only would leave the other backend a schema
//! behind (and a later one numbered differently would make its history disagree), which no
//! black-box test notices until the missing column is used. So both folders must list the same
//! versions with the same names, each version once.

use std::collections::BTreeMap;
use std::path::Path;

/// `version -> file name` of one folder's `NNNN_name.sql` files.
fn migrations(dir: &str) -> BTreeMap<u64, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = name.strip_suffix(".sql") else {
            panic!("{dir}/{name}: not a .sql file; sqlx would ignore it");
        };
        let (version, description) = stem
            .split_once('_')
            .unwrap_or_else(|| panic!("{dir}/{name}: expected NNNN_description.sql"));
        let version: u64 = version
            .parse()
            .unwrap_or_else(|_| panic!("{dir}/{name}: the version is not a number"));
        assert!(!description.is_empty(), "{dir}/{name}: no description");
        if let Some(other) = found.insert(version, name.clone()) {
            panic!("{dir}: version {version} twice ({other}, {name})");
        }
    }
    found
}

#[test]
fn both_backends_have_the_same_migrations() {
    let sqlite = migrations("migrations/sqlite");
    let postgres = migrations("migrations/postgres");
    assert!(!sqlite.is_empty(), "no migrations found");
    for (version, name) in &sqlite {
        assert_eq!(
            postgres.get(version),
            Some(name),
            "migrations/sqlite/{name} has no twin in migrations/postgres"
        );
    }
    for (version, name) in &postgres {
        assert_eq!(
            sqlite.get(version),
            Some(name),
            "migrations/postgres/{name} has no twin in migrations/sqlite"
        );
    }
}

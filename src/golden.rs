//! Owns the golden-bytes test helper: committed hex dumps of stored types under `tests/golden/`,
//! so that an accidental format change fails a test instead of corrupting stores in the field.
//!
//! To accept an intended change (with a new format/schema version!), run the tests with
//! `RECKON_BLESS=1` and commit the rewritten file.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub fn check(file: &str, entries: Vec<(String, Vec<u8>)>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{file}.hex"));
    let actual: BTreeMap<String, String> = entries
        .into_iter()
        .map(|(k, v)| (k, hex::encode(v)))
        .collect();
    if std::env::var_os("RECKON_BLESS").is_some() {
        let text: String = actual.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with RECKON_BLESS=1 once)", path.display()));
    let expected: BTreeMap<String, String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("`name hex` lines");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    for (k, v) in &actual {
        match expected.get(k) {
            None => panic!("{}: no golden entry for {k}", path.display()),
            Some(e) => assert_eq!(e, v, "{}: bytes of {k} changed", path.display()),
        }
    }
    for k in expected.keys() {
        assert!(
            actual.contains_key(k),
            "{}: golden entry {k} is no longer produced",
            path.display()
        );
    }
}

//! `reckon.yaml` as an operator (or a tool writing it) may get it wrong: parsing either loads a
//! configuration or names the error; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = reckon::config::parse(text, std::path::Path::new("reckon.yaml"));
    }
});

//! Manifests as a Git commit brings them: any bytes, read as YAML (or, with a first byte of `{`
//! or `[`, as JSON), rendered as one file of an App. Rendering may refuse them; it must never
//! panic, hang or grow without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reckon::render::{RenderOptions, SecretKey, render};

fuzz_target!(|data: &[u8]| {
    let name = match data.first() {
        Some(b'{' | b'[') => "app/manifest.json",
        _ => "app/manifest.yaml",
    };
    let options = RenderOptions {
        app: "fuzz".to_string(),
        secret_key: SecretKey::new([7; 32]),
        kustomize_timeout: std::time::Duration::from_secs(1),
        // Small, so that the fuzzer meets the bound instead of the machine's memory.
        yaml_expanded_bytes: 1 << 20,
        fill_port_protocol: true,
    };
    let _ = render(&[(name.to_string(), data.to_vec())], &options);
});

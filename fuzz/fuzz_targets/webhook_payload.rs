//! Webhook payloads as a Git host (or anyone who has the secret) sends them: the repository URLs
//! are read from GitHub's and GitLab's shapes and normalised; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reckon::source::webhook::{github_push_urls, gitlab_push_urls, normalize_repo_url};

fuzz_target!(|data: &[u8]| {
    for urls in [github_push_urls(data), gitlab_push_urls(data)]
        .into_iter()
        .flatten()
    {
        for url in urls {
            let _ = normalize_repo_url(&url);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = normalize_repo_url(text);
    }
});

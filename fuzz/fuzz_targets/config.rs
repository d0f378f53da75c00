//! The configuration parser (`Config::parse`) on arbitrary text, with relative `jwks_file`s resolved in
//! `fixtures/auth/` (whose `test-jwks.json` the seeds name).
//!
//! `jwks_file` is read as given, so an input naming a device or a `/proc` file (`/dev/zero`, `/dev/stdin`)
//! would make the fuzzer read forever. That is the operator's choice of file, not a parser bug, so such inputs
//! are skipped: only regular files outside `/proc` and `/sys`, or paths that do not exist, are let through.
//!
//! Beyond "no panic", an accepted configuration keeps the promises `Config::parse` makes.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use dry_needling_cds::config::Config;
use jsonwebtoken::AlgorithmFamily;
use libfuzzer_sys::fuzz_target;

static DIR: LazyLock<PathBuf> = LazyLock::new(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/auth"));

/// Whether reading every `jwks_file` the text names ends quickly.
fn files_are_safe(text: &str) -> bool {
    let Ok(table) = text.parse::<toml::Table>() else {
        return true; // not TOML: Config::parse stops before reading any file
    };
    let Some(clients) = table.get("client").and_then(|c| c.as_array()) else {
        return true;
    };
    clients
        .iter()
        .filter_map(|client| client.get("jwks_file")?.as_str())
        .all(|file| {
            let path = DIR.join(file);
            match std::fs::canonicalize(&path) {
                Err(_) => std::fs::symlink_metadata(&path).is_err(),
                Ok(real) => {
                    !real.starts_with("/proc")
                        && !real.starts_with("/sys")
                        && !real.starts_with("/dev")
                        && std::fs::metadata(&real).is_ok_and(|m| m.is_file() && m.len() < 1 << 20)
                }
            }
        })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if !files_are_safe(text) {
        return;
    }
    let Ok(config) = Config::parse(text, &DIR) else {
        return;
    };
    if let Some(url) = &config.public_base_url {
        assert!(!url.ends_with('/'), "public_base_url keeps a trailing slash");
    }
    assert!(config.clients.is_empty() || config.public_base_url.is_some());
    assert!(!config.fetch.deadline.is_zero() && config.fetch.deadline <= Duration::from_secs(60));
    for (i, client) in config.clients.iter().enumerate() {
        assert!(!client.issuer.is_empty() && client.issuer.trim() == client.issuer);
        assert!(!client.algorithms.is_empty());
        assert!(client.algorithms.iter().all(|a| a.family() != AlgorithmFamily::Hmac));
        assert!(!client.keys.keys.is_empty() || client.jwks_url.is_some());
        assert!(config.clients[..i].iter().all(|c| c.issuer != client.issuer));
    }
});

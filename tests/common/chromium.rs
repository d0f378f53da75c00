//! Headless Chromium for the browser tests (`browser.rs`, `sandbox.rs`): Debian's `chromium` driven through
//! `chromedriver` and WebDriver (fantoccini). One copy of the harness, so both tests start the browser alike.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether Chromium and chromedriver are installed. Where they are missing the test says so and is skipped,
/// except in CI (`CI` set), where it fails: `.ci/run` installs both.
pub fn available(test: &str) -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the {test}, but {missing:?} is missing (.ci/run installs Debian's chromium and chromium-driver)"
    );
    eprintln!("{test} NOT RUN: {missing:?} missing (apt-get install chromium chromium-driver)");
    false
}

/// A running chromedriver, killed on drop.
pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver on a free loopback port and waits (up to 20 s) until it listens.
pub async fn start_chromedriver() -> (Driver, u16) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (Driver(child), port)
}

/// A headless Chromium session through the chromedriver on `port`, with a fresh profile of its own named
/// `profile` (a page's localStorage never leaks between sessions), in a window `width` × `height`.
pub async fn browser(port: u16, profile: &str, (width, height): (u32, u32)) -> Client {
    let profile = std::env::temp_dir().join(format!("dn-chromium-{profile}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_string(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::rustls()
        .expect("a TLS configuration")
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session")
}

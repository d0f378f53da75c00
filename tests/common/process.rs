//! The real binary as a child process, for tests of what lives outside the router: sockets, signals, the log,
//! start-up messages, the metrics registry (process-wide, so only a process of its own gives exact counts).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The real binary, serving on a free loopback port with `config`; its stdout (the log) arrives line by line.
pub struct Service {
    pub child: Child,
    pub address: SocketAddr,
    lines: mpsc::Receiver<String>,
    /// Lines read while waiting for the start-up line; [`Service::log`] returns them first.
    early: std::cell::RefCell<Vec<String>>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Service {
    pub fn start(config: &str) -> Service {
        Service::start_with(config, &[])
    }

    /// With more command-line arguments. The address is read from the start-up line's `address=` field.
    pub fn start_with(config: &str, args: &[&str]) -> Service {
        let dir = std::env::temp_dir().join(format!("dn-process-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dry-needling-cds"))
            .args(if args.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .args(["--as-of", "2026-11-23", "--config"])
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            // The card log's SQLite file goes with the test's directory, not into the checkout.
            .env("DRY_NEEDLING_CDS_DATA_DIR", dir.join("data"))
            .stdout(Stdio::piped())
            // Start-up errors (clap's, the configuration's) go to stderr: shown if the address never comes.
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut early = Vec::new();
        let address = loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "the service logs its address within 20 s; it logged:\n{}",
                        early.join("\n")
                    )
                });
            early.push(line.clone());
            // `address=…` in the text log, `"address":"…"` in the JSON one.
            if line.contains("max_connections")
                && let Some((at, marker)) = [" address=", "\"address\":\""]
                    .into_iter()
                    .find_map(|marker| Some((line.find(marker)?, marker)))
            {
                let rest = &line[at + marker.len()..];
                let end = rest.find([' ', '"']).unwrap_or(rest.len());
                break rest[..end].parse().unwrap();
            }
        };
        Service {
            child,
            address,
            lines,
            early: std::cell::RefCell::new(early),
            _dir: TempDir(dir),
        }
    }

    #[allow(unsafe_code)] // kill: see the SAFETY comment
    pub fn terminate(&self) {
        // SAFETY: kill only sends a signal to the child this test started.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0);
    }

    /// Waits for the process to exit; its exit status and how long that took.
    pub fn wait(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits (up to 10 s) for a log line containing `needle`, keeping the lines read for [`Service::log`].
    pub fn wait_for_line(&self, needle: &str) -> String {
        if let Some(line) = self.early.borrow().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no log line with `{needle}` within 10 s"));
            self.early.borrow_mut().push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Every log line printed until now (after the process exited: all of them).
    pub fn log(&self) -> Vec<String> {
        let mut lines = std::mem::take(&mut *self.early.borrow_mut());
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
        lines
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

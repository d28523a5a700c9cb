//! The `topupd` processes a bench starts: the stub provider, the server, one-shot
//! commands, and the peak memory of a command (through GNU time, Debian's `time`).

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

/// The release build of the service, which cargo builds for the benches.
pub const TOPUPD: &str = env!("CARGO_BIN_EXE_topupd");

/// A loopback address nothing listens on yet.
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `address`.
pub async fn wait_for_listener(address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(address).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {address}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `topupd stub-provider` on its own port, adding `latency_ms` to every call; killed
/// when dropped.
pub struct StubProcess {
    pub base_url: String,
    _child: Child,
}

impl StubProcess {
    pub async fn start(latency_ms: u64) -> Self {
        Self::start_with(&serde_json::json!({ "latency_ms": latency_ms })).await
    }

    /// The stub with `faults` (its latency and rate limits among them).
    pub async fn start_with(faults: &serde_json::Value) -> Self {
        Self::spawn(faults, None).await
    }

    /// The stub with `faults`, sending its events to `webhook_url`, signed with the
    /// secret [`super::external_provider`] configures.
    pub async fn start_delivering(faults: &serde_json::Value, webhook_url: &str) -> Self {
        Self::spawn(faults, Some(webhook_url)).await
    }

    async fn spawn(faults: &serde_json::Value, webhook_url: Option<&str>) -> Self {
        let address = free_address();
        let mut command = Command::new(TOPUPD);
        command.args([
            "stub-provider",
            "--listen",
            &address.to_string(),
            "--faults",
            &faults.to_string(),
        ]);
        if let Some(url) = webhook_url {
            command.args([
                "--webhook-url",
                url,
                "--webhook-secret",
                super::WEBHOOK_SECRET,
            ]);
        }
        let child = command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start topupd stub-provider");
        wait_for_listener(address).await;
        Self {
            base_url: format!("http://{address}"),
            _child: child,
        }
    }

    /// When the stub answered 429, as milliseconds after its first API request.
    pub async fn rate_limited_ms(&self) -> Vec<u64> {
        let limited = self.read("/_stub/rate_limited").await;
        serde_json::from_value(limited["after_first_request_ms"].clone()).expect("a list")
    }

    /// One of the stub's own pages, as JSON.
    async fn read(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("{}{path}", self.base_url))
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("read the stub's {path}: {e}"))
            .json()
            .await
            .expect("the stub answers JSON")
    }

    /// How many payments the stub has taken money for: its own charge list, which counts a
    /// payment once however often it was asked for.
    pub async fn charge_count(&self) -> usize {
        self.read("/_stub/charges")
            .await
            .as_array()
            .expect("the stub's charges are a list")
            .len()
    }
}

/// `topupd --config <config> serve --roles api`, listening on `address`; killed when
/// dropped.
pub async fn serve_api(config: &Path, address: SocketAddr) -> Child {
    let child = Command::new(TOPUPD)
        .arg("--config")
        .arg(config)
        .args(["serve", "--roles", "api"])
        .env("TOPUPD_HTTP__LISTEN", address.to_string())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start topupd serve");
    wait_for_listener(address).await;
    child
}

/// Runs `topupd --config <config> <args>` to the end; its standard output.
pub async fn run(config: &Path, args: &[&str]) -> String {
    let output = Command::new(TOPUPD)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .expect("run topupd");
    assert!(
        output.status.success(),
        "topupd {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("topupd prints UTF-8")
}

/// Runs `topupd --config <config> <args>` to the end under GNU time; its standard output
/// and its peak resident memory in bytes.
pub async fn run_measuring_memory(config: &Path, args: &[&str]) -> (String, u64) {
    let report = config.with_extension("rss");
    let output = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(TOPUPD)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .expect("run topupd under /usr/bin/time (Debian package `time`)");
    assert!(
        output.status.success(),
        "topupd {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let kib: u64 = std::fs::read_to_string(&report)
        .expect("GNU time writes its report")
        .trim()
        .parse()
        .expect("GNU time's %M is kibibytes");
    let stdout = String::from_utf8(output.stdout).expect("topupd prints UTF-8");
    (stdout, kib * 1024)
}

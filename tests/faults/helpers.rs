//! Small things the harness (and the SMTP sink it shares with the api suite) needs.

use std::time::Duration;

/// A loopback port nothing listens on (yet).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `done` every `every` until it holds or `limit` passes; whether it held.
pub async fn wait_until(
    limit: Duration,
    every: Duration,
    mut done: impl AsyncFnMut() -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

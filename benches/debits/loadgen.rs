//! The load generator: the debits bench runs its own executable again in this mode, so
//! the load comes from a separate process over loopback. Two modes: `max` keeps a number
//! of requests in flight (closed loop) to find the highest rate; `rate` sends at a fixed
//! rate (open loop) and measures each latency from the moment the request was due, so a
//! slow server cannot hide its queueing by slowing the generator down.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, StatusCode,
    body::Bytes,
    client::conn::http1::{SendRequest, handshake},
    header::{AUTHORIZATION, CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::{net::TcpStream, task::JoinSet, time::Instant};

/// The first argument that selects this mode.
pub const MODE: &str = "loadgen";

/// What to send, and how.
#[derive(Debug, Clone)]
pub struct Spec {
    pub url: String,
    pub key: String,
    /// Requests spread over `acct_bench_00000001..=accounts`.
    pub accounts: u64,
    pub pace: Pace,
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// This many requests in flight, each sent when the previous one is answered.
    InFlight(usize),
    /// Requests per second, on schedule whatever the answers.
    Rate(f64),
}

/// What one run saw.
#[derive(Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// Debits answered 201.
    pub ok: u64,
    pub failed: u64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Spec {
    /// The arguments that follow [`MODE`] on the command line.
    pub fn to_args(&self) -> Vec<String> {
        let (pace, value) = match self.pace {
            Pace::InFlight(n) => ("in-flight", n.to_string()),
            Pace::Rate(r) => ("rate", r.to_string()),
        };
        vec![
            self.url.clone(),
            self.key.clone(),
            self.accounts.to_string(),
            pace.to_owned(),
            value,
            self.duration.as_secs_f64().to_string(),
        ]
    }

    fn from_args(args: &[String]) -> Self {
        let [url, key, accounts, pace, value, seconds] = args else {
            panic!("loadgen URL KEY ACCOUNTS in-flight|rate VALUE SECONDS, got {args:?}");
        };
        let number = |s: &str| -> f64 { s.parse().expect("a number") };
        let pace = match pace.as_str() {
            "in-flight" => Pace::InFlight(number(value) as usize),
            "rate" => Pace::Rate(number(value)),
            other => panic!("unknown pace {other}"),
        };
        Self {
            url: url.clone(),
            key: key.clone(),
            accounts: number(accounts) as u64,
            pace,
            duration: Duration::from_secs_f64(number(seconds)),
        }
    }
}

/// Runs the load described by `args` and prints its [`Outcome`] as one JSON line.
pub fn main(args: &[String]) {
    let spec = Spec::from_args(args);
    // One thread: the generator should take as little of the machine as it can.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the load generator");
    let outcome = runtime.block_on(generate(spec));
    println!(
        "{}",
        serde_json::to_string(&outcome).expect("an outcome serializes")
    );
}

async fn generate(spec: Spec) -> Outcome {
    let authority = spec
        .url
        .strip_prefix("http://")
        .expect("an http:// URL")
        .to_owned();
    let sender = Sender {
        connections: Arc::new(Connections {
            authority,
            idle: Mutex::new(Vec::new()),
        }),
        authorization: format!("Bearer {}", spec.key),
        run: uuid::Uuid::now_v7().simple().to_string(),
        accounts: spec.accounts,
        next: Arc::new(AtomicU64::new(0)),
    };
    let start = Instant::now();
    let mut requests = JoinSet::new();
    match spec.pace {
        Pace::InFlight(in_flight) => {
            let deadline = start + spec.duration;
            for _ in 0..in_flight {
                let sender = sender.clone();
                requests.spawn(async move {
                    let mut answers = Vec::new();
                    while Instant::now() < deadline {
                        answers.push(sender.debit(Instant::now()).await);
                    }
                    answers
                });
            }
        }
        Pace::Rate(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let count = (spec.duration.as_secs_f64() * rate) as u32;
            for i in 0..count {
                let due = start + interval * i;
                tokio::time::sleep_until(due).await;
                let sender = sender.clone();
                requests.spawn(async move { vec![sender.debit(due).await] });
            }
        }
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    while let Some(answers) = requests.join_next().await {
        for (ok, latency) in answers.expect("a request task panicked") {
            match ok {
                true => latencies.push(latency.as_secs_f64() * 1e3),
                false => failed += 1,
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Outcome {
        ok: latencies.len() as u64,
        failed,
        rate: latencies.len() as f64 / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

/// The value below which `share` of the sorted `values` fall (nearest rank).
fn percentile(sorted: &[f64], share: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (share * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Keep-alive connections to the server, each used by one request at a time. The closed
/// loop takes one per request in flight and keeps it; the open loop takes an idle one
/// for each request or opens another, so connections grow with the requests overlapping.
/// HTTP/1.1 straight on hyper, without a client's pool in between: the generator shares
/// the machine with the server, and should take as little of it as it can.
struct Connections {
    authority: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Connections {
    async fn take(&self) -> Option<SendRequest<Full<Bytes>>> {
        let idle = self.idle.lock().expect("connections").pop();
        match idle {
            Some(connection) if !connection.is_closed() => Some(connection),
            _ => self.open().await,
        }
    }

    fn put(&self, connection: SendRequest<Full<Bytes>>) {
        self.idle.lock().expect("connections").push(connection);
    }

    async fn open(&self) -> Option<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.authority).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let (sender, connection) = handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(connection);
        Some(sender)
    }
}

#[derive(Clone)]
struct Sender {
    connections: Arc<Connections>,
    authorization: String,
    /// Makes request ids unique across runs on the same database.
    run: String,
    accounts: u64,
    next: Arc<AtomicU64>,
}

impl Sender {
    /// One debit of a minute of dubbing (10 credits); whether it was debited, and the
    /// time from `due` to the answer.
    async fn debit(&self, due: Instant) -> (bool, Duration) {
        let ok = match self.connections.take().await {
            Some(mut connection) => {
                let ok = self.send(&mut connection).await;
                if ok.is_some() {
                    self.connections.put(connection);
                }
                ok == Some(true)
            }
            None => false,
        };
        (ok, due.elapsed())
    }

    /// Whether the debit was answered 201; `None` if the connection failed.
    async fn send(&self, connection: &mut SendRequest<Full<Bytes>>) -> Option<bool> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let account = super::common::seed::account_id((n % self.accounts + 1) as i64);
        let body = format!(
            r#"{{"account_id":"{account}","request_id":"{}-{n}","usage":{{"service":"dubbing","duration_seconds":60}}}}"#,
            self.run
        );
        let request = Request::post("/v1/usage")
            .header(HOST, &self.connections.authority)
            .header(AUTHORIZATION, &self.authorization)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a well-formed request");
        connection.ready().await.ok()?;
        let response = connection.send_request(request).await.ok()?;
        let created = response.status() == StatusCode::CREATED;
        // The answer is read to the end, as a client would.
        response.into_body().collect().await.ok()?;
        Some(created)
    }
}

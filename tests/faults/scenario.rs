//! The scenarios of the issue, at short (CI) and full scale.

use crate::{cluster::Backend, options::Mode};

/// One drill: what runs, what goes wrong, and how much of it.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub backend: Backend,
    /// `topupd serve` processes sharing the database.
    pub replicas: usize,
    /// Accounts that become due, each for one automatic top-up.
    pub topups: usize,
    /// `kill -9`s, spread over the top-ups (and over the replicas).
    pub kills: usize,
    /// Share of provider POSTs that fail: 5xx before or after recording, or no answer
    /// before the client gives up.
    pub provider_failure_rate: f64,
    /// Share of webhooks the provider never delivers.
    pub webhook_drop_rate: f64,
    /// SMTP refuses connections until the top-ups are over.
    pub smtp_outage: bool,
}

impl Scenario {
    /// Every scenario the backends at hand allow. PostgreSQL ones need
    /// `TOPUPD_TEST_POSTGRES_URL`, like the api suite.
    pub fn catalogue(mode: Mode) -> Vec<Scenario> {
        let full = mode == Mode::Full;
        let scale = |short: usize, full_size: usize| if full { full_size } else { short };
        let mut backends = vec![Backend::Sqlite];
        if Backend::postgres_available() {
            backends.push(Backend::Postgres);
        }
        let base = |kind: &str, backend: Backend| Scenario {
            name: format!("{kind}-{}", backend.name()),
            backend,
            replicas: 1,
            topups: 0,
            kills: 0,
            provider_failure_rate: 0.0,
            webhook_drop_rate: 0.0,
            smtp_outage: false,
        };
        let mut scenarios = Vec::new();
        for &backend in &backends {
            scenarios.push(Scenario {
                topups: scale(40, 1_000),
                kills: scale(8, 200),
                ..base("kill", backend)
            });
        }
        if backends.contains(&Backend::Postgres) {
            scenarios.push(Scenario {
                replicas: 3,
                topups: scale(50, 1_000),
                kills: scale(10, 200),
                ..base("replicas", Backend::Postgres)
            });
        }
        for &backend in &backends {
            scenarios.push(Scenario {
                topups: scale(120, 5_000),
                provider_failure_rate: 0.2,
                webhook_drop_rate: 0.3,
                ..base("provider-faults", backend)
            });
        }
        for &backend in &backends {
            scenarios.push(Scenario {
                topups: scale(30, 500),
                kills: scale(3, 20),
                smtp_outage: true,
                ..base("smtp-outage", backend)
            });
        }
        scenarios
    }
}

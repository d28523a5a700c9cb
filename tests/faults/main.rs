//! The fault harness: real `topupd serve` processes, a separate stub provider and an SMTP
//! sink, put through `kill -9`, provider faults and an SMTP outage while they top up
//! accounts, then checked against the provider's own list of charges. See
//! docs/reliability.md for the scenarios, the commands and the figures.
//!
//! `cargo test` runs the short mode; `cargo test --release --test faults -- --full` the
//! full one. `--seed N` replays a run, `--scenario NAME` (or a plain filter, as libtest
//! takes) picks scenarios. Other libtest flags are accepted and ignored, so a filter
//! meant for another test binary simply runs no scenario here.

mod checks;
mod cluster;
mod customers;
mod drill;
mod helpers;
mod options;
#[path = "../api/postgres_url.rs"]
mod postgres_url;
mod reversals;
mod scenario;
#[allow(dead_code)] // shared with the api suite, which uses all of it
#[path = "../api/smtp.rs"]
mod smtp;
mod webhook_host;

use std::{process::ExitCode, time::Instant};

use options::Options;
use scenario::Scenario;

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::from_args(std::env::args().skip(1));
    let scenarios: Vec<Scenario> = Scenario::catalogue(options.mode)
        .into_iter()
        .filter(|s| options.selects(&s.name))
        .collect();
    if options.list {
        for scenario in &scenarios {
            println!("{}: test", scenario.name);
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "fault harness: {} mode, seed {}, {} scenario(s)",
        options.mode.name(),
        options.seed,
        scenarios.len()
    );
    let started = Instant::now();
    let mut failed = Vec::new();
    for scenario in &scenarios {
        let report = drill::run(scenario, options.seed).await;
        println!("{report}");
        if !report.passed() {
            failed.push(scenario.name.clone());
        }
    }
    let kills: usize = scenarios.iter().map(|s| s.kills).sum();
    let topups: usize = scenarios.iter().map(|s| s.topups).sum();
    println!(
        "fault harness: {} scenario(s), {topups} top-ups, {kills} kills in {:.0} s",
        scenarios.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        println!("fault harness: ok");
        ExitCode::SUCCESS
    } else {
        println!(
            "fault harness: FAILED {} (replay one: cargo test --test faults --{} --seed {} --scenario NAME)",
            failed.join(", "),
            options.mode.flag(),
            options.seed
        );
        ExitCode::FAILURE
    }
}

//! The billing page in a real browser: headless Chromium over WebDriver, axe-core on every
//! page, the receipt read back with pdftotext. See docs/billing-page.md.
//!
//! Without a browser on the machine the suite says so and passes, unless
//! TOPUPD_TEST_BROWSER=required (as in CI), when a missing browser fails it.
//! `-- --screenshots DIR` keeps a PNG of each page checked (`deploy/../docs` uses it).
//! A plain argument picks journeys by name; other libtest flags are ignored.

mod browser;
mod console;
#[allow(dead_code)] // shared with the api suite, which uses all of it
#[path = "../api/helpers.rs"]
mod helpers;
mod journeys;
#[path = "../api/postgres_url.rs"]
mod postgres_url;
#[allow(dead_code)]
#[path = "../api/smtp.rs"]
mod smtp;

use std::{future::Future, path::PathBuf, pin::Pin, process::ExitCode, sync::Arc, time::Instant};

use browser::{Driver, Tools};
use journeys::Setting;

type Journey = fn(Setting) -> Pin<Box<dyn Future<Output = ()>>>;

const JOURNEYS: &[(&str, Journey)] = &[
    ("buying_and_budgeting", |s| {
        Box::pin(journeys::buying_and_budgeting(s))
    }),
    ("completing_a_declined_top_up_from_the_email", |s| {
        Box::pin(journeys::completing_a_declined_top_up_from_the_email(s))
    }),
    ("confirming_an_automatic_top_up_from_the_email", |s| {
        Box::pin(journeys::confirming_an_automatic_top_up_from_the_email(s))
    }),
    ("stale_links_and_other_accounts", |s| {
        Box::pin(journeys::stale_links_and_other_accounts(s))
    }),
    ("support_resumes_a_paused_account", |s| {
        Box::pin(console::support_resumes_a_paused_account(s))
    }),
];

#[tokio::main]
async fn main() -> ExitCode {
    let mut shots = None;
    let mut filters = Vec::new();
    let mut list = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--screenshots" => shots = args.next().map(PathBuf::from),
            "--list" => list = true,
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_owned()),
        }
    }
    let chosen: Vec<_> = JOURNEYS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if list {
        for (name, _) in &chosen {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    if chosen.is_empty() {
        return ExitCode::SUCCESS;
    }
    let tools = match Tools::find() {
        Ok(tools) => tools,
        Err(missing) => return without_a_browser(&missing),
    };
    if let Some(folder) = &shots {
        std::fs::create_dir_all(folder).expect("create the screenshot folder");
    }
    let tools = Arc::new(tools);
    let driver = Arc::new(Driver::start(&tools).await);
    let setting = Setting {
        driver,
        tools,
        shots,
    };
    let mut failed = Vec::new();
    for (name, journey) in chosen {
        let started = Instant::now();
        // A task of its own, so that a failed assertion fails this journey only.
        let run = journey(setting.clone());
        let outcome = tokio::task::LocalSet::new()
            .run_until(async move { tokio::task::spawn_local(run).await })
            .await;
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        println!(
            "browser journey {name} ... {verdict} ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("browser journeys failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

/// Says loudly that nothing ran; fails when the browser is required.
fn without_a_browser(missing: &[String]) -> ExitCode {
    let required = std::env::var("TOPUPD_TEST_BROWSER").is_ok_and(|v| v == "required");
    let line = "=".repeat(78);
    println!("{line}");
    println!("BROWSER TESTS SKIPPED: the billing page's journeys did not run. Missing:");
    for what in missing {
        println!("  - {what}");
    }
    println!("Install them and run: cargo test --test browser");
    println!("(see docs/billing-page.md; CI sets TOPUPD_TEST_BROWSER=required)");
    println!("{line}");
    if required {
        println!("TOPUPD_TEST_BROWSER=required: failing");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

//! What a real `topupd serve` exposes follows Prometheus' conventions, and the alerting
//! rules of `deploy/alerts.yaml`, fed a scrape of it by promtool, fire as documented.
//! promtool comes from Debian's `prometheus` package; without it these tests say so and
//! pass, unless `CI` is set.

use std::{collections::BTreeMap, process::Command, time::Duration};

use serde_json::{Value, json};

use crate::{
    helpers::{Backend, backends},
    ops::Server,
};

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/alerts.yaml");
/// Midnight on the first of January: no scan starts while a test runs.
const NEVER: &str = "0 0 0 1 1 *";
/// The label Prometheus gives every series of a target.
const INSTANCE: &str = "replica";

/// One sample of a scrape.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    /// The series in PromQL's notation, with the target's `instance` label.
    fn series(&self) -> String {
        let labels: Vec<String> = std::iter::once(("instance", INSTANCE))
            .chain(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// A scrape: the `# HELP` and `# TYPE` of each family, and the samples.
#[derive(Debug, Default)]
struct Scrape {
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut scrape = Self::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let (name, text) = help.split_once(' ').expect("HELP has a text");
                scrape.help.insert(name.to_owned(), text.to_owned());
            } else if let Some(kind) = line.strip_prefix("# TYPE ") {
                let (name, kind) = kind.split_once(' ').expect("TYPE has a type");
                scrape.types.insert(name.to_owned(), kind.to_owned());
            } else {
                assert!(!line.starts_with('#'), "unexpected comment: {line}");
                scrape.samples.push(parse_sample(line));
            }
        }
        scrape
    }

    /// The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count`
    /// belong to the histogram.
    fn family<'a>(&self, sample: &'a str) -> &'a str {
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find(|base| {
                self.types
                    .get(*base)
                    .is_some_and(|kind| kind == "histogram" || kind == "summary")
            })
            .unwrap_or(sample)
    }

    fn value(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels.is_empty())
            .map(|s| s.value)
    }
}

/// `name{label="value",...} value`; label values are quoted and may hold `{`, `}` and
/// `,` (route templates do), never an escaped quote here.
fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
    let value = value
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {line}"));
    let Some((name, rest)) = series.split_once('{') else {
        return Sample {
            name: series.to_owned(),
            labels: vec![],
            value,
        };
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}').expect("labels close");
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let end = after.find('"').expect("the value's closing quote");
        labels.push((key.to_owned(), after[..end].to_owned()));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Whether promtool can run here: absent, the test is skipped loudly, or fails in CI.
fn promtool_present() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have promtool (Debian's prometheus package)"
        );
        eprintln!("NOT RUN: promtool is not installed (apt-get install prometheus)");
    }
    found
}

/// Every alert's name in the rules file.
fn alert_names() -> Vec<String> {
    std::fs::read_to_string(RULES)
        .expect("the rules file")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

/// An alert expected to fire for the replica: its name, severity and summary.
type Firing = (&'static str, &'static str, String);

/// Runs promtool's unit test of the rules over `series` (PromQL series and promtool's
/// value notation, one sample a minute) and checks `expected`: at each time, the alerts
/// firing for the replica; every other alert of the file must be quiet then.
fn assert_alerts(series: &[(String, String)], expected: &[(&str, Vec<Firing>)]) {
    let names = alert_names();
    assert!(
        names.len() >= 5,
        "the rules file names its alerts: {names:?}"
    );
    let mut tests = Vec::new();
    for (at, firing) in expected {
        for name in &names {
            let exp: Vec<Value> = firing
                .iter()
                .filter(|(alert, ..)| alert == name)
                .map(|(_, severity, summary)| {
                    json!({
                        "exp_labels": { "instance": INSTANCE, "severity": severity },
                        "exp_annotations": { "summary": summary },
                    })
                })
                .collect();
            tests.push(json!({ "eval_time": at, "alertname": name, "exp_alerts": exp }));
        }
    }
    let input: Vec<Value> = series
        .iter()
        .map(|(series, values)| json!({ "series": series, "values": values }))
        .collect();
    let file = json!({
        "rule_files": [RULES],
        "evaluation_interval": "1m",
        "tests": [{ "interval": "1m", "input_series": input, "alert_rule_test": tests }],
    });
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("scrape.test.yaml");
    // JSON is YAML.
    std::fs::write(&path, serde_json::to_vec_pretty(&file).expect("JSON")).expect("write");
    let ran = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .expect("promtool runs");
    assert!(
        ran.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
}

/// A scrape, once the database's state has been sampled into its gauges.
async fn sampled_scrape(server: &Server) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let scrape = Scrape::parse(&server.scrape().await);
        if scrape
            .samples
            .iter()
            .any(|s| s.name == "topupd_paused_accounts")
        {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never sampled: {scrape:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The no-scan alert, firing for the replica.
fn no_scan() -> Firing {
    (
        "TopupdNoScan",
        "critical",
        format!("{INSTANCE}: no complete auto top-up scan in two hours"),
    )
}

#[tokio::test]
async fn every_family_has_help_and_type_units_in_its_name_and_label_values_without_spaces() {
    for backend in backends() {
        let server = Server::start(backend, "api,scheduler,notices", NEVER).await;
        let scrape = sampled_scrape(&server).await;
        let mut families: Vec<&str> = scrape
            .samples
            .iter()
            .map(|s| scrape.family(&s.name))
            .collect();
        families.dedup();
        for family in &families {
            let kind = scrape.types.get(*family);
            assert!(kind.is_some(), "{family} has no TYPE");
            assert!(
                scrape.help.get(*family).is_some_and(|h| !h.is_empty()),
                "{family} has no HELP"
            );
            match kind.map(String::as_str) {
                Some("counter") => assert!(family.ends_with("_total"), "counter {family}"),
                Some("histogram") => assert!(
                    family.ends_with("_seconds") || family.ends_with("_writes"),
                    "histogram {family} names its unit"
                ),
                _ => assert!(!family.ends_with("_total"), "{family} is not a counter"),
            }
        }
        for sample in &scrape.samples {
            for (key, value) in &sample.labels {
                assert!(
                    !value.contains(char::is_whitespace) && !value.is_empty(),
                    "{}: label {key}={value:?}",
                    sample.name
                );
            }
        }
        // Counters a replica has not used yet are there, at 0, for every label value.
        for name in [
            "topupd_scans_started_total",
            "topupd_scans_finished_total",
            "topupd_scans_cut_short_total",
            "topupd_scans_failed_total",
            "topupd_scans_overran_total",
            "topupd_scan_claims_total",
            "topupd_webhook_events_dead_total",
        ] {
            assert_eq!(scrape.value(name), Some(0.0), "{name}");
        }
        // The series of a family with this label.
        let count = |name: &str, label: &str| {
            scrape
                .samples
                .iter()
                .filter(|s| s.name == name)
                .filter_map(|s| s.labels.iter().find(|(k, _)| k == label))
                .count()
        };
        assert_eq!(count("topupd_topup_attempts_total", "outcome"), 3 * 5);
        assert_eq!(count("topupd_auth_failures_total", "reason"), 4);
        assert_eq!(
            count("topupd_notices_queued_total", "kind"),
            topupd::domain::notice::NoticeKind::ALL.len()
        );
        assert_eq!(count("topupd_provider_rate_limited_total", "endpoint"), 17);
        assert_eq!(count("topupd_provider_requests_total", "outcome"), 17 * 7);
        assert_eq!(
            count("topupd_paused_accounts", "reason"),
            topupd::domain::auto_topup::PauseReason::ALL.len()
        );
        assert_eq!(count("topupd_open_attempts", "age"), 4);
        assert_eq!(count("topupd_notices", "state"), 4);
        assert_eq!(count("topupd_webhook_events", "state"), 3);
        let build = scrape
            .samples
            .iter()
            .find(|s| s.name == "topupd_build_info")
            .expect("build info");
        assert_eq!(build.value, 1.0);
        assert_eq!(
            build.labels,
            vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn the_no_scan_alert_fires_on_a_replica_that_never_scanned_and_nothing_else_does() {
    if !promtool_present() {
        return;
    }
    for backend in backends() {
        let server = Server::start(backend, "api,scheduler,notices", NEVER).await;
        let scrape = sampled_scrape(&server).await;
        server.stop().await;
        // The replica stays as scraped for three hours.
        let series: Vec<(String, String)> = scrape
            .samples
            .iter()
            .map(|s| (s.series(), format!("{}x180", s.value)))
            .collect();
        assert_alerts(
            &series,
            &[
                // Up for less than two hours: too early to say.
                ("1h", vec![]),
                ("2h30m", vec![no_scan()]),
            ],
        );
    }
}

#[tokio::test]
async fn the_no_scan_alert_stays_quiet_while_a_replica_scans_and_fires_once_it_stops() {
    if !promtool_present() {
        return;
    }
    let backend: Backend = backends()[0];
    let server = Server::start(backend, "api,scheduler,notices", "* * * * * *").await;
    let before = sampled_scrape(&server).await;
    let finished = |scrape: &Scrape| scrape.value("topupd_scans_finished_total");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let scrape = Scrape::parse(&server.scrape().await);
        if finished(&scrape) > finished(&before) {
            break scrape;
        }
        assert!(tokio::time::Instant::now() < deadline, "no scan finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    server.stop().await;
    // The first scrape's values for an hour, then the second's for three: the replica
    // scanned at the start of its second hour, and never again.
    let mut series: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for sample in &before.samples {
        series.entry(sample.series()).or_default().0 = Some(sample.value);
    }
    for sample in &after.samples {
        series.entry(sample.series()).or_default().1 = Some(sample.value);
    }
    let series: Vec<(String, String)> = series
        .into_iter()
        .map(|(name, (first, second))| {
            // `vxN` is N + 1 samples of v; `_xN` is N missing ones.
            let samples = |value: Option<f64>, n: u32| {
                value.map_or_else(|| format!("_x{n}"), |v| format!("{v}x{}", n - 1))
            };
            (
                name,
                format!("{} {}", samples(first, 60), samples(second, 181)),
            )
        })
        .collect();
    assert_alerts(&series, &[("2h30m", vec![]), ("3h30m", vec![no_scan()])]);
}

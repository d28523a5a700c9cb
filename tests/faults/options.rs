//! The harness's command line. It shares `cargo test`'s, so libtest's own flags are
//! accepted and ignored, and a plain argument is a name filter as libtest takes it.

use std::time::{SystemTime, UNIX_EPOCH};

/// How big the drills are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A few dozen kills in all, for every CI run.
    Short,
    /// The figures published in docs/reliability.md.
    Full,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Short => "short",
            Mode::Full => "full",
        }
    }

    /// The flag that selects this mode, with its leading space.
    pub fn flag(self) -> &'static str {
        match self {
            Mode::Short => "",
            Mode::Full => " --full",
        }
    }
}

#[derive(Debug)]
pub struct Options {
    pub mode: Mode,
    pub seed: u64,
    /// `--list`: name the scenarios and run none.
    pub list: bool,
    /// Exact scenario names (`--scenario`) and name filters (plain arguments).
    exact: Vec<String>,
    filters: Vec<String>,
    skips: Vec<String>,
}

/// libtest flags followed by a value, which must not be taken for a filter.
const LIBTEST_VALUED: [&str; 7] = [
    "--test-threads",
    "--skip",
    "--format",
    "--color",
    "--logfile",
    "--shuffle-seed",
    "-Z",
];

impl Options {
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Self {
        let mut options = Options {
            mode: Mode::Short,
            seed: time_seed(),
            list: false,
            exact: Vec::new(),
            filters: Vec::new(),
            skips: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg.clone(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next()).unwrap_or_default();
            match flag.as_str() {
                "--full" => options.mode = Mode::Full,
                "--list" => options.list = true,
                "--seed" => {
                    let seed = value();
                    options.seed = seed
                        .parse()
                        .unwrap_or_else(|_| panic!("--seed takes a number, not {seed:?}"));
                }
                "--scenario" => options.exact.push(value()),
                "--skip" => options.skips.push(value()),
                valued if LIBTEST_VALUED.contains(&valued) => {
                    value();
                }
                other if other.starts_with('-') => {}
                filter => options.filters.push(filter.to_owned()),
            }
        }
        options
    }

    /// Whether the scenario named `name` runs.
    pub fn selects(&self, name: &str) -> bool {
        (self.exact.is_empty() || self.exact.iter().any(|e| e == name))
            && (self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str())))
            && !self.skips.iter().any(|s| name.contains(s.as_str()))
    }
}

fn time_seed() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(now.as_millis()).expect("milliseconds since 1970 fit in 64 bits")
}

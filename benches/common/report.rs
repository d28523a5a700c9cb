//! Repeated measurements (median and spread) and the table each bench prints: the
//! figure, the baseline measured in the same run, their ratio, the goal and the verdict.

/// Repeated measurements of one figure.
#[derive(Debug, Clone)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn new(mut values: Vec<f64>) -> Self {
        assert!(!values.is_empty(), "at least one measurement");
        values.sort_by(f64::total_cmp);
        Self(values)
    }

    pub fn median(&self) -> f64 {
        let n = self.0.len();
        match n % 2 {
            1 => self.0[n / 2],
            _ => (self.0[n / 2 - 1] + self.0[n / 2]) / 2.0,
        }
    }

    /// "median (min–max, n runs)" with `unit`, or "value (1 run)".
    pub fn describe(&self, unit: &str) -> String {
        let (min, max) = (self.0[0], self.0[self.0.len() - 1]);
        if self.0.len() == 1 {
            return format!("{} {unit} (1 run)", round(min));
        }
        format!(
            "{} {unit} ({}–{}, {} runs)",
            round(self.median()),
            round(min),
            round(max),
            self.0.len()
        )
    }
}

/// Three significant digits at most, enough for noisy timings.
pub fn round(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        v if v >= 1.0 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

/// One line of a result table.
pub struct Line {
    pub figure: String,
    pub measured: String,
    pub baseline: String,
    pub ratio: String,
    pub goal: String,
    /// `None` for figures that are reported without a goal.
    pub pass: Option<bool>,
}

impl Line {
    /// A figure reported alone: no baseline and no goal.
    pub fn alone(figure: impl Into<String>, measured: String) -> Self {
        Self {
            figure: figure.into(),
            measured,
            baseline: "-".into(),
            ratio: "-".into(),
            goal: "-".into(),
            pass: None,
        }
    }
}

/// A result table, printed as Markdown so it can go into docs/benchmarks.md as is.
pub struct Table {
    title: String,
    lines: Vec<Line>,
}

impl Table {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            lines: Vec::new(),
        }
    }

    pub fn line(&mut self, line: Line) {
        self.lines.push(line);
    }

    pub fn print(&self) {
        println!("\n### {}\n", self.title);
        println!("| figure | measured | baseline (same run) | ratio | goal | verdict |");
        println!("|---|---|---|---|---|---|");
        for l in &self.lines {
            let verdict = match l.pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "-",
            };
            println!(
                "| {} | {} | {} | {} | {} | {verdict} |",
                l.figure, l.measured, l.baseline, l.ratio, l.goal
            );
        }
        println!();
    }
}

//! The scan's cron schedule: six fields, seconds first, as `auto_topup.scan_schedule`
//! holds it; empty for no scheduled scans.

use croner::{Cron, parser::CronParser, parser::Seconds};

use crate::clock::Millis;

/// The schedule, or why it is not one; `None` for the empty schedule.
pub fn parse(schedule: &str) -> Result<Option<Cron>, String> {
    // Only the empty schedule means none, as `serve` reads it.
    if schedule.is_empty() {
        return Ok(None);
    }
    if schedule.split_whitespace().count() != 6 {
        return Err("must have six fields, seconds first".to_owned());
    }
    // The rules tokio-cron-scheduler parses with, so the next scan named is one it runs: a
    // day of the month and a weekday must both match.
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The first scheduled scan at or after `after`; `None` with no schedule.
pub fn next_scan(schedule: &str, after: Millis) -> Option<Millis> {
    let cron = parse(schedule).ok()??;
    // Ticks are whole seconds: a moment inside a second is only reached by the next one.
    let after = chrono::DateTime::from_timestamp_millis(after.checked_add(999)? / 1000 * 1000)?;
    cron.find_next_occurrence(&after, true)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_scan_follows_the_schedule() {
        // 2026-11-21T10:31:00Z → the half hour after; a tick itself is its own next scan.
        let after = 1_795_257_060_000;
        assert_eq!(next_scan("0 */30 * * * *", after), Some(1_795_258_800_000));
        assert_eq!(
            next_scan("0 */30 * * * *", 1_795_258_800_000),
            Some(1_795_258_800_000)
        );
        assert_eq!(next_scan("", after), None);
        assert_eq!(
            next_scan("0 */30 * * * *", 1_795_258_800_001),
            Some(1_795_260_600_000),
            "a millisecond after a tick is after it"
        );
        // 2026-11-21 is a Saturday: the first Monday among the 1st to the 7th is 7 Dec.
        assert_eq!(
            next_scan("0 0 3 1-7 * MON", after),
            Some(1_796_612_400_000),
            "a day of the month and a weekday both hold, as the scheduler reads them"
        );
    }

    #[test]
    fn schedules_that_cannot_run_are_refused() {
        assert!(parse("0 */30 * * * *").is_ok_and(|c| c.is_some()));
        assert!(parse("").is_ok_and(|c| c.is_none()));
        for bad in [
            "*/30 * * * *",
            "0 */30 * * * * *",
            "0 61 * * * *",
            "0 */30 * * * blursday",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

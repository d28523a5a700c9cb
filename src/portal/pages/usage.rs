//! Usage for budgeting: credits used per day and per service over a chosen period, as a
//! chart and a table, with a CSV export of the same rows; and the ledger, newest first.

use std::collections::BTreeSet;

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{Duration, NaiveDate};
use minijinja::context;
use serde::Deserialize;

use super::{
    credits, form_outcome,
    history::{Cursor, page_request},
    when,
};
use crate::{
    clock::Millis,
    db::portal::UsageDay,
    domain::{credits::Millicredits, validation::FieldErrors},
    http::state::AppState,
    portal::{
        chart::{self, Bar},
        form::PageQuery,
        render::PageResult,
        session::Customer,
    },
};

/// The longest period shown at once.
const MAX_DAYS: i64 = 366;
/// The period shown when none is asked for.
const DEFAULT_DAYS: i64 = 30;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Default, Deserialize)]
pub struct Period {
    from: Option<String>,
    to: Option<String>,
}

/// A period of whole days (UTC), both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Days {
    first: NaiveDate,
    last: NaiveDate,
}

impl Days {
    fn start_ms(self) -> Millis {
        day_ms(self.first)
    }

    fn end_ms(self) -> Millis {
        day_ms(self.last) + DAY_MS
    }

    fn iter(self) -> impl Iterator<Item = NaiveDate> {
        self.first.iter_days().take_while(move |d| *d <= self.last)
    }
}

fn day_ms(day: NaiveDate) -> Millis {
    day.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp_millis())
}

/// The period asked for, or the last 30 days up to `today`; the errors name the field.
fn period(asked: &Period, today: NaiveDate) -> Result<Days, FieldErrors> {
    let mut errors = FieldErrors::new();
    let mut date = |field: &str, text: &Option<String>, default: NaiveDate| match text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        None => Some(default),
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| errors.add(field, "must be a date such as 2026-11-01"))
            .ok(),
    };
    let last = date("to", &asked.to, today);
    let first = date(
        "from",
        &asked.from,
        today - Duration::days(DEFAULT_DAYS - 1),
    );
    if let (Some(first), Some(last)) = (first, last) {
        if first > last {
            errors.add("from", "must not be after the end of the period");
        } else if (last - first).num_days() >= MAX_DAYS {
            errors.add("from", format!("the period can be at most {MAX_DAYS} days"));
        }
        return errors.into_result(Days { first, last });
    }
    Err(errors)
}

fn today(state: &AppState) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(state.clock.now_ms())
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

fn day_of(day: i64) -> NaiveDate {
    NaiveDate::default() + Duration::days(day)
}

pub async fn page(
    State(state): State<AppState>,
    customer: Customer,
    PageQuery(asked): PageQuery<Period>,
) -> PageResult<Response> {
    let frame = customer.frame("usage", "Usage");
    let days = match period(&asked, today(&state)) {
        Ok(days) => days,
        Err(errors) => {
            let (status, errors) = form_outcome(&errors);
            let ctx = context! {
                ..frame,
                ..context! { from => asked.from, to => asked.to, errors },
            };
            return Ok(state.pages.render(status, "usage.html", ctx));
        }
    };
    let rows = state
        .db
        .usage_by_day(customer.account_id(), days.start_ms(), days.end_ms())
        .await?;
    let services: Vec<String> = rows
        .iter()
        .map(|r| r.service.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let bars: Vec<Bar> = days
        .iter()
        .map(|day| Bar {
            label: day.format("%-d %b").to_string(),
            values: services
                .iter()
                .map(|service| {
                    rows.iter()
                        .filter(|r| day_of(r.day) == day && &r.service == service)
                        .map(|r| r.used as f64 / 1000.0)
                        .sum()
                })
                .collect(),
        })
        .collect();
    let total: i64 = rows.iter().map(|r| r.used).sum();
    let table: Vec<_> = rows
        .iter()
        .map(|r| {
            context! {
                date => day_of(r.day).to_string(),
                service => r.service.clone(),
                requests => r.requests,
                used => Millicredits(r.used).to_display(),
                refunded => Millicredits(r.refunded).to_display(),
            }
        })
        .collect();
    let legend: Vec<_> = services
        .iter()
        .enumerate()
        .map(|(i, name)| context! { name, colour => chart::palette(i) })
        .collect();
    let (from, to) = (days.first.to_string(), days.last.to_string());
    let title = format!("Credits used per day from {from} to {to}, by service");
    let ctx = context! {
        ..frame,
        ..context! {
            chart => (!rows.is_empty()).then(|| chart::svg(&title, &services, &bars)),
            legend,
            table,
            total => credits(Millicredits(total)),
            errors => form_outcome(&FieldErrors::new()).1,
            csv_query => serde_urlencoded::to_string([("from", &from), ("to", &to)]).unwrap_or_default(),
            from,
            to,
        },
    };
    Ok(state.pages.render(StatusCode::OK, "usage.html", ctx))
}

/// The rows of the usage table as CSV, for a spreadsheet.
pub async fn csv(
    State(state): State<AppState>,
    customer: Customer,
    PageQuery(asked): PageQuery<Period>,
) -> PageResult<Response> {
    let days = period(&asked, today(&state))
        .map_err(|errors| crate::portal::render::PageError::BadRequest(errors.to_string()))?;
    let rows = state
        .db
        .usage_by_day(customer.account_id(), days.start_ms(), days.end_ms())
        .await?;
    let disposition = format!(
        "attachment; filename=\"usage-{}-to-{}.csv\"",
        days.first, days.last
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        usage_csv(&rows),
    )
        .into_response())
}

/// `date,service,requests,credits_used,credits_refunded`, one row per day and service.
fn usage_csv(rows: &[UsageDay]) -> String {
    let mut out = String::from("date,service,requests,credits_used,credits_refunded\n");
    for r in rows {
        let fields = [
            day_of(r.day).to_string(),
            r.service.clone(),
            r.requests.to_string(),
            Millicredits(r.used).to_credits().normalize().to_string(),
            Millicredits(r.refunded)
                .to_credits()
                .normalize()
                .to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// A field quoted when it holds a separator, a quote or a line break.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

pub async fn ledger(
    State(state): State<AppState>,
    customer: Customer,
    PageQuery(cursor): PageQuery<Cursor>,
) -> PageResult<Response> {
    let page = state
        .db
        .ledger(customer.account_id(), page_request(&cursor))
        .await?;
    let entries: Vec<_> = page
        .items
        .iter()
        .map(|e| {
            context! {
                date => when(e.created_at),
                description => e.description.clone(),
                amount => e.amount.to_display(),
                credit => e.amount.0 > 0,
                balance => e.balance_after.to_display(),
            }
        })
        .collect();
    let ctx = context! {
        ..customer.frame("ledger", "Ledger"),
        ..context! { entries, next_before => page.next_before },
    };
    Ok(state.pages.render(StatusCode::OK, "ledger.html", ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("a date")
    }

    fn asked(from: &str, to: &str) -> Period {
        Period {
            from: Some(from.into()),
            to: Some(to.into()),
        }
    }

    #[test]
    fn the_period_defaults_to_the_last_30_days() {
        let days = period(&Period::default(), date("2026-11-30")).expect("valid");
        assert_eq!(
            (days.first, days.last),
            (date("2026-11-01"), date("2026-11-30"))
        );
        assert_eq!(days.iter().count(), 30);
        assert_eq!(days.end_ms() - days.start_ms(), 30 * DAY_MS);
    }

    #[test]
    fn bad_periods_name_their_field() {
        let today = date("2026-11-30");
        let fields = |p: Period| -> Vec<String> {
            period(&p, today)
                .expect_err("invalid")
                .iter()
                .map(|(f, _)| f.to_owned())
                .collect()
        };
        assert_eq!(fields(asked("2026-13-01", "2026-11-02")), ["from"]);
        assert_eq!(fields(asked("2026-11-01", "soon")), ["to"]);
        assert_eq!(fields(asked("2026-11-05", "2026-11-01")), ["from"]);
        assert_eq!(fields(asked("2025-01-01", "2026-11-01")), ["from"]);
        assert!(period(&asked("2025-11-01", "2026-10-31"), today).is_ok());
    }

    #[test]
    fn csv_rows_quote_what_needs_it() {
        let rows = [UsageDay {
            day: 20_423,
            service: "speech, \"fast\"".into(),
            requests: 3,
            used: 12_500,
            refunded: 0,
        }];
        assert_eq!(
            usage_csv(&rows),
            "date,service,requests,credits_used,credits_refunded\n\
             2025-12-01,\"speech, \"\"fast\"\"\",3,12.5,0\n"
        );
    }
}

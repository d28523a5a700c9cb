//! What the operator commands print: aligned tables for people, JSON for scripts. The
//! commands themselves are wired in `main.rs`.

use serde_json::{Value, json};

use crate::{
    clock::rfc3339,
    db::keys::StoredKey,
    domain::{account::Account, attempt::AttemptState, auto_topup::AutoTopupState},
    topups::{auto::TriedNow, provider_check::ProviderCheck},
};

/// Rows under headers, each column as wide as its widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

fn print(json: bool, as_json: Value, headers: &[&str], rows: &[Vec<String>]) -> String {
    if json {
        as_json.to_string()
    } else {
        table(headers, rows)
    }
}

pub fn keys(keys: &[StoredKey], json: bool) -> String {
    let as_json = Value::Array(
        keys.iter()
            .map(|k| {
                json!({
                    "id": k.id, "role": k.role, "account_id": k.account_id, "label": k.label,
                    "created_at": rfc3339(k.created_at),
                    "revoked_at": k.revoked_at.map(rfc3339),
                })
            })
            .collect(),
    );
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.role.clone(),
                k.account_id.clone().unwrap_or_else(|| "-".into()),
                k.label.clone(),
                rfc3339(k.created_at),
                k.revoked_at.map_or_else(|| "-".into(), rfc3339),
            ]
        })
        .collect();
    print(
        json,
        as_json,
        &["ID", "ROLE", "ACCOUNT", "LABEL", "CREATED", "REVOKED"],
        &rows,
    )
}

/// Each account with its auto top-up state, the words the API uses; a pause with its
/// reason.
pub fn accounts(accounts: &[(Account, AutoTopupState)], json: bool) -> String {
    let state = |a: &Account, state: AutoTopupState| match a.paused() {
        Some(reason) => format!("{} ({})", state.as_str(), reason.as_str()),
        None => state.as_str().to_owned(),
    };
    let as_json = Value::Array(
        accounts
            .iter()
            .map(|(a, s)| {
                json!({
                    "id": a.id, "email": a.email, "name": a.name, "external_id": a.external_id,
                    "balance": a.balance, "auto_topup": s.as_str(),
                    "paused_reason": a.paused().map(|r| r.as_str()),
                    "created_at": rfc3339(a.created_at),
                })
            })
            .collect(),
    );
    let rows: Vec<Vec<String>> = accounts
        .iter()
        .map(|(a, s)| {
            vec![
                a.id.clone(),
                a.email.clone(),
                a.name.clone(),
                a.external_id.clone().unwrap_or_else(|| "-".into()),
                a.balance.to_display(),
                state(a, *s),
            ]
        })
        .collect();
    print(
        json,
        as_json,
        &[
            "ID",
            "EMAIL",
            "NAME",
            "EXTERNAL ID",
            "BALANCE",
            "AUTO TOP-UP",
        ],
        &rows,
    )
}

/// What `migrate` did: the migrations it applied, or that there were none.
pub fn migrated(location: &str, applied: &[(i64, String)]) -> String {
    match applied {
        [] => format!("no migrations to apply: the database at {location} is up to date"),
        applied => {
            let names: Vec<String> = applied
                .iter()
                .map(|(version, name)| format!("  {version} {name}"))
                .collect();
            format!(
                "applied {} to the database at {location}:\n{}",
                counted(applied.len() as i64, "migration", "migrations"),
                names.join("\n")
            )
        }
    }
}

/// What `verify` found.
pub fn verified(checked: i64, mismatched: usize) -> String {
    format!(
        "{} checked, {mismatched} mismatched",
        counted(checked, "account", "accounts")
    )
}

/// What a check of the provider against the ledger found: a line for each mismatch and a
/// summary, or JSON.
pub fn provider_checked(since: &str, check: &ProviderCheck, json: bool) -> String {
    if json {
        let mismatches: Vec<Value> = check
            .mismatches
            .iter()
            .map(|m| json!({ "kind": m.kind(), "topup_id": m.topup_id(), "detail": m.describe() }))
            .collect();
        return json!({
            "since": since,
            "charges": check.charges,
            "topups": check.topups,
            "settling": check.settling,
            "mismatches": mismatches,
        })
        .to_string();
    }
    let mut lines: Vec<String> = check
        .mismatches
        .iter()
        .map(|m| format!("MISMATCH {}", m.describe()))
        .collect();
    lines.push(format!(
        "since {since}: {} and {} compared, {} still settling, {} mismatched",
        counted(check.charges as i64, "provider charge", "provider charges"),
        counted(check.topups as i64, "top-up", "top-ups"),
        check.settling,
        check.mismatches.len()
    ));
    lines.join("\n")
}

fn counted(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What a resume did, in a sentence or as JSON.
pub fn resumed(account_id: &str, outcome: Option<&TriedNow>, json: bool) -> String {
    let (resumed, tried, words) = match outcome {
        None => (
            false,
            "none",
            format!("{account_id} is not paused; nothing resumed"),
        ),
        Some(TriedNow::NotAsked) => (
            true,
            "not_asked",
            format!("{account_id} resumed; the next scan charges it if it is due"),
        ),
        Some(TriedNow::Charged(attempt)) => (
            true,
            attempt.state.as_str(),
            match attempt.state {
                AttemptState::Succeeded => format!(
                    "{account_id} resumed and charged {} for {} credits",
                    attempt.amount,
                    attempt.credits.to_display()
                ),
                AttemptState::Failed | AttemptState::Canceled => format!(
                    "{account_id} resumed, but the charge of {} failed again ({}): auto top-up is paused again",
                    attempt.amount,
                    attempt.decline_code.as_deref().unwrap_or("declined")
                ),
                state => format!(
                    "{account_id} resumed; its charge of {} is {}",
                    attempt.amount,
                    state.as_str()
                ),
            },
        ),
        Some(TriedNow::NotDue(decision)) => (
            true,
            decision.as_str(),
            format!(
                "{account_id} resumed; not charged now: {}",
                decision.as_str()
            ),
        ),
        Some(TriedNow::NothingWorthCharging) => (
            true,
            "nothing_worth_charging",
            format!("{account_id} resumed; less is missing than the smallest purchase"),
        ),
        Some(TriedNow::Busy(open)) => (
            true,
            "busy",
            format!(
                "{account_id} resumed; top-up {} is still {}",
                open.id,
                open.state.as_str()
            ),
        ),
    };
    if json {
        json!({ "account_id": account_id, "resumed": resumed, "tried": tried }).to_string()
    } else {
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned()],
            vec!["longer".to_owned(), "b".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "VALUE"], &rows),
            "ID      VALUE\na       long value\nlonger  b"
        );
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(verified(1, 0), "1 account checked, 0 mismatched");
        assert_eq!(verified(2, 1), "2 accounts checked, 1 mismatched");
        assert_eq!(
            migrated("sqlite /x.db", &[(16, "closed accounts".into())]),
            "applied 1 migration to the database at sqlite /x.db:\n  16 closed accounts"
        );
        assert_eq!(
            migrated("sqlite /x.db", &[]),
            "no migrations to apply: the database at sqlite /x.db is up to date"
        );
    }
}

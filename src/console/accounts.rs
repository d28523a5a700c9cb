//! Finding an account and everything support needs to answer "why was I (not) charged?":
//! its balance and auto top-up, every scan decision with its reason, its top-ups, ledger,
//! audit trail and notices; and the two things support does to it, resuming a pause with
//! a note and adjusting the balance with a reason, each through the same code as the API.

use axum::{extract::State, http::StatusCode, response::Response};
use minijinja::{Value, context};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{session::Staff, shown};
use crate::{
    db::{DbError, PageRequest, accounts::AccountFilter},
    domain::{account::Account, validation::FieldErrors},
    http::{
        admin::{AuditView, adjust_with_reason, close_with_reason},
        auto_topup::{LoggedDecisionView, resume_with_note, view},
        error::ApiError,
        notices::NoticeView,
        state::AppState,
        views::{LedgerEntryView, TopupView},
    },
    portal::{
        form::{PageForm, PagePath, PageQuery},
        pages::{credits, form_outcome},
        render::{PageError, PageResult},
    },
};

/// How many of each list the account page shows (the API pages through all of them).
const SHOWN: u32 = 25;
const FOUND: u32 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// Accounts by email (whole or its start, any case), the host's external id, or
/// topupd's id.
pub async fn search(
    State(state): State<AppState>,
    staff: Staff,
    PageQuery(query): PageQuery<SearchQuery>,
) -> PageResult<Response> {
    let q = query.q.trim();
    let found = if q.is_empty() {
        Vec::new()
    } else {
        let mut found = Vec::new();
        if let Some(account) = state.db.account(q).await? {
            found.push(account);
        }
        for filter in [
            AccountFilter {
                external_id: Some(q.to_owned()),
                ..AccountFilter::default()
            },
            AccountFilter {
                email_prefix: Some(q.to_owned()),
                ..AccountFilter::default()
            },
        ] {
            let page = state
                .db
                .find_accounts(
                    &filter,
                    PageRequest {
                        limit: FOUND,
                        before: None,
                    },
                )
                .await?;
            for account in page.items {
                if !found.iter().any(|a: &Account| a.id == account.id) {
                    found.push(account);
                }
            }
        }
        found
    };
    let rows = account_rows(&state, &found).await?;
    let ctx = context! {
        ..staff.frame("accounts", "Accounts"),
        ..context! { q, rows, searched => !q.is_empty() }
    };
    Ok(state
        .pages
        .render(StatusCode::OK, "console/search.html", ctx))
}

/// Accounts in a list: who, their balance and their auto top-up state.
pub async fn account_rows(state: &AppState, accounts: &[Account]) -> Result<Vec<Value>, DbError> {
    let mut rows = Vec::with_capacity(accounts.len());
    for account in accounts {
        rows.push(account_row(state, account).await?);
    }
    Ok(rows)
}

async fn account_row(state: &AppState, account: &Account) -> Result<Value, DbError> {
    let in_progress = state.db.open_attempt_of(&account.id).await?.is_some();
    Ok(context! {
        id => account.id.clone(),
        email => account.email.clone(),
        name => account.name.clone(),
        external_id => account.external_id.clone(),
        balance => credits(account.balance),
        closed => account.closed.as_ref().map(|c| context! {
            at => crate::clock::rfc3339(c.at),
            reason => c.reason.clone(),
        }),
        state => account.auto_topup_state(in_progress).as_str(),
        paused_reason => account.paused().map(|r| r.as_str()),
    })
}

/// What a staff action did, said on the page it was done from: `ok` false when it did
/// not do what was asked (refused, or a charge tried now that failed).
struct Outcome {
    ok: bool,
    text: String,
    status: StatusCode,
}

/// The forms of the account page, as typed (kept when a field is wrong).
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    csrf: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    try_now: Option<String>,
    #[serde(default)]
    credits: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    close_reason: String,
}

pub async fn page(
    State(state): State<AppState>,
    staff: Staff,
    PagePath(id): PagePath<String>,
) -> PageResult<Response> {
    account_page(
        &state,
        &staff,
        &id,
        None,
        &FieldErrors::new(),
        &ActionForm::default(),
    )
    .await
}

async fn account_page(
    state: &AppState,
    staff: &Staff,
    id: &str,
    outcome: Option<Outcome>,
    errors: &FieldErrors,
    form: &ActionForm,
) -> PageResult<Response> {
    let account = state.db.account(id).await?.ok_or(PageError::NotFound)?;
    let latest = PageRequest {
        limit: SHOWN,
        before: None,
    };
    let decisions = state.db.decisions(id, latest).await?.items;
    let topups = state.db.topups(id, latest).await?.items;
    let ledger = state.db.ledger(id, latest).await?.items;
    let audit = state.db.audit_log(Some(id), latest).await?.items;
    let notices = state.db.notices_of(id, SHOWN).await?;
    let audit: Vec<AuditView> = audit
        .into_iter()
        .map(AuditView::try_from)
        .collect::<Result<_, ApiError>>()
        .map_err(|error| PageError::Db(DbError::Corrupt(error.to_string())))?;
    let row = account_row(state, &account).await?;
    let auto_topup = view(state, account).await.map_err(api_failure)?;
    let (status, by_field) = form_outcome(errors);
    let status = outcome.as_ref().map_or(status, |o| o.status);
    let ctx = context! {
        ..staff.frame("accounts", &format!("Account {id}")),
        ..context! {
            account => row,
            auto_topup => shown(&auto_topup),
            decisions => shown(decisions.into_iter().map(LoggedDecisionView::from).collect::<Vec<_>>()),
            topups => shown(topups.into_iter().map(TopupView::from).collect::<Vec<_>>()),
            ledger => shown(ledger.into_iter().map(LedgerEntryView::from).collect::<Vec<_>>()),
            audit => shown(&audit),
            notices => shown(notices.into_iter().map(|n| NoticeView::of(n, &state.letterhead)).collect::<Vec<_>>()),
            outcome => outcome.map(|o| context! { ok => o.ok, text => o.text }),
            errors => by_field,
            form => context! {
                note => form.note.clone(),
                try_now => form.try_now.is_some(),
                credits => form.credits.clone(),
                reason => form.reason.clone(),
                close_reason => form.close_reason.clone(),
            },
        }
    };
    Ok(state.pages.render(status, "console/account.html", ctx))
}

/// An API failure the console cannot show as an outcome.
fn api_failure(error: ApiError) -> PageError {
    match error {
        ApiError::NotFound(_) => PageError::NotFound,
        ApiError::Db(error) => PageError::Db(error),
        other => PageError::Db(DbError::Corrupt(other.to_string())),
    }
}

/// The page again after an action: its outcome said, or the fields at fault named (the
/// form then keeps what was typed).
async fn after_action<T>(
    state: &AppState,
    staff: &Staff,
    id: &str,
    form: &ActionForm,
    done: Result<T, ApiError>,
    said: impl FnOnce(T) -> Outcome,
) -> PageResult<Response> {
    let (outcome, errors) = match done {
        Ok(value) => (Some(said(value)), FieldErrors::new()),
        Err(ApiError::InvalidRequest { fields, .. }) => (None, fields),
        Err(error @ ApiError::Conflict(_)) => (
            Some(Outcome {
                ok: false,
                text: error.to_string(),
                status: StatusCode::CONFLICT,
            }),
            FieldErrors::new(),
        ),
        Err(error) => return Err(api_failure(error)),
    };
    let kept = if errors.is_empty() {
        ActionForm::default()
    } else {
        ActionForm {
            csrf: String::new(),
            note: form.note.clone(),
            try_now: form.try_now.clone(),
            credits: form.credits.clone(),
            reason: form.reason.clone(),
            close_reason: form.close_reason.clone(),
        }
    };
    account_page(state, staff, id, outcome, &errors, &kept).await
}

/// Resumes the account's pause with the note, trying a charge now if asked; the page says
/// what came of it, plainly (a try declined again says so).
pub async fn resume(
    State(state): State<AppState>,
    staff: Staff,
    PagePath(id): PagePath<String>,
    PageForm(form): PageForm<ActionForm>,
) -> PageResult<Response> {
    staff.check_form(&form.csrf)?;
    let done = resume_with_note(
        &state,
        &id,
        staff.actor(),
        &form.note,
        form.try_now.is_some(),
    )
    .await;
    after_action(&state, &staff, &id, &form, done, |resumed| Outcome {
        ok: !resumed.outcome.paused_again(),
        text: resumed.message,
        status: StatusCode::OK,
    })
    .await
}

/// Closes the account with a reason: charged no more, its balance kept.
pub async fn close(
    State(state): State<AppState>,
    staff: Staff,
    PagePath(id): PagePath<String>,
    PageForm(form): PageForm<ActionForm>,
) -> PageResult<Response> {
    staff.check_form(&form.csrf)?;
    let done = close_with_reason(&state, &id, &form.close_reason, &staff.actor())
        .await
        .map_err(|error| match error {
            // The form's field is close_reason, beside the adjustment's reason.
            ApiError::InvalidRequest { fields, .. } => {
                let mut named = FieldErrors::new();
                for (field, problem) in fields.iter() {
                    named.add(
                        if field == "reason" {
                            "close_reason"
                        } else {
                            field
                        },
                        problem,
                    );
                }
                ApiError::invalid(named)
            }
            other => other,
        });
    after_action(&state, &staff, &id, &form, done, |account| Outcome {
        ok: true,
        text: format!(
            "Closed: nothing is charged from now on; the balance of {} stays.",
            credits(account.balance)
        ),
        status: StatusCode::OK,
    })
    .await
}

/// Grants or removes credits with a reason.
pub async fn adjust(
    State(state): State<AppState>,
    staff: Staff,
    PagePath(id): PagePath<String>,
    PageForm(form): PageForm<ActionForm>,
) -> PageResult<Response> {
    staff.check_form(&form.csrf)?;
    let done = match form.credits.trim().replace(',', "").parse::<Decimal>() {
        Ok(amount) => adjust_with_reason(&state, &id, amount, &form.reason, &staff.actor()).await,
        Err(_) => Err(ApiError::invalid(FieldErrors::single(
            "credits",
            "must be a number of credits, such as 500 or -250",
        ))),
    };
    after_action(&state, &staff, &id, &form, done, |entry| Outcome {
        ok: true,
        text: format!(
            "Adjusted by {}: the balance is {}.",
            credits(entry.amount),
            credits(entry.balance_after)
        ),
        status: StatusCode::OK,
    })
    .await
}

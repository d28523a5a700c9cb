//! Billing history: every purchase and top-up with its transaction id and outcome, newest
//! first, and each paid one's receipt as a PDF.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use minijinja::context;
use serde::Deserialize;

use super::{account, attempt_row, charged_card, credits, trigger, when};
use crate::{
    db::PageRequest,
    domain::attempt::AttemptState,
    http::state::AppState,
    portal::{
        form::{PagePath, PageQuery},
        receipt::{self, ReceiptFacts},
        render::{PageError, PageResult},
        session::Customer,
    },
};

const PER_PAGE: u32 = 25;

#[derive(Debug, Deserialize)]
pub struct Cursor {
    before: Option<String>,
}

/// `?before=` as the pages' links give it; anything else is the first page.
pub fn page_request(cursor: &Cursor) -> PageRequest {
    PageRequest {
        limit: PER_PAGE,
        before: cursor.before.as_deref().and_then(|b| b.parse().ok()),
    }
}

pub async fn page(
    State(state): State<AppState>,
    customer: Customer,
    PageQuery(cursor): PageQuery<Cursor>,
) -> PageResult<Response> {
    let page = state
        .db
        .topups(customer.account_id(), page_request(&cursor))
        .await?;
    let cards = state.db.saved_cards(customer.account_id()).await?;
    let rows: Vec<_> = page.items.iter().map(|a| attempt_row(a, &cards)).collect();
    let ctx = context! {
        ..customer.frame("history", "Billing history"),
        ..context! { rows, next_before => page.next_before },
    };
    Ok(state.pages.render(StatusCode::OK, "history.html", ctx))
}

/// The receipt of a paid purchase or top-up of the session's account.
pub async fn receipt(
    State(state): State<AppState>,
    customer: Customer,
    PagePath(file): PagePath<String>,
) -> PageResult<Response> {
    let id = file.strip_suffix(".pdf").unwrap_or(&file);
    let attempt = state
        .db
        .attempt(id)
        .await?
        .filter(|a| a.account_id == customer.account_id() && a.state == AttemptState::Succeeded)
        .ok_or(PageError::NotFound)?;
    let account = account(&state, &customer).await?;
    let cards = state.db.saved_cards(&account.id).await?;
    let seller = &state.config.billing_page;
    let seller_name = if seller.seller_name.is_empty() {
        state.config.email.product_name.clone()
    } else {
        seller.seller_name.clone()
    };
    let facts = ReceiptFacts {
        number: attempt.id.clone(),
        date: when(attempt.settled_at.unwrap_or(attempt.created_at)),
        seller_name,
        seller_address: seller.seller_address.clone(),
        seller_tax_id: seller.seller_tax_id.clone(),
        customer_name: account.name.clone(),
        customer_email: account.email.clone(),
        description: format!("{}: prepaid credits", trigger(&attempt)),
        credits: credits(attempt.credits),
        amount: attempt
            .amount_received
            .unwrap_or(attempt.amount)
            .to_string(),
        card: charged_card(&attempt, &cards),
        transaction: attempt.provider_payment_id.clone().unwrap_or_default(),
    };
    let disposition = format!("attachment; filename=\"receipt-{}.pdf\"", attempt.id);
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        receipt::pdf(&facts),
    )
        .into_response())
}

//! The one error type of the HTTP API. Every error answers
//! `{"error": "<code>", "message": "<sentence>", ...}`; 5xx details are logged, never sent.

use axum::{
    Json,
    http::{StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::views::{AutoTopupSummary, TopupView};
use crate::{
    db::DbError,
    domain::{credits::Millicredits, validation::FieldErrors},
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 (malformed) or 422 (well-formed but invalid), naming each bad field.
    #[error("{message}")]
    InvalidRequest {
        status: StatusCode,
        message: String,
        fields: FieldErrors,
    },
    /// 415: the body is not JSON.
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// 413: the body is larger than `http.max_body_bytes`.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 401: no key, an unknown key or a revoked key.
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unauthorized,
    /// 403: the key's role may not do this.
    #[error("this API key's role may not do this")]
    Forbidden,
    /// 404: no such resource, or not visible to this key.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 408: the request took longer than `http.request_timeout_secs`.
    #[error("the request took too long and was abandoned")]
    Timeout,
    /// 405: the route exists but not with this method.
    #[error("this route does not accept this method")]
    MethodNotAllowed,
    /// 409: the request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 402: the balance does not cover the cost; nothing was debited.
    #[error("insufficient credits: {required} required, {available} available")]
    InsufficientCredits {
        required: Millicredits,
        available: Millicredits,
        auto_topup: AutoTopupSummary,
    },
    /// 400: a top-up amount outside the purchase limits.
    #[error("{0}")]
    InvalidAmount(String),
    /// 402: the payment was declined; `topup` is the failed top-up, if one was made.
    #[error("payment failed: {message}")]
    PaymentFailed {
        decline_code: String,
        message: String,
        topup: Option<Box<TopupView>>,
    },
    /// 400: a webhook without a valid, fresh signature.
    #[error("webhook signature rejected: {0}")]
    InvalidSignature(String),
    /// 503: the service cannot answer right now.
    #[error("{0}")]
    Unavailable(String),
    /// 503: `http.max_requests_in_flight` requests are being answered already.
    #[error("too many requests in flight; retry in a moment")]
    Overloaded,
    /// 500: storage failure.
    #[error("internal error")]
    Db(#[from] DbError),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// 422 with the given field problems.
    pub fn invalid(fields: FieldErrors) -> Self {
        Self::InvalidRequest {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("request is invalid: {fields}"),
            fields,
        }
    }

    /// 400: the request could not be read, because of `field` if known.
    pub fn malformed(message: String, field: Option<(String, String)>) -> Self {
        Self::InvalidRequest {
            status: StatusCode::BAD_REQUEST,
            message,
            fields: field.map_or_else(FieldErrors::new, |(f, why)| FieldErrors::single(&f, why)),
        }
    }

    /// 400 with the given field problems: the request could not be read as sent.
    pub fn malformed_fields(fields: FieldErrors) -> Self {
        Self::InvalidRequest {
            status: StatusCode::BAD_REQUEST,
            message: format!("request is malformed: {fields}"),
            fields,
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidRequest { status, .. } => (*status, "invalid_request"),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Timeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::InsufficientCredits { .. } => {
                (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
            }
            Self::InvalidAmount(_) => (StatusCode::BAD_REQUEST, "invalid_amount"),
            Self::PaymentFailed { .. } => (StatusCode::PAYMENT_REQUIRED, "payment_failed"),
            Self::InvalidSignature(_) => (StatusCode::BAD_REQUEST, "invalid_signature"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Db(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `invalid_request`, `invalid_amount`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `request_timeout`, `conflict`,
    /// `insufficient_credits`, `payment_failed`, `invalid_signature`, `unavailable` or
    /// `internal`.
    error: &'static str,
    /// What went wrong, in a sentence.
    message: String,
    /// Each bad field and what is wrong with it (`invalid_request`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    fields: Option<FieldErrors>,
    /// The cost of the request (`insufficient_credits`).
    #[serde(skip_serializing_if = "Option::is_none")]
    required: Option<Millicredits>,
    /// The balance (`insufficient_credits`).
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<Millicredits>,
    /// What auto top-up will do about it (`insufficient_credits`).
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_topup: Option<AutoTopupSummary>,
    /// The provider's reason (`payment_failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    decline_code: Option<String>,
    /// The failed top-up (`payment_failed`, when a charge was attempted).
    #[serde(skip_serializing_if = "Option::is_none")]
    topup: Option<Box<TopupView>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // Refusals for load are counted, not logged: a line each would add to the load.
        if status.is_server_error() && !matches!(self, Self::Overloaded) {
            tracing::error!(error = ?self, "request failed");
        }
        let mut body = ErrorBody {
            error: code,
            message: self.to_string(),
            fields: None,
            required: None,
            available: None,
            auto_topup: None,
            decline_code: None,
            topup: None,
        };
        match self {
            Self::InvalidRequest { fields, .. } => body.fields = Some(fields),
            Self::UnsupportedMediaType | Self::PayloadTooLarge => {
                body.fields = Some(FieldErrors::new());
            }
            Self::InsufficientCredits {
                required,
                available,
                auto_topup,
            } => {
                body.required = Some(required);
                body.available = Some(available);
                body.auto_topup = Some(auto_topup);
            }
            Self::PaymentFailed {
                decline_code,
                topup,
                ..
            } => {
                body.decline_code = Some(decline_code);
                body.topup = topup;
            }
            Self::Overloaded => {
                return (status, [(RETRY_AFTER, "1")], Json(body)).into_response();
            }
            _ => {}
        }
        (status, Json(body)).into_response()
    }
}

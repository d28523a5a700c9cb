//! Reading forms, query strings and paths of the billing page. Their fields are read as text and
//! checked by each page, which names the field at fault; a body or query that is not
//! even form-encoded is a page saying so, and changes nothing.

use axum::{
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use super::render::PageError;
use crate::http::state::AppState;

/// A form-encoded body.
pub struct PageForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, PageError> {
        axum::Form::<T>::from_request(request, state)
            .await
            .map(|axum::Form(form)| Self(form))
            .map_err(|rejection| PageError::BadRequest(rejection.body_text()))
    }
}

/// A query string.
pub struct PageQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for PageQuery<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(query)| Self(query))
            .map_err(|rejection| PageError::BadRequest(rejection.body_text()))
    }
}

/// The parts of the path, such as a payment's id.
pub struct PagePath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for PagePath<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(path)| Self(path))
            .map_err(|rejection| PageError::BadRequest(rejection.body_text()))
    }
}

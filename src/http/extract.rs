//! Request extractors whose failures are [`ApiError`]s naming the field at fault, instead
//! of axum's plain-text rejections.

use axum::{
    body::Bytes,
    extract::{
        FromRequest, FromRequestParts, Path, Query, Request,
        rejection::{BytesRejection, FailedToBufferBody},
    },
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::{number::OUT_OF_RANGE, validation::FieldErrors};

/// A JSON body.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_refused)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Why a body could not be read: past `http.max_body_bytes` (413), or anything else, such
/// as a connection closed before the body ended (400).
pub fn body_refused(rejection: BytesRejection) -> ApiError {
    match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::PayloadTooLarge
        }
        other => ApiError::malformed(other.body_text(), None),
    }
}

/// Deserializes a JSON body, naming the field behind a failure.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| json_error(&e.path().to_string(), e.into_inner()))?;
    de.end().map_err(|e| json_error(".", e))?;
    Ok(value)
}

fn json_error(path: &str, error: serde_json::Error) -> ApiError {
    if error.is_syntax() || error.is_eof() {
        return ApiError::malformed(format!("request body is not valid JSON: {error}"), None);
    }
    let problem = strip_position(&error.to_string());
    // Exact numbers are read through a private marker field that callers never wrote.
    let path = path.replace(".$serde_json::private::Number", "");
    match named_field(&path, &problem) {
        Some(field) if problem.contains(OUT_OF_RANGE) => {
            ApiError::invalid(FieldErrors::single(&field, problem))
        }
        // A required field left out is the same mistake as one left empty: 422, named.
        Some(field) if problem.starts_with("missing field") => {
            ApiError::invalid(FieldErrors::single(&field, "is required"))
        }
        Some(field) => ApiError::malformed(
            format!("request body is invalid: {field}: {problem}"),
            Some((field, problem)),
        ),
        None => ApiError::malformed(format!("request body is invalid: {problem}"), None),
    }
}

/// serde names a missing or unknown field in its message and reports the enclosing path;
/// the field is the more useful name.
fn named_field(path: &str, problem: &str) -> Option<String> {
    let quoted = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| problem.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (quoted, path) {
        (Some(name), ".") => Some(name.to_owned()),
        (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => {
            Some(path.to_owned())
        }
        (Some(name), parent) => Some(format!("{parent}.{name}")),
        (None, ".") => None,
        (None, path) => Some(path.to_owned()),
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e| rejected("path", &e.body_text()))
    }
}

/// A 400 for a path or query string axum could not read, naming the field it quotes.
fn rejected(part: &str, problem: &str) -> ApiError {
    let field = problem
        .split('`')
        .nth(1)
        .filter(|f| !f.is_empty())
        .map(|f| (f.to_owned(), problem.to_owned()));
    ApiError::malformed(format!("{part} is invalid: {problem}"), field)
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| {
                ApiError::malformed(format!("query string is invalid: {}", e.body_text()), None)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pricing::PriceRequest;

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::InvalidRequest { fields, .. } => {
                fields.iter().map(|(f, _)| f.to_owned()).collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        let missing = parse_json::<PriceRequest>(b"{}").expect_err("missing service");
        assert_eq!(fields(missing), ["service"]);
        let unknown =
            parse_json::<PriceRequest>(br#"{"service":"x","colour":1}"#).expect_err("unknown");
        assert_eq!(fields(unknown), ["colour"]);
        let wrong_type = parse_json::<PriceRequest>(br#"{"service":"x","characters":-5}"#)
            .expect_err("negative");
        assert_eq!(fields(wrong_type), ["characters"]);
        let syntax = parse_json::<PriceRequest>(b"{\"service\":").expect_err("truncated");
        assert!(fields(syntax).is_empty());
        let trailing = parse_json::<PriceRequest>(br#"{"service":"x"} {}"#).expect_err("trailing");
        assert!(matches!(trailing, ApiError::InvalidRequest { .. }));
    }
}

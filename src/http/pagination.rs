//! Newest-first listings: `?limit=N&cursor=C`, answered as `{"data": [...], "next_cursor"}`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use crate::{
    db::{Page, PageRequest},
    domain::validation::FieldErrors,
};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

/// Read as text so that a bad value gets this API's own error naming the field.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// How many to return, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn page_request(&self) -> Result<PageRequest, ApiError> {
        let mut errors = FieldErrors::new();
        let limit = match self.limit.as_deref().map(str::parse::<u32>) {
            None => DEFAULT_LIMIT,
            Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                errors.add("limit", format!("must be an integer from 1 to {MAX_LIMIT}"));
                DEFAULT_LIMIT
            }
        };
        let before = match self.cursor.as_deref().map(str::parse::<i64>) {
            None => None,
            Some(Ok(n)) if n > 0 => Some(n),
            Some(_) => {
                errors.add("cursor", "is not a cursor returned by this listing");
                None
            }
        };
        errors
            .into_result(PageRequest { limit, before })
            .map_err(ApiError::malformed_fields)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PageView<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> PageView<T> {
    /// Renders each row with `view`, failing on the first row that cannot be rendered.
    pub fn try_from_page<R, E>(page: Page<R>, view: impl Fn(R) -> Result<T, E>) -> Result<Self, E> {
        Ok(Self {
            data: page.items.into_iter().map(view).collect::<Result<_, E>>()?,
            next_cursor: page.next_before.map(|c| c.to_string()),
        })
    }
}

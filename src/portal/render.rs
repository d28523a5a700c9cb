//! Rendering the billing page and the support console: the templates (compiled in,
//! HTML-escaped), what every page shows (the product's name and colour, the navigation,
//! the form token), and the pages that say why nothing can be shown.

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{Html, IntoResponse, Response},
};
use minijinja::{Environment, Value, context};

use super::{links::EmailLinks, session::signed_in_customer};
use crate::{config::Config, db::DbError, http::state::AppState};

const TEMPLATES: &[(&str, &str)] = &[
    ("style.css", include_str!("templates/style.css")),
    ("layout.html", include_str!("templates/layout.html")),
    ("message.html", include_str!("templates/message.html")),
    ("continue.html", include_str!("templates/continue.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("auto_topup.html", include_str!("templates/auto_topup.html")),
    ("buy.html", include_str!("templates/buy.html")),
    ("payment.html", include_str!("templates/payment.html")),
    ("complete.html", include_str!("templates/complete.html")),
    ("cards.html", include_str!("templates/cards.html")),
    ("history.html", include_str!("templates/history.html")),
    ("usage.html", include_str!("templates/usage.html")),
    ("ledger.html", include_str!("templates/ledger.html")),
    (
        "console/layout.html",
        include_str!("../console/templates/layout.html"),
    ),
    (
        "console/message.html",
        include_str!("../console/templates/message.html"),
    ),
    (
        "console/sign_in.html",
        include_str!("../console/templates/sign_in.html"),
    ),
    (
        "console/search.html",
        include_str!("../console/templates/search.html"),
    ),
    (
        "console/account.html",
        include_str!("../console/templates/account.html"),
    ),
    (
        "console/paused.html",
        include_str!("../console/templates/paused.html"),
    ),
    (
        "console/notices.html",
        include_str!("../console/templates/notices.html"),
    ),
    (
        "console/webhooks.html",
        include_str!("../console/templates/webhooks.html"),
    ),
];

/// The billing page's templates and what it needs of the configuration.
pub struct Pages {
    env: Environment<'static>,
    pub links: EmailLinks,
    /// Whether the session cookie is `Secure` (always but on a plain-HTTP public URL).
    pub secure_cookie: bool,
}

impl Pages {
    pub fn new(config: &Config, links: EmailLinks) -> Self {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .expect("the billing page's templates are valid");
        }
        let page = &config.billing_page;
        env.add_global("product", config.email.product_name.clone());
        env.add_global("brand", page.brand_color.clone());
        env.add_global("support_email", config.email.support_email.clone());
        Self {
            env,
            links,
            secure_cookie: config.http.public_url.starts_with("https://"),
        }
    }

    /// `template` rendered with `ctx`, answered with `status`.
    pub fn render(&self, status: StatusCode, template: &str, ctx: Value) -> Response {
        match self.env.get_template(template).and_then(|t| t.render(ctx)) {
            Ok(html) => (status, no_store(), Html(html)).into_response(),
            Err(error) => {
                tracing::error!(%error, template, "billing page failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                )
                    .into_response()
            }
        }
    }

    /// A page with a heading and a sentence, such as "this link has expired".
    pub fn message(&self, status: StatusCode, title: &str, text: &str) -> Response {
        self.render(
            status,
            "message.html",
            context! { title, text, signed_in => false },
        )
    }
}

/// Pages show one account's money: no cache keeps them, no other site frames them, and
/// they run no script (they have none). `form-action` is left out: the forms that pay
/// are answered with a redirect to the provider's pages.
fn no_store() -> [(axum::http::HeaderName, &'static str); 4] {
    use axum::http::header;
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; connect-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    ]
}

/// Why a page shows nothing of an account.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("not found")]
    NotFound,
    /// No cookie, or its session expired or was signed out.
    #[error("session ended")]
    SessionEnded,
    /// A page a notice's link does not open.
    #[error("outside the link")]
    OutsideLink,
    /// A form posted without this session's token, or from another site.
    #[error("form expired")]
    FormExpired,
    /// A request the page cannot read, saying what is wrong with it (naming the field).
    #[error("unreadable request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

pub type PageResult<T = Response> = Result<T, PageError>;

impl IntoResponse for PageError {
    /// An empty answer carrying the error; [`error_pages`] renders it.
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here for your account.".to_owned(),
            ),
            Self::SessionEnded => (
                StatusCode::UNAUTHORIZED,
                "Your session has ended",
                "For your security, billing sessions end after a while. Open the billing page again from your account.".to_owned(),
            ),
            Self::OutsideLink => (
                StatusCode::FORBIDDEN,
                "Open this from your account",
                "The link in your email opens only the payment it is about and the cards to pay it with. To see the rest of your billing, open the billing page from your account.".to_owned(),
            ),
            Self::FormExpired => (
                StatusCode::FORBIDDEN,
                "This form has expired",
                "Nothing was changed. Go back, reload the page and try again.".to_owned(),
            ),
            Self::BadRequest(problem) => (
                StatusCode::BAD_REQUEST,
                "This request could not be read",
                format!("{problem}. Nothing was changed. Go back to the billing page and try again."),
            ),
            Self::Db(error) => {
                tracing::error!(%error, "billing page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Nothing was changed that you did not see confirmed. Try again in a moment.".to_owned(),
                )
            }
        };
        let mut response = status.into_response();
        response.extensions_mut().insert(Failure { title, text });
        response
    }
}

#[derive(Debug, Clone)]
struct Failure {
    title: &'static str,
    text: String,
}

/// The title and text of the [`PageError`] a response carries, if it carries one.
pub(crate) fn failure_of(response: &Response) -> Option<(&'static str, String)> {
    response
        .extensions()
        .get::<Failure>()
        .map(|f| (f.title, f.text.clone()))
}

/// Renders the pages of [`PageError`]s in the product's look, with the navigation of the
/// browser's session if it has one.
pub async fn error_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers().clone();
    let response = next.run(request).await;
    let Some((title, text)) = failure_of(&response) else {
        return response;
    };
    let status = response.status();
    let customer = match status {
        StatusCode::UNAUTHORIZED | StatusCode::INTERNAL_SERVER_ERROR => None,
        _ => signed_in_customer(&state, &headers).await.ok().flatten(),
    };
    let ctx = match customer {
        Some(customer) => context! { ..customer.frame("", title), ..context! { text } },
        None => context! { title, text, signed_in => false },
    };
    state.pages.render(status, "message.html", ctx)
}

//! The layout every page shares, and errors shown as pages.

use super::assets;
use super::session::Viewer;
use crate::error::ApiError;
use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use flinger_store::StoreError;
use tracing::error;

/// Who is signed in, as the layout shows it (never a secret: the CSRF token is the session's
/// own, meant to be echoed by its forms).
pub struct SignedIn {
    pub client_id: String,
    pub role: String,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "ui/layout.html")]
struct Layout<'a> {
    title: &'a str,
    /// Before the live region (headings, filter forms), already rendered.
    before: &'a str,
    /// The live region, already rendered; its event stream replaces it.
    region: &'a str,
    /// After the live region (a job's output), already rendered.
    after: &'a str,
    /// The page's event stream, if it is live.
    live: Option<&'a str>,
    signed_in: Option<&'a SignedIn>,
    version: &'static str,
}

/// A whole page.
pub struct Page {
    pub status: StatusCode,
    pub title: String,
    pub before: String,
    pub region: String,
    pub after: String,
    pub live: Option<String>,
    pub signed_in: Option<SignedIn>,
}

impl Page {
    pub fn new(viewer: &Viewer, title: impl Into<String>) -> Page {
        Page {
            status: StatusCode::OK,
            title: title.into(),
            before: String::new(),
            region: String::new(),
            after: String::new(),
            live: None,
            signed_in: viewer.signed_in(),
        }
    }

    /// Makes the page live: its region is rendered again by the region stream of `path?query`.
    pub fn live_region(mut self, path: &str, query: &str) -> Page {
        let page = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        self.live = Some(format!(
            "/live?page={}",
            url::form_urlencoded::byte_serialize(page.as_bytes()).collect::<String>()
        ));
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let layout = Layout {
            title: &self.title,
            before: &self.before,
            region: &self.region,
            after: &self.after,
            live: self.live.as_deref(),
            signed_in: self.signed_in.as_ref(),
            version: assets::VERSION,
        };
        match layout.render() {
            Ok(html) => (self.status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
            Err(e) => UiError::Render(e).into_response(),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/message.html")]
struct Message<'a> {
    heading: &'a str,
    text: &'a str,
    sign_in: bool,
}

/// What a page cannot show, as a page with the right status.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// 404: an unknown job, agent, queue or path.
    #[error("{0}")]
    NotFound(String),
    /// Refused as the API would refuse it (401, 403, 409, 503…), with the API's message.
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("a template failed: {0}")]
    Render(#[from] askama::Error),
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> Self {
        UiError::Api(e.into())
    }
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Api(ApiError::NoContent) => StatusCode::NOT_FOUND,
            // The API's one mapping of errors to statuses.
            UiError::Api(e) => e.status(),
            UiError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The page's heading and text.
    pub fn page(&self, viewer: Option<&Viewer>) -> Page {
        let status = self.status();
        let heading = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::UNAUTHORIZED => "Sign in required",
            StatusCode::FORBIDDEN => "Not allowed",
            s if s.is_server_error() => "Unavailable",
            _ => "Refused",
        };
        let text = match self {
            UiError::Render(e) => {
                error!(error = %e, "a page could not be rendered");
                "The page could not be rendered.".to_owned()
            }
            UiError::Api(ApiError::NoContent) => "No such job.".to_owned(),
            other => other.to_string(),
        };
        let message = Message {
            heading,
            text: &text,
            sign_in: status == StatusCode::UNAUTHORIZED,
        };
        let mut page = match viewer {
            Some(v) => Page::new(v, heading),
            None => Page {
                status,
                title: heading.to_owned(),
                before: String::new(),
                region: String::new(),
                after: String::new(),
                live: None,
                signed_in: None,
            },
        };
        page.status = status;
        page.before = message.render().unwrap_or_else(|_| text.clone());
        page
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        self.page(None).into_response()
    }
}

/// A page, or an error page for the same viewer.
pub fn answer(viewer: &Viewer, result: Result<Page, UiError>) -> Response {
    match result {
        Ok(page) => page.into_response(),
        Err(e) => e.page(Some(viewer)).into_response(),
    }
}

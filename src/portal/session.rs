//! Who is signed in, and how a page fails. [`SignedIn`] is the extractor of every page behind
//! the sign-in: without a live session the browser goes to `/login` (and a cookie that no longer
//! works is cleared). [`PageError`] turns an error into the HTML page a browser gets, with the
//! status and `Retry-After` the API would answer. Sessions and CSRF tokens themselves are
//! [`platform::session`](crate::platform::session)'s.

use std::fmt;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::TryStreamExt;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::domain::AdvertId;
use crate::platform::auth::AuthError;
use crate::platform::http::{HttpError, html_page, read_body};
use crate::platform::session::{Session, Sessions};

use super::Portal;
use super::templates;
pub use super::templates::SignedIn;

/// Bodies of the small forms (sign-in, sign-out, pause/resume) are far below this.
const SMALL_FORM_LIMIT: usize = 8 * 1024;

impl SignedIn {
    pub(super) fn of(session: &Session) -> Self {
        Self {
            customer: session.customer.clone(),
            csrf: session.csrf_token().to_owned(),
        }
    }

    /// `error` as a page for this customer.
    pub fn fail(&self, error: impl Into<HttpError>) -> PageError {
        PageError::Page {
            signed_in: Some(self.clone()),
            error: Box::new(error.into()),
        }
    }

    /// Whether this session may change anything: it was signed in with a write key.
    pub fn may_write(&self) -> bool {
        self.customer.may_write()
    }

    /// The "not found" page: no such advert among this customer's.
    pub fn not_found(&self) -> PageError {
        self.fail(HttpError::not_found("There is no such advert among yours."))
    }
}

impl FromRequest for SignedIn {
    type Error = PageError;
    type Future = LocalBoxFuture<'static, Result<Self, PageError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let portal = Portal::of(&req)?;
            portal.session(&req).await.map(|session| Self::of(&session))
        })
    }
}

/// Why a page is not what was asked for; answered as HTML.
#[derive(Debug)]
pub enum PageError {
    /// No live session: to the sign-in page, clearing the cookie that was sent.
    SignIn { clear_cookie: Option<String> },
    /// An error page, with the status and `Retry-After` of `error`.
    Page {
        signed_in: Option<SignedIn>,
        error: Box<HttpError>,
    },
    /// A page built by the handler (a form again, with its errors beside the fields), with the
    /// status and `Retry-After` of `error`.
    Answer { html: String, error: Box<HttpError> },
}

impl PageError {
    /// A form that changes something, sent from a session signed in with a read key.
    pub fn read_only(signed_in: &SignedIn) -> Self {
        let mut error = crate::platform::auth::insufficient_scope();
        error.message = "You signed in with a read key: it shows your adverts and reports but \
                         cannot change anything. Sign in with a write key to do that."
            .to_owned();
        Self::Page {
            signed_in: Some(signed_in.clone()),
            error: Box::new(error),
        }
    }

    /// `error` as a page for someone not signed in.
    pub fn anonymous(error: impl Into<HttpError>) -> Self {
        Self::Page {
            signed_in: None,
            error: Box::new(error.into()),
        }
    }

    /// A form sent from another site, or without this session's CSRF token.
    pub fn forbidden(signed_in: Option<&SignedIn>) -> Self {
        Self::Page {
            signed_in: signed_in.cloned(),
            error: Box::new(HttpError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "This form was not sent from one of your reklama pages, or it has expired. Go \
                 back, reload the page and try again.",
            )),
        }
    }
}

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SignIn { .. } => f.write_str("not signed in"),
            Self::Page { error, .. } => f.write_str(&error.message),
            Self::Answer { error, .. } => f.write_str(&error.message),
        }
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn { .. } => StatusCode::SEE_OTHER,
            Self::Page { error, .. } => error.status,
            Self::Answer { error, .. } => error.status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::SignIn { clear_cookie } => {
                let mut response = see_other("/login");
                if let Some(clear) = clear_cookie
                    .as_deref()
                    .and_then(|c| HeaderValue::from_str(c).ok())
                {
                    response.headers_mut().insert(header::SET_COOKIE, clear);
                }
                response
            }
            Self::Page { signed_in, error } => error_page(signed_in.as_ref(), error),
            Self::Answer { html, error } => {
                with_retry_after(html_page(error.status, html.clone()), error)
            }
        }
    }
}

/// A page for an error, with the same status and `Retry-After` the API would answer.
pub fn error_page(signed_in: Option<&SignedIn>, error: &HttpError) -> HttpResponse {
    let title = match error.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Request refused",
        StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
        s if s.is_client_error() => "Bad request",
        _ => "Something went wrong",
    };
    with_retry_after(
        html_page(
            error.status,
            templates::message_page(signed_in, title, &error.message),
        ),
        error,
    )
}

/// `response` with the `Retry-After` of `error`, when it has one.
pub fn with_retry_after(mut response: HttpResponse, error: &HttpError) -> HttpResponse {
    if let Some(secs) = error.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

impl Portal {
    /// The portal's state, as `main_app` registered it.
    pub(super) fn of(req: &HttpRequest) -> Result<web::Data<Portal>, PageError> {
        req.app_data::<web::Data<Portal>>().cloned().ok_or_else(|| {
            PageError::anonymous(HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the portal is not set up on this server",
            ))
        })
    }

    /// The request's live session.
    async fn session(&self, req: &HttpRequest) -> Result<Session, PageError> {
        match self.sessions.current(req).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(PageError::SignIn {
                clear_cookie: Sessions::has_cookie(req).then(|| self.sessions.clear_cookie()),
            }),
            Err(e) => Err(PageError::anonymous(AuthError::Db(e))),
        }
    }

    /// Who is signed in, if anyone; a session the database cannot check counts as none.
    pub(super) async fn signed_in(&self, req: &HttpRequest) -> Option<SignedIn> {
        match self.sessions.current(req).await {
            Ok(session) => session.as_ref().map(SignedIn::of),
            Err(e) => {
                tracing::warn!(error = %e, "session check failed; the page is shown signed out");
                None
            }
        }
    }

    /// A POST from one of our pages: our origin, or refused before anything is read.
    pub(super) fn same_origin(&self, req: &HttpRequest) -> Result<(), PageError> {
        if self.sessions.origin_allowed(req) {
            Ok(())
        } else {
            Err(PageError::forbidden(None))
        }
    }

    /// A small urlencoded form: our origin, a live session and its CSRF token (the form's
    /// `csrf_token` field), in that order, whatever the session's key may do. Only signing out
    /// takes it; a form that changes the account takes [`Portal::write_form_session`].
    pub(super) async fn form_session_any_scope<F: WithCsrf + DeserializeOwned>(
        &self,
        req: &HttpRequest,
        payload: web::Payload,
    ) -> Result<(Session, F), PageError> {
        self.same_origin(req)?;
        let form: F = read_form(payload).await?;
        let session = self.session(req).await?;
        self.check_csrf(&session, form.csrf_token())?;
        Ok((session, form))
    }

    /// [`Portal::form_session_any_scope`] for a form that changes something: the session must also have
    /// been signed in with a write key (a read key's session is read-only: 403).
    pub(super) async fn write_form_session<F: WithCsrf + DeserializeOwned>(
        &self,
        req: &HttpRequest,
        payload: web::Payload,
    ) -> Result<(Session, F), PageError> {
        let (session, form) = self.form_session_any_scope(req, payload).await?;
        writable(&session)?;
        Ok((session, form))
    }

    /// A session from a multipart form that creates something: our origin, a live session signed
    /// in with a write key; the CSRF token is checked with [`Portal::check_csrf_part`] once the
    /// body is read.
    pub(super) async fn upload_session(&self, req: &HttpRequest) -> Result<Session, PageError> {
        self.same_origin(req)?;
        let session = self.session(req).await?;
        writable(&session)?;
        Ok(session)
    }

    fn check_csrf(&self, session: &Session, presented: Option<&str>) -> Result<(), PageError> {
        if self
            .sessions
            .csrf_matches(session, presented.unwrap_or_default())
        {
            return Ok(());
        }
        tracing::info!(customer_id = %session.customer.id, "form refused: missing or wrong CSRF token");
        Err(PageError::forbidden(Some(&SignedIn::of(session))))
    }

    /// Checks the `csrf_token` part of a multipart body already in memory.
    pub(super) async fn check_csrf_part(
        &self,
        req: &HttpRequest,
        session: &Session,
        body: web::Bytes,
    ) -> Result<SignedIn, PageError> {
        let token = csrf_part(req, body).await;
        self.check_csrf(session, token.as_deref())?;
        Ok(SignedIn::of(session))
    }

    pub(super) fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

/// A session signed in with a write key, or the read-only refusal.
fn writable(session: &Session) -> Result<(), PageError> {
    if session.customer.may_write() {
        Ok(())
    } else {
        Err(PageError::read_only(&SignedIn::of(session)))
    }
}

/// A form that carries the session's CSRF token (its `csrf_token` field).
pub trait WithCsrf {
    fn csrf_token(&self) -> Option<&str>;
}

/// A small urlencoded form body. Fields it does not know are ignored.
pub async fn read_form<F: DeserializeOwned>(payload: web::Payload) -> Result<F, PageError> {
    let body = read_body(payload, SMALL_FORM_LIMIT)
        .await
        .map_err(PageError::anonymous)?;
    serde_urlencoded::from_bytes(&body).map_err(|e| {
        PageError::anonymous(HttpError::bad_request(
            "malformed_body",
            format!("the form cannot be read: {e}"),
        ))
    })
}

/// A query parameter, decoded.
pub fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// An advert id from a path: a positive integer.
pub fn parse_id(raw: &str) -> Option<AdvertId> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).map(AdvertId)
}

/// A multipart reader over a body already in memory, fed in network-sized chunks.
pub fn buffered_multipart(req: &HttpRequest, body: web::Bytes) -> actix_multipart::Multipart {
    const CHUNK: usize = 64 * 1024;
    let chunks: Vec<Result<web::Bytes, PayloadError>> = (0..body.len())
        .step_by(CHUNK)
        .map(|at| Ok(body.slice(at..(at + CHUNK).min(body.len()))))
        .collect();
    actix_multipart::Multipart::new(req.headers(), futures_util::stream::iter(chunks))
}

/// The `csrf_token` part of a multipart body, if it has one.
async fn csrf_part(req: &HttpRequest, body: web::Bytes) -> Option<String> {
    const MAX_TOKEN: usize = 128;
    let mut form = buffered_multipart(req, body);
    while let Ok(Some(mut field)) = form.try_next().await {
        let is_token = field
            .content_disposition()
            .and_then(|cd| cd.get_name())
            .is_some_and(|name| name == "csrf_token");
        let mut value = Vec::new();
        while let Ok(Some(chunk)) = field.try_next().await {
            if is_token && value.len() + chunk.len() <= MAX_TOKEN {
                value.extend_from_slice(&chunk);
            }
        }
        if is_token {
            return String::from_utf8(value).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_integers() {
        assert_eq!(parse_id("12"), Some(AdvertId(12)));
        assert_eq!(parse_id("0"), None);
        assert_eq!(parse_id("x"), None);
    }
}

//! The customer dashboard: sign-in with the API key (a signed session cookie), the list of the
//! customer's adverts with their counts and a pause/resume button, each advert's page (creative,
//! tracked link with a copy button and a QR code, a chart of clicks and impressions), and a CSV
//! download. Pages are rendered on the server; the only script is the copy button's.
//!
//! Counts come through [`AdvertStatistics`](super::AdvertStatistics), implemented in main_app
//! over tracking, so intake never imports tracking. Sessions and CSRF tokens are
//! [`platform::session`](crate::platform::session)'s.

mod chart;
mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::TryStreamExt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::advert::AdvertPatch;
use crate::domain::{AdvertId, AdvertStatus};
use crate::platform::auth::AuthError;
use crate::platform::http::{HttpError, html_page, read_body};
use crate::platform::session::{Session, Sessions};
use crate::platform::urls::PublicUrls;

use super::error::IntakeError;
use super::http::{AdvertView, BodyLimit};
use super::input::{AdvertUpload, PatchRequest, RawAdvert};
use super::service::IntakeService;
use super::{AdvertStatistics, pages as form_pages};

pub use pages::{SignedIn, csrf_field, message_page, nav, placement_previews};

const SCRIPT: &str = include_str!("../../../../assets/dashboard.js");

/// Adverts on one page of the dashboard.
const PAGE_SIZE: i64 = 50;
/// Bodies of the small forms (sign-in, pause/resume) are far below this.
const SMALL_FORM_LIMIT: usize = 8 * 1024;
/// The advert page runs the copy button's script (ours only); every other page runs none.
const SCRIPT_PAGE_CSP: &str = "default-src 'none'; script-src 'self'; img-src 'self'; \
                               style-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                               base-uri 'none'";
/// The API's default end of time (`to` of a report), for all-time series.
const END_OF_TIME: i64 = i32::MAX as i64 * 4;

/// Counts of one advert (or one bucket of its series).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdvertCounts {
    /// Billable clicks: bots and repeats within the duplicate window are counted apart.
    pub clicks: u64,
    pub bot_clicks: u64,
    pub duplicate_clicks: u64,
    pub impressions: u64,
}

impl AdvertCounts {
    /// Billable clicks per impression, `None` when nothing was shown.
    pub fn ctr(&self) -> Option<f64> {
        (self.impressions > 0).then(|| self.clicks as f64 / self.impressions as f64)
    }

    fn add(&mut self, other: &Self) {
        self.clicks += other.clicks;
        self.bot_clicks += other.bot_clicks;
        self.duplicate_clicks += other.duplicate_clicks;
        self.impressions += other.impressions;
    }
}

pub use crate::domain::Granularity;

/// Buckets a chart shows: the last 48 hours or the last 30 days.
pub(super) fn chart_buckets(granularity: Granularity) -> i64 {
    match granularity {
        Granularity::Hour => 48,
        Granularity::Day => 30,
    }
}

/// One bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesPoint {
    /// Start of the bucket, Unix seconds (UTC).
    pub start: i64,
    pub counts: AdvertCounts,
}

#[derive(Debug, thiserror::Error)]
pub enum StatisticsError {
    #[error("advert not found")]
    NotFound,
    /// The counters cannot vouch for every count right now; retry shortly.
    #[error("statistics unavailable: {0}")]
    Unavailable(String),
    #[error("statistics failed: {0}")]
    Internal(String),
}

impl From<StatisticsError> for HttpError {
    fn from(e: StatisticsError) -> Self {
        match e {
            StatisticsError::NotFound => HttpError::not_found("no such advert"),
            StatisticsError::Unavailable(reason) => {
                tracing::warn!(%reason, "statistics unavailable");
                HttpError::unavailable()
            }
            StatisticsError::Internal(reason) => {
                tracing::error!(%reason, "statistics failed");
                HttpError::internal()
            }
        }
    }
}

/// What the dashboard's handlers share: the statistics and the sessions. Built by main_app.
pub struct Dashboard {
    statistics: Arc<dyn AdvertStatistics>,
    sessions: Sessions,
}

impl Dashboard {
    pub fn new(statistics: Arc<dyn AdvertStatistics>, sessions: Sessions) -> Self {
        Self {
            statistics,
            sessions,
        }
    }

    /// The session machinery, for the form's preview links.
    pub(in crate::modules::intake) fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/login")
            .route(web::get().to(login_form))
            .route(web::post().to(login)),
    )
    .route("/logout", web::post().to(logout))
    .route("/dashboard", web::get().to(dashboard_page))
    .route("/dashboard/adverts", web::post().to(submit_advert))
    .route("/dashboard/adverts/{id}", web::get().to(advert_page))
    .route("/dashboard/adverts/{id}/status", web::post().to(set_status))
    .route(
        "/dashboard/adverts/{id}/report.csv",
        web::get().to(report_csv),
    )
    .route("/assets/dashboard.js", web::get().to(script));
}

/// The dashboard's part of the OpenAPI document (merged into intake's by `http::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    login_form,
    login,
    logout,
    dashboard_page,
    submit_advert,
    advert_page,
    set_status,
    report_csv,
    script
))]
pub struct ApiDoc;

// ---- the forms, for the OpenAPI document only ------------------------------------------------

/// `POST /login`, for the OpenAPI document only (read by [`read_small_form`]).
#[derive(utoipa::ToSchema)]
#[schema(description = "The sign-in form, urlencoded.")]
#[expect(dead_code, reason = "documentation only, never built")]
struct SignInForm {
    /// The customer's API key, `rk_<id>_<secret>`, as printed once by `reklama customer add`.
    #[schema(example = "rk_1_...")]
    api_key: String,
}

/// `POST /logout`, for the OpenAPI document only.
#[derive(utoipa::ToSchema)]
#[schema(description = "The sign-out button's form, urlencoded.")]
#[expect(dead_code, reason = "documentation only, never built")]
struct SignOutForm {
    /// The session's CSRF token, the hidden `csrf_token` field of every dashboard form. It is
    /// derived from the session cookie, so another site cannot know it; missing or wrong: 403.
    csrf_token: String,
}

/// `POST /dashboard/adverts/{id}/status`, for the OpenAPI document only.
#[derive(utoipa::ToSchema)]
#[schema(description = "The pause/resume button's form, urlencoded.")]
#[expect(dead_code, reason = "documentation only, never built")]
struct StatusForm {
    /// The session's CSRF token, the hidden `csrf_token` field of every dashboard form. It is
    /// derived from the session cookie, so another site cannot know it; missing or wrong: 403.
    csrf_token: String,
    /// The advert's new status.
    #[schema(schema_with = settable_status_schema)]
    status: String,
    /// Where to go afterwards: the advert's own page (`/dashboard/adverts/{id}`); anything else,
    /// or nothing, goes to `/dashboard`.
    #[schema(example = "/dashboard/adverts/1")]
    return_to: Option<String>,
}

fn settable_status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["active", "paused"]))
        .description(Some("`active` or `paused`; anything else answers 400."))
        .build()
}

/// `POST /dashboard/adverts`, for the OpenAPI document only (read by [`submit_advert`]).
#[derive(utoipa::ToSchema)]
#[schema(
    description = "The advert form of a signed-in customer as multipart/form-data: the parts of \
                   `AdvertUpload` (`api_key` is ignored: the session says who sends it) and the \
                   session's CSRF token as a text part `csrf_token`."
)]
#[expect(dead_code, reason = "documentation only, never built")]
struct DashboardAdvertUpload {
    /// The session's CSRF token, the hidden `csrf_token` field of every dashboard form. It is
    /// derived from the session cookie, so another site cannot know it; missing or wrong: 403.
    csrf_token: String,
    #[serde(flatten)]
    advert: AdvertUpload,
}

// ---- responses -------------------------------------------------------------------------------

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// A page for an error, with the same status and `Retry-After` the API would answer.
fn error_page(signed_in: Option<&SignedIn>, error: HttpError) -> HttpResponse {
    let title = match error.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Request refused",
        StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
        s if s.is_client_error() => "Bad request",
        _ => "Something went wrong",
    };
    let mut response = html_page(
        error.status,
        pages::message_page(signed_in, title, &error.message),
    );
    if let Some(secs) = error.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn not_found(signed_in: Option<&SignedIn>) -> HttpResponse {
    error_page(
        signed_in,
        HttpError::not_found("There is no such advert among yours."),
    )
}

fn forbidden(signed_in: Option<&SignedIn>) -> HttpResponse {
    error_page(
        signed_in,
        HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This form was not sent from one of your reklama pages, or it has expired. Go back, \
             reload the page and try again.",
        ),
    )
}

// ---- sessions --------------------------------------------------------------------------------

fn signed_in_view(session: &Session) -> SignedIn {
    SignedIn {
        name: session.customer.name.clone(),
        csrf: session.csrf_token().to_owned(),
    }
}

/// The request's live session, or the answer to give instead: the sign-in page (dropping a
/// cookie that no longer works), or an error page when the database cannot tell.
async fn require_session(
    req: &HttpRequest,
    dashboard: &Dashboard,
) -> Result<Session, HttpResponse> {
    match dashboard.sessions.current(req).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => {
            let mut response = see_other("/login");
            if Sessions::has_cookie(req)
                && let Ok(clear) = HeaderValue::from_str(&dashboard.sessions.clear_cookie())
            {
                response.headers_mut().insert(header::SET_COOKIE, clear);
            }
            Err(response)
        }
        Err(e) => Err(error_page(None, AuthError::Db(e).into())),
    }
}

/// For a POST that changes something: our origin, a live session and its CSRF token.
async fn require_form_session(
    req: &HttpRequest,
    dashboard: &Dashboard,
    csrf: Option<&str>,
) -> Result<Session, HttpResponse> {
    let session = require_session(req, dashboard).await?;
    if !dashboard
        .sessions
        .csrf_matches(&session, csrf.unwrap_or_default())
    {
        tracing::info!(customer_id = %session.customer.id, "form refused: missing or wrong CSRF token");
        return Err(forbidden(Some(&signed_in_view(&session))));
    }
    Ok(session)
}

/// A urlencoded form body (small forms only).
async fn read_small_form(payload: web::Payload) -> Result<HashMap<String, String>, HttpResponse> {
    let body = read_body(payload, SMALL_FORM_LIMIT)
        .await
        .map_err(|e| error_page(None, e))?;
    Ok(url::form_urlencoded::parse(&body).into_owned().collect())
}

fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

// ---- handlers --------------------------------------------------------------------------------

/// `GET /`: the advert form; signed in, it needs no API key (see `http::show_form`).
pub async fn form_page(req: &HttpRequest) -> HttpResponse {
    let signed_in = match req.app_data::<web::Data<Dashboard>>() {
        Some(dashboard) => match dashboard.sessions.current(req).await {
            Ok(session) => session.as_ref().map(signed_in_view),
            Err(e) => {
                tracing::warn!(error = %e, "session check failed; showing the form with the key field");
                None
            }
        },
        None => None,
    };
    html_page(
        StatusCode::OK,
        form_pages::form_page_for(&RawAdvert::default(), &[], None, signed_in.as_ref()),
    )
}

/// `GET /login`.
#[utoipa::path(
    get,
    path = "/login",
    tag = "dashboard",
    summary = "The sign-in page",
    description = "A form for the customer's API key. A browser already signed in is sent on to \
                   the dashboard.",
    security((), ("session" = [])),
    responses(
        (status = 200, description = "The sign-in form", body = String, content_type = "text/html"),
        (status = 303, description = "Already signed in: on to the dashboard",
            headers(("Location" = String, description = "`/dashboard`"))),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn login_form(req: HttpRequest, dashboard: web::Data<Dashboard>) -> HttpResponse {
    match dashboard.sessions.current(&req).await {
        Ok(Some(_)) => see_other("/dashboard"),
        Ok(None) => html_page(StatusCode::OK, pages::login_page(None)),
        Err(e) => error_page(None, AuthError::Db(e).into()),
    }
}

/// `POST /login`: a valid key starts a session; anything else shows the form again, 401.
#[utoipa::path(
    post,
    path = "/login",
    tag = "dashboard",
    summary = "Sign in",
    description = "The sign-in form's submission (urlencoded, at most 8 KiB). A valid API key \
                   starts a session: the `reklama_session` cookie (the `session` scheme) is set \
                   and the browser sent to the dashboard. A POST from another site (its \
                   `Origin` is not this service's, or `Sec-Fetch-Site: cross-site`) is refused. \
                   Every answer is for browsers, errors included: HTML pages, not the JSON error \
                   format.",
    request_body(content = SignInForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: on to the dashboard, with the session cookie",
            headers(
                ("Location" = String, description = "`/dashboard`"),
                ("Set-Cookie" = String, description = "The session: \
                    `reklama_session=...; Path=/; Max-Age=...; HttpOnly; SameSite=Lax` (and `Secure` over HTTPS)")
            )),
        (status = 400, description = "A broken body: an error page", body = String, content_type = "text/html"),
        (status = 401, description = "Unknown or revoked API key: the sign-in form again, saying so", body = String,
            content_type = "text/html"),
        (status = 403, description = "Sent from another site: a \"Request refused\" page", body = String,
            content_type = "text/html"),
        (status = 413, description = "The body is larger than 8 KiB: an error page", body = String, content_type = "text/html"),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn login(
    req: HttpRequest,
    payload: web::Payload,
    dashboard: web::Data<Dashboard>,
) -> HttpResponse {
    if !dashboard.sessions.origin_allowed(&req) {
        return forbidden(None);
    }
    let form = match read_small_form(payload).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let key = form.get("api_key").map(String::as_str).unwrap_or_default();
    match dashboard.sessions.sign_in(key).await {
        Ok((customer, value)) => {
            tracing::info!(customer_id = %customer.id, "signed in to the dashboard");
            let mut response = see_other("/dashboard");
            match HeaderValue::from_str(&dashboard.sessions.set_cookie(&value)) {
                Ok(cookie) => {
                    response.headers_mut().insert(header::SET_COOKIE, cookie);
                    response
                }
                Err(e) => error_page(None, crate::platform::http::log_internal(&e)),
            }
        }
        Err(AuthError::Rejected) => html_page(
            StatusCode::UNAUTHORIZED,
            pages::login_page(Some("This API key is unknown or revoked.")),
        ),
        Err(e) => error_page(None, e.into()),
    }
}

/// `POST /logout`.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "dashboard",
    summary = "Sign out",
    description = "The sign-out button (urlencoded, at most 8 KiB, with the session's CSRF token): \
                   clears the session cookie and sends the browser to the sign-in page. Refused \
                   when sent from another site or without the right token. Errors are HTML pages.",
    security(("session" = [])),
    request_body(content = SignOutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed out (or not signed in): to the sign-in page, the cookie cleared",
            headers(
                ("Location" = String, description = "`/login`"),
                ("Set-Cookie" = String, description = "`reklama_session=; Path=/; Max-Age=0; ...`, when a cookie was sent")
            )),
        (status = 400, description = "A broken body: an error page", body = String, content_type = "text/html"),
        (status = 403, description = "Sent from another site, or the CSRF token is missing or wrong: a \
            \"Request refused\" page", body = String, content_type = "text/html"),
        (status = 413, description = "The body is larger than 8 KiB: an error page", body = String, content_type = "text/html"),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn logout(
    req: HttpRequest,
    payload: web::Payload,
    dashboard: web::Data<Dashboard>,
) -> HttpResponse {
    if !dashboard.sessions.origin_allowed(&req) {
        return forbidden(None);
    }
    let form = match read_small_form(payload).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let session =
        match require_form_session(&req, &dashboard, form.get("csrf_token").map(String::as_str))
            .await
        {
            Ok(session) => session,
            Err(response) => return response,
        };
    if let Err(e) = dashboard.sessions.sign_out(&session).await {
        return error_page(None, AuthError::Db(e).into());
    }
    tracing::info!(customer_id = %session.customer.id, "signed out of the dashboard");
    let mut response = see_other("/login");
    if let Ok(clear) = HeaderValue::from_str(&dashboard.sessions.clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, clear);
    }
    response
}

/// `GET /dashboard`: the customer's adverts, newest first, with their counts.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "dashboard",
    summary = "The customer's adverts",
    description = "The signed-in customer's adverts, newest first, 50 a page, each with its \
                   clicks, impressions and CTR (left out while the counters cannot answer) and a \
                   pause/resume button; above them the sign-out button.",
    security(("session" = [])),
    params(("before" = Option<i64>, Query,
        description = "Only adverts with a smaller id: the previous page's last one (the page's \"Older\" link)")),
    responses(
        (status = 200, description = "The list", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in, or the session has ended (expired or its key revoked): to the \
            sign-in page, clearing a stale cookie",
            headers(
                ("Location" = String, description = "`/login`"),
                ("Set-Cookie" = String, description = "Clears the cookie, when a stale one was sent")
            )),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn dashboard_page(
    req: HttpRequest,
    dashboard: web::Data<Dashboard>,
    service: web::Data<IntakeService>,
) -> HttpResponse {
    let session = match require_session(&req, &dashboard).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let signed_in = signed_in_view(&session);
    let before = query_param(&req, "before")
        .and_then(|v| v.parse().ok())
        .map(AdvertId);
    let adverts = match service.list(session.customer.id, before, PAGE_SIZE).await {
        Ok(adverts) => adverts,
        Err(e) => return error_page(Some(&signed_in), e.into()),
    };
    let totals = match dashboard.statistics.totals(session.customer.id).await {
        Ok(totals) => Some(totals.into_iter().collect::<HashMap<_, _>>()),
        Err(e) => {
            tracing::warn!(error = %e, "dashboard shown without counts");
            None
        }
    };
    let next_before = (i64::try_from(adverts.len()).unwrap_or(0) == PAGE_SIZE)
        .then(|| adverts.last().map(|a| a.id))
        .flatten();
    let rows: Vec<pages::Row> = adverts
        .into_iter()
        .map(|a| pages::Row {
            counts: totals
                .as_ref()
                .map(|t| t.get(&a.id).copied().unwrap_or_default()),
            id: a.id,
            title: a.title.as_str().to_owned(),
            status: a.status,
            created_at: a.created_at,
        })
        .collect();
    html_page(
        StatusCode::OK,
        pages::dashboard_page(&signed_in, &rows, before.is_some(), next_before),
    )
}

/// `GET /dashboard/adverts/{id}`: one advert of the customer's, with its link, QR code and chart.
#[utoipa::path(
    get,
    path = "/dashboard/adverts/{id}",
    tag = "dashboard",
    summary = "One advert's page",
    description = "One of the customer's adverts: its creative, the tracked link with a copy \
                   button and a QR code, its all-time counts and a chart of clicks and \
                   impressions (the last 48 hours or 30 days), and the CSV download. The counts \
                   are left out while the counters cannot answer. The only dashboard page that \
                   runs a script (`/assets/dashboard.js`, allowed by its Content-Security-Policy).",
    security(("session" = [])),
    params(
        ("id" = i64, Path, description = "The advert's id"),
        ("granularity" = Option<String>, Query, description = "The chart's buckets: `hour` (the last 48, the \
            default) or `day` (the last 30)", example = "day"),
        ("created" = Option<String>, Query, description = "Present (any value): the page says the advert was \
            just created")
    ),
    responses(
        (status = 200, description = "The advert's page", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in, or the session has ended: to the sign-in page, clearing a \
            stale cookie",
            headers(
                ("Location" = String, description = "`/login`"),
                ("Set-Cookie" = String, description = "Clears the cookie, when a stale one was sent")
            )),
        (status = 400, description = "`granularity` is neither `hour` nor `day`: an error page", body = String,
            content_type = "text/html"),
        (status = 404, description = "No such advert among the customer's (another customer's, deleted, or not an \
            id): a \"Not found\" page", body = String, content_type = "text/html"),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn advert_page(
    req: HttpRequest,
    id: web::Path<String>,
    dashboard: web::Data<Dashboard>,
    service: web::Data<IntakeService>,
    urls: web::Data<PublicUrls>,
    catalogue: web::Data<crate::domain::placement::Catalogue>,
) -> HttpResponse {
    let session = match require_session(&req, &dashboard).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let signed_in = signed_in_view(&session);
    let Some(id) = parse_id(&id) else {
        return not_found(Some(&signed_in));
    };
    let granularity = match query_param(&req, "granularity") {
        None => Granularity::Hour,
        Some(raw) => match Granularity::parse(&raw) {
            Some(g) => g,
            None => {
                return error_page(
                    Some(&signed_in),
                    HttpError::bad_request("invalid_query", "granularity must be hour or day"),
                );
            }
        },
    };
    let advert = match service.get(session.customer.id, id).await {
        Ok(advert) => advert,
        Err(IntakeError::NotFound) => return not_found(Some(&signed_in)),
        Err(e) => return error_page(Some(&signed_in), e.into()),
    };
    let view = AdvertView::new(advert, &urls);
    let (from, to) = chart_window(granularity, OffsetDateTime::now_utc().unix_timestamp());
    // One call gives both the all-time totals and the chart's window.
    let statistics = match dashboard
        .statistics
        .series(session.customer.id, id, granularity, 0, to)
        .await
    {
        Ok(series) => {
            let mut totals = AdvertCounts::default();
            for point in &series {
                totals.add(&point.counts);
            }
            let buckets = chart::fill(&series, from, granularity);
            Ok((totals, buckets))
        }
        Err(StatisticsError::NotFound) => return not_found(Some(&signed_in)),
        Err(e) => Err(HttpError::from(e).message),
    };
    // Left out when the counts cannot be read: the totals above already say why.
    let placement_counts = if statistics.is_ok() {
        dashboard
            .statistics
            .placements(session.customer.id, id)
            .await
            .ok()
    } else {
        None
    };
    let qr = pages::qr_svg(&view.tracked_url);
    let created = query_param(&req, "created").is_some();
    let variants = match service.variants(session.customer.id, id).await {
        Ok(rows) => super::variants::http::views(id, &rows, &catalogue, &urls),
        Err(e) => return error_page(Some(&signed_in), e.into()),
    };
    let mut response = html_page(
        StatusCode::OK,
        pages::advert_page(&pages::AdvertPage {
            signed_in: &signed_in,
            advert: &view,
            granularity,
            statistics: statistics.as_ref().map(|(t, b)| (t, b.as_slice())),
            qr: qr.as_deref(),
            created,
            variants: &variants,
            placement_counts: placement_counts.as_deref(),
        }),
    );
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SCRIPT_PAGE_CSP),
    );
    response
}

/// The chart's `[from, to)`: the last 48 hours or 30 days, the current bucket included.
fn chart_window(granularity: Granularity, now: i64) -> (i64, i64) {
    let step = granularity.seconds();
    let to = (now.div_euclid(step) + 1) * step;
    (to - chart_buckets(granularity) * step, to)
}

fn parse_id(raw: &str) -> Option<AdvertId> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).map(AdvertId)
}

/// `POST /dashboard/adverts/{id}/status`: pause or resume, then back to the page it came from.
#[utoipa::path(
    post,
    path = "/dashboard/adverts/{id}/status",
    tag = "dashboard",
    summary = "Pause or resume an advert",
    description = "The pause/resume button (urlencoded, at most 8 KiB, with the session's CSRF \
                   token). Every instance follows within a second, as with the API. Refused when \
                   sent from another site or without the right token. Errors are HTML pages.",
    security(("session" = [])),
    params(("id" = i64, Path, description = "The advert's id")),
    request_body(content = StatusForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Changed: back to the advert's page when `return_to` names it, otherwise to \
            the dashboard. Not signed in, or the session has ended: to the sign-in page",
            headers(
                ("Location" = String, description = "`/dashboard/adverts/{id}`, `/dashboard` or `/login`"),
                ("Set-Cookie" = String, description = "Clears the cookie, when a stale one was sent")
            )),
        (status = 400, description = "`status` is neither `active` nor `paused`, or a broken body: an error page",
            body = String, content_type = "text/html"),
        (status = 403, description = "Sent from another site, or the CSRF token is missing or wrong: a \
            \"Request refused\" page", body = String, content_type = "text/html"),
        (status = 404, description = "No such advert among the customer's: a \"Not found\" page", body = String,
            content_type = "text/html"),
        (status = 413, description = "The body is larger than 8 KiB: an error page", body = String, content_type = "text/html"),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn set_status(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    dashboard: web::Data<Dashboard>,
    service: web::Data<IntakeService>,
) -> HttpResponse {
    if !dashboard.sessions.origin_allowed(&req) {
        return forbidden(None);
    }
    let form = match read_small_form(payload).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let session =
        match require_form_session(&req, &dashboard, form.get("csrf_token").map(String::as_str))
            .await
        {
            Ok(session) => session,
            Err(response) => return response,
        };
    let signed_in = signed_in_view(&session);
    let Some(id) = parse_id(&id) else {
        return not_found(Some(&signed_in));
    };
    let status = match form.get("status").map(|s| AdvertStatus::parse(s)) {
        Some(Ok(status)) => status,
        _ => {
            return error_page(
                Some(&signed_in),
                HttpError::bad_request("validation_failed", "status must be active or paused"),
            );
        }
    };
    let patch = PatchRequest {
        patch: AdvertPatch {
            status: Some(status),
            ..AdvertPatch::default()
        },
        image: None,
    };
    match service.update(session.customer.id, id, patch).await {
        Ok(_) => {}
        Err(IntakeError::NotFound) => return not_found(Some(&signed_in)),
        Err(e) => return error_page(Some(&signed_in), e.into()),
    }
    // Only back to one of our own pages, never to an address taken from the form as it is.
    let advert_page = format!("/dashboard/adverts/{id}");
    let back = match form.get("return_to").map(String::as_str) {
        Some(path) if path == advert_page => advert_page.as_str(),
        _ => "/dashboard",
    };
    see_other(back)
}

/// `POST /dashboard/adverts`: the advert form of a signed-in customer (multipart, no API key;
/// the CSRF token is a part of the form).
#[utoipa::path(
    post,
    path = "/dashboard/adverts",
    tag = "dashboard",
    summary = "Submit the advert form, signed in",
    description = "The advert form of a signed-in customer (`GET /` shows it without the API key \
                   field): multipart/form-data with the session's CSRF token as a part. The \
                   advert is checked and created as by `POST /adverts`, and the browser sent to \
                   its page. Refused when sent from another site or without the right token. \
                   Errors are HTML pages: the form again with each error beside its field, or an \
                   error page.",
    security(("session" = [])),
    request_body(content = DashboardAdvertUpload, content_type = "multipart/form-data"),
    responses(
        (status = 303, description = "Created: to the advert's page. Not signed in, or the session has ended: to \
            the sign-in page",
            headers(
                ("Location" = String, description = "`/dashboard/adverts/{id}?created=1`, or `/login`"),
                ("Set-Cookie" = String, description = "Clears the cookie, when a stale one was sent")
            )),
        (status = 400, description = "Not multipart, or a malformed body: the form again (or an error page)",
            body = String, content_type = "text/html"),
        (status = 403, description = "Sent from another site, or the CSRF token is missing or wrong: a \
            \"Request refused\" page", body = String, content_type = "text/html"),
        (status = 413, description = "The body, the image or a field is too large: an error page or the form again",
            body = String, content_type = "text/html"),
        (status = 415, description = "Not a JPEG, PNG, WebP or GIF: the form again", body = String, content_type = "text/html"),
        (status = 422, description = "Invalid fields: the form again", body = String, content_type = "text/html"),
        (status = 500, description = "Internal error: the form again", body = String, content_type = "text/html"),
        (status = 503, description = "A backend is down: the form again (or an error page), with `Retry-After`",
            body = String, content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn submit_advert(
    req: HttpRequest,
    payload: web::Payload,
    dashboard: web::Data<Dashboard>,
    service: web::Data<IntakeService>,
    limit: web::Data<BodyLimit>,
) -> HttpResponse {
    if !dashboard.sessions.origin_allowed(&req) {
        return forbidden(None);
    }
    let session = match require_session(&req, &dashboard).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let signed_in = signed_in_view(&session);
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !is_multipart {
        return form_error(
            &signed_in,
            &RawAdvert::default(),
            IntakeError::MalformedBody(
                "the form must be sent as multipart/form-data: please use the form on this page"
                    .into(),
            ),
        );
    }
    // The token is checked before the advert is looked at, so the body is read once into
    // memory (bounded like every body) and parsed twice.
    let body = match read_body(payload, limit.0).await {
        Ok(body) => web::Bytes::from(body),
        Err(e) => return error_page(Some(&signed_in), e),
    };
    let token = csrf_part(&req, body.clone()).await;
    if !dashboard
        .sessions
        .csrf_matches(&session, token.as_deref().unwrap_or_default())
    {
        tracing::info!(customer_id = %session.customer.id, "advert form refused: missing or wrong CSRF token");
        return forbidden(Some(&signed_in));
    }
    let mut raw = RawAdvert::default();
    if let Err(e) = raw
        .read_multipart(buffered_multipart(&req, body), service.max_image_bytes())
        .await
    {
        return form_error(&signed_in, &raw, e);
    }
    raw.api_key = None;
    match service.create(&session.customer, raw.clone()).await {
        Ok(advert) => see_other(&format!("/dashboard/adverts/{}?created=1", advert.id)),
        Err(e) => form_error(&signed_in, &raw, e),
    }
}

fn form_error(signed_in: &SignedIn, raw: &RawAdvert, error: IntakeError) -> HttpResponse {
    let fields = error.field_errors();
    let http = HttpError::from(error);
    let notice = fields.is_empty().then_some(http.message.as_str());
    let mut response = html_page(
        http.status,
        form_pages::form_page_for(raw, &fields, notice, Some(signed_in)),
    );
    if let Some(secs) = http.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A multipart reader over a body already in memory, fed in network-sized chunks.
fn buffered_multipart(req: &HttpRequest, body: web::Bytes) -> actix_multipart::Multipart {
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

/// `GET /dashboard/adverts/{id}/report.csv`: every hour (or day) of the advert, as the API's CSV.
#[utoipa::path(
    get,
    path = "/dashboard/adverts/{id}/report.csv",
    tag = "dashboard",
    summary = "Download an advert's report",
    description = "The advert's counts over its whole life, a row per hour (or day), in the CSV \
                   columns of `GET /api/v1/adverts/{id}/report`: \
                   `bucket,clicks,bot_clicks,duplicate_clicks,impressions`, `bucket` in RFC 3339 \
                   (UTC). Errors are HTML pages.",
    security(("session" = [])),
    params(
        ("id" = i64, Path, description = "The advert's id"),
        ("granularity" = Option<String>, Query, description = "`hour` (the default) or `day`; anything else \
            counts as `hour`", example = "day")
    ),
    responses(
        (status = 200, description = "The report, as a download", body = String, content_type = "text/csv",
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"advert-{id}-{granularity}.csv\"`"))),
        (status = 303, description = "Not signed in, or the session has ended: to the sign-in page, clearing a \
            stale cookie",
            headers(
                ("Location" = String, description = "`/login`"),
                ("Set-Cookie" = String, description = "Clears the cookie, when a stale one was sent")
            )),
        (status = 404, description = "No such advert among the customer's: a \"Not found\" page", body = String,
            content_type = "text/html"),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database or the counters cannot answer: an error page, with \
            `Retry-After`", body = String, content_type = "text/html",
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn report_csv(
    req: HttpRequest,
    id: web::Path<String>,
    dashboard: web::Data<Dashboard>,
) -> HttpResponse {
    let session = match require_session(&req, &dashboard).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let signed_in = signed_in_view(&session);
    let Some(id) = parse_id(&id) else {
        return not_found(Some(&signed_in));
    };
    let granularity = query_param(&req, "granularity")
        .and_then(|g| Granularity::parse(&g))
        .unwrap_or(Granularity::Hour);
    let series = match dashboard
        .statistics
        .series(session.customer.id, id, granularity, 0, END_OF_TIME)
        .await
    {
        Ok(series) => series,
        Err(StatisticsError::NotFound) => return not_found(Some(&signed_in)),
        Err(e) => return error_page(Some(&signed_in), e.into()),
    };
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"advert-{id}-{}.csv\"",
                granularity.as_str()
            ),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(to_csv(&series))
}

/// The API's CSV columns: `bucket,clicks,bot_clicks,duplicate_clicks,impressions`.
fn to_csv(series: &[SeriesPoint]) -> String {
    let mut out = String::from("bucket,clicks,bot_clicks,duplicate_clicks,impressions\n");
    for point in series {
        let bucket = OffsetDateTime::from_unix_timestamp(point.start)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let c = &point.counts;
        out.push_str(&format!(
            "{bucket},{},{},{},{}\n",
            c.clicks, c.bot_clicks, c.duplicate_clicks, c.impressions
        ));
    }
    out
}

/// `GET /assets/dashboard.js`: the copy button.
#[utoipa::path(
    get,
    path = "/assets/dashboard.js",
    tag = "dashboard",
    summary = "The dashboard's script",
    description = "The tracked link's copy button on an advert's page: the only script of the \
                   dashboard, served by this binary.",
    responses((status = 200, description = "JavaScript", body = String, content_type = "text/javascript"))
)]
async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(SCRIPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_ends_with_the_current_bucket() {
        let now = 10 * 86_400 + 5 * 3600 + 17;
        assert_eq!(
            chart_window(Granularity::Hour, now),
            (10 * 86_400 + 6 * 3600 - 48 * 3600, 10 * 86_400 + 6 * 3600)
        );
        assert_eq!(
            chart_window(Granularity::Day, now),
            (11 * 86_400 - 30 * 86_400, 11 * 86_400)
        );
    }

    #[test]
    fn csv_has_the_api_columns() {
        let series = [SeriesPoint {
            start: 3600,
            counts: AdvertCounts {
                clicks: 3,
                bot_clicks: 1,
                duplicate_clicks: 2,
                impressions: 9,
            },
        }];
        assert_eq!(
            to_csv(&series),
            "bucket,clicks,bot_clicks,duplicate_clicks,impressions\n\
             1970-01-01T01:00:00Z,3,1,2,9\n"
        );
    }

    #[test]
    fn ids_are_positive_integers() {
        assert_eq!(parse_id("12"), Some(AdvertId(12)));
        assert_eq!(parse_id("0"), None);
        assert_eq!(parse_id("x"), None);
    }
}

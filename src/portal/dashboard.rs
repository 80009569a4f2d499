//! The customer dashboard: sign-in with the API key (a signed session cookie), the list of the
//! customer's adverts with their counts and a pause/resume button, each advert's page (creative,
//! tracked link with a copy button and a QR code, a chart of clicks and impressions, placements),
//! and the advert form of a signed-in customer. Counts come straight from tracking.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::domain::advert::AdvertPatch;
use crate::domain::creative::{CreativeId, CreativeStatus};
use crate::domain::{AdvertId, AdvertStatus, Granularity};
use crate::modules::intake::{
    AdvertUpload, AdvertView, IntakeError, PatchRequest, RawAdvert, is_multipart,
};
use crate::modules::tracking::{Breakdown, END_OF_TIME, TrackingError};
use crate::platform::auth::AuthError;
use crate::platform::http::{HttpError, html_page, read_body};

use super::Portal;
use super::session::{
    PageError, SignedIn, WithCsrf, buffered_multipart, parse_id, query_param, read_form, see_other,
};
use super::templates::{chart, dashboard as pages};

/// Adverts on one page of the dashboard.
const PAGE_SIZE: i64 = 50;
/// The advert page runs the copy button's script (ours only); every other page runs none.
const SCRIPT_PAGE_CSP: &str = "default-src 'none'; script-src 'self'; img-src 'self'; \
                               style-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                               base-uri 'none'";

// ---- the forms -------------------------------------------------------------------------------

/// `POST /login`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(description = "The sign-in form, urlencoded.")]
pub(super) struct SignInForm {
    /// The customer's API key, `rk_<id>_<secret>`, as printed once by `reklama customer add`.
    #[schema(example = "rk_1_...")]
    #[serde(default)]
    api_key: String,
}

/// `POST /logout`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(description = "The sign-out button's form, urlencoded.")]
pub(super) struct SignOutForm {
    /// The session's CSRF token, the hidden `csrf_token` field of every dashboard form. It is
    /// derived from the session cookie, so another site cannot know it; missing or wrong: 403.
    #[serde(default)]
    csrf_token: Option<String>,
}

/// `POST /dashboard/adverts/{id}/creatives/{creative_id}/status`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(description = "A creative's pause, pin and resume buttons' form, urlencoded.")]
pub(super) struct CreativeStatusForm {
    /// The session's CSRF token; missing or wrong: 403.
    #[serde(default)]
    csrf_token: Option<String>,
    /// The creative's new status.
    #[schema(schema_with = CreativeStatus::settable_schema)]
    #[serde(default)]
    status: Option<String>,
}

impl WithCsrf for CreativeStatusForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// `POST /dashboard/adverts/{id}/status`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(description = "The pause/resume button's form, urlencoded.")]
pub(super) struct StatusForm {
    /// The session's CSRF token, the hidden `csrf_token` field of every dashboard form. It is
    /// derived from the session cookie, so another site cannot know it; missing or wrong: 403.
    #[serde(default)]
    csrf_token: Option<String>,
    /// The advert's new status.
    #[schema(schema_with = AdvertStatus::settable_schema)]
    #[serde(default)]
    status: Option<String>,
    /// Where to go afterwards: the advert's own page (`/dashboard/adverts/{id}`); anything else,
    /// or nothing, goes to `/dashboard`.
    #[schema(example = "/dashboard/adverts/1")]
    #[serde(default)]
    return_to: Option<String>,
}

impl WithCsrf for SignOutForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

impl WithCsrf for StatusForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// `POST /dashboard/adverts`, for the OpenAPI document only: the body is read as
/// [`AdvertUpload`] is, after its `csrf_token` part is checked.
#[derive(utoipa::ToSchema)]
#[schema(
    description = "The advert form of a signed-in customer as multipart/form-data: the parts of \
                   `AdvertUpload` (`api_key` is ignored: the session says who sends it) and the \
                   session's CSRF token as a text part `csrf_token`."
)]
#[expect(dead_code, reason = "documentation only, never built")]
pub(super) struct DashboardAdvertUpload {
    /// The session's CSRF token, the hidden `csrf_token` field of every dashboard form. It is
    /// derived from the session cookie, so another site cannot know it; missing or wrong: 403.
    csrf_token: String,
    #[serde(flatten)]
    advert: AdvertUpload,
}

// ---- handlers --------------------------------------------------------------------------------

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
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
        "/dashboard/adverts/{id}/creatives/{creative_id}/status",
        web::post().to(set_creative_status),
    )
    .route(
        "/dashboard/adverts/{id}/report.csv",
        web::get().to(report_csv),
    );
}

/// The dashboard's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    login_form,
    login,
    logout,
    dashboard_page,
    submit_advert,
    advert_page,
    set_status,
    set_creative_status,
    report_csv
))]
pub(super) struct ApiDoc;

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
async fn login_form(
    req: HttpRequest,
    portal: web::Data<Portal>,
) -> Result<HttpResponse, PageError> {
    match portal.sessions().current(&req).await {
        Ok(Some(_)) => Ok(see_other("/dashboard")),
        Ok(None) => Ok(html_page(StatusCode::OK, pages::login_page(None))),
        Err(e) => Err(PageError::anonymous(AuthError::Db(e))),
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
    portal: web::Data<Portal>,
) -> Result<HttpResponse, PageError> {
    portal.same_origin(&req)?;
    let form: SignInForm = read_form(payload).await?;
    match portal.sessions().sign_in(&form.api_key).await {
        Ok((customer, value)) => {
            tracing::info!(customer_id = %customer.id, "signed in to the dashboard");
            let cookie = HeaderValue::from_str(&portal.sessions().set_cookie(&value))
                .map_err(|e| PageError::anonymous(crate::platform::http::log_internal(&e)))?;
            let mut response = see_other("/dashboard");
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            Ok(response)
        }
        Err(AuthError::Rejected) => Ok(html_page(
            StatusCode::UNAUTHORIZED,
            pages::login_page(Some("This API key is unknown or revoked.")),
        )),
        Err(e) => Err(PageError::anonymous(e)),
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
    portal: web::Data<Portal>,
) -> Result<HttpResponse, PageError> {
    let (session, _form) = portal
        .form_session_any_scope::<SignOutForm>(&req, payload)
        .await?;
    // Ended on the server, so a copied cookie opens nothing on any instance afterwards.
    portal
        .sessions()
        .sign_out(&session)
        .await
        .map_err(|e| PageError::anonymous(AuthError::Db(e)))?;
    tracing::info!(customer_id = %session.customer.id, "signed out of the dashboard");
    let mut response = see_other("/login");
    if let Ok(clear) = HeaderValue::from_str(&portal.sessions().clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, clear);
    }
    Ok(response)
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
    signed_in: SignedIn,
    portal: web::Data<Portal>,
) -> Result<HttpResponse, PageError> {
    let customer = signed_in.customer.id;
    let before = query_param(&req, "before")
        .and_then(|v| v.parse().ok())
        .map(AdvertId);
    let adverts = portal
        .intake
        .list(customer, before, PAGE_SIZE)
        .await
        .map_err(|e| signed_in.fail(e))?;
    let totals = match portal.tracking.summary(customer).await {
        Ok(totals) => Some(
            totals
                .into_iter()
                .map(|t| (t.advert_id, t.counts))
                .collect::<HashMap<_, _>>(),
        ),
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
    Ok(html_page(
        StatusCode::OK,
        pages::dashboard_page(&signed_in, &rows, before.is_some(), next_before),
    ))
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
    signed_in: SignedIn,
    portal: web::Data<Portal>,
) -> Result<HttpResponse, PageError> {
    let customer = signed_in.customer.id;
    let id = parse_id(&id).ok_or_else(|| signed_in.not_found())?;
    let granularity = match query_param(&req, "granularity") {
        None => Granularity::Hour,
        Some(raw) => Granularity::parse(&raw).ok_or_else(|| {
            signed_in.fail(HttpError::bad_request(
                "invalid_query",
                "granularity must be hour or day",
            ))
        })?,
    };
    let advert = match portal.intake.get(customer, id).await {
        Ok(advert) => advert,
        Err(IntakeError::NotFound) => return Err(signed_in.not_found()),
        Err(e) => return Err(signed_in.fail(e)),
    };
    let view = AdvertView::new(advert, &portal.urls);
    let (from, to) = chart::window(granularity, OffsetDateTime::now_utc().unix_timestamp());
    // One report gives the all-time totals, the chart's window and the placements' shares.
    let report = match portal
        .tracking
        .report(
            customer,
            id,
            granularity,
            Breakdown {
                placement: true,
                creative: true,
                device: true,
                country: true,
            },
            0,
            to,
        )
        .await
    {
        Ok(report) => Ok(report),
        Err(TrackingError::NotFound) => return Err(signed_in.not_found()),
        Err(e) => Err(HttpError::from(e).message),
    };
    let buckets = report
        .as_ref()
        .map(|r| chart::fill(&r.series, from, granularity))
        .unwrap_or_default();
    let variants = portal
        .intake
        .variants(customer, id)
        .await
        .map(|rows| portal.variant_views(id, &rows))
        .map_err(|e| signed_in.fail(e))?;
    let creatives = portal
        .intake
        .creatives(customer, id)
        .await
        .map_err(|e| signed_in.fail(e))?;
    let qr = pages::qr_svg(&view.tracked_url);
    let mut response = html_page(
        StatusCode::OK,
        pages::advert_page(&pages::AdvertPage {
            signed_in: &signed_in,
            advert: &view,
            granularity,
            statistics: report.as_ref().map(|r| (&r.counts, buckets.as_slice())),
            reach: report.as_ref().ok().map(|r| r.reach),
            conversions: report
                .as_ref()
                .ok()
                .map(|r| (&r.converted, r.currencies.as_slice())),
            qr: qr.as_deref(),
            created: query_param(&req, "created").is_some(),
            variants: &variants,
            placement_counts: report.as_ref().ok().and_then(|r| r.placements.as_deref()),
            creatives: &creatives,
            creative_counts: report.as_ref().ok().and_then(|r| r.creatives.as_deref()),
            device_counts: report.as_ref().ok().and_then(|r| r.devices.as_deref()),
            country_counts: report.as_ref().ok().and_then(|r| r.countries.as_deref()),
        }),
    );
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SCRIPT_PAGE_CSP),
    );
    Ok(response)
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
    portal: web::Data<Portal>,
) -> Result<HttpResponse, PageError> {
    let (session, form) = portal
        .write_form_session::<StatusForm>(&req, payload)
        .await?;
    let signed_in = SignedIn::of(&session);
    let id = parse_id(&id).ok_or_else(|| signed_in.not_found())?;
    let status = form
        .status
        .as_deref()
        .and_then(|s| AdvertStatus::parse(s).ok())
        .ok_or_else(|| {
            signed_in.fail(HttpError::bad_request(
                "validation_failed",
                "status must be active or paused",
            ))
        })?;
    let patch = PatchRequest {
        patch: AdvertPatch {
            status: Some(status),
            ..AdvertPatch::default()
        },
        images: None,
    };
    match portal.intake.update(signed_in.customer.id, id, patch).await {
        Ok(_) => {}
        Err(IntakeError::NotFound) => return Err(signed_in.not_found()),
        Err(e) => return Err(signed_in.fail(e)),
    }
    // Only back to one of our own pages, never to an address taken from the form as it is.
    let advert_page = format!("/dashboard/adverts/{id}");
    let back = match form.return_to.as_deref() {
        Some(path) if path == advert_page => advert_page.as_str(),
        _ => "/dashboard",
    };
    Ok(see_other(back))
}

/// `POST /dashboard/adverts/{id}/creatives/{creative_id}/status`: pause, pin or resume one
/// creative, then back to the advert's page.
#[utoipa::path(
    post,
    path = "/dashboard/adverts/{id}/creatives/{creative_id}/status",
    tag = "dashboard",
    summary = "Pause, pin or resume a creative",
    description = "The buttons of the advert page's creatives table (urlencoded, at most 8 KiB, \
                   with the session's CSRF token); the same change as `PATCH \
                   /api/v1/adverts/{id}/creatives/{creative_id}`. Errors are HTML pages.",
    security(("session" = [])),
    params(
        ("id" = i64, Path, description = "The advert's id"),
        ("creative_id" = u32, Path, description = "The creative's number")
    ),
    request_body(content = CreativeStatusForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Changed: back to the advert's page. Not signed in, or the session has \
            ended: to the sign-in page",
            headers(
                ("Location" = String, description = "`/dashboard/adverts/{id}#creatives-heading`, or `/login`"),
                ("Set-Cookie" = String, description = "Clears the cookie, when a stale one was sent")
            )),
        (status = 400, description = "`status` is not `active`, `paused` or `pinned`, or a broken body: an error page",
            body = String, content_type = "text/html"),
        (status = 403, description = "Sent from another site, or the CSRF token is missing or wrong: a \
            \"Request refused\" page", body = String, content_type = "text/html"),
        (status = 404, description = "No such advert among the customer's, or no such creative: a \"Not found\" \
            page", body = String, content_type = "text/html"),
        (status = 409, description = "The creative is retired, or nothing would be left to serve: an error page",
            body = String, content_type = "text/html"),
        (status = 413, description = "The body is larger than 8 KiB: an error page", body = String, content_type = "text/html"),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn set_creative_status(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    portal: web::Data<Portal>,
) -> Result<HttpResponse, PageError> {
    let (session, form) = portal
        .write_form_session::<CreativeStatusForm>(&req, payload)
        .await?;
    let signed_in = SignedIn::of(&session);
    let (id, creative) = path.into_inner();
    let id = parse_id(&id).ok_or_else(|| signed_in.not_found())?;
    let creative = creative
        .parse::<u32>()
        .map(CreativeId)
        .map_err(|_| signed_in.not_found())?;
    let status = form
        .status
        .as_deref()
        .and_then(|s| CreativeStatus::parse(s).ok())
        .ok_or_else(|| {
            signed_in.fail(HttpError::bad_request(
                "validation_failed",
                "status must be active, paused or pinned",
            ))
        })?;
    match portal
        .intake
        .set_creative_status(signed_in.customer.id, id, creative, status)
        .await
    {
        Ok(_) => {
            let advert_page = format!("/dashboard/adverts/{id}");
            Ok(see_other(&(advert_page + "#creatives-heading")))
        }
        Err(IntakeError::NotFound | IntakeError::NoCreative) => Err(signed_in.not_found()),
        Err(e) => Err(signed_in.fail(e)),
    }
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
    portal: web::Data<Portal>,
) -> Result<HttpResponse, PageError> {
    let session = portal.upload_session(&req).await?;
    if !is_multipart(&req) {
        let signed_in = SignedIn::of(&session);
        return Err(super::form::form_error(
            Some(&signed_in),
            &RawAdvert::default(),
            super::form::not_multipart(),
        ));
    }
    // The token is checked before the advert is looked at, so the body is read once into
    // memory (bounded like every body) and parsed twice.
    let body = read_body(payload, portal.max_body_bytes)
        .await
        .map(web::Bytes::from)
        .map_err(|e| SignedIn::of(&session).fail(e))?;
    let signed_in = portal.check_csrf_part(&req, &session, body.clone()).await?;
    let mut raw = RawAdvert::default();
    if let Err(e) = raw
        .read_multipart(
            buffered_multipart(&req, body),
            portal.intake.max_image_bytes(),
        )
        .await
    {
        return Err(super::form::form_error(Some(&signed_in), &raw, e));
    }
    raw.api_key = None;
    match portal.intake.create(&session.customer, raw.clone()).await {
        Ok(advert) => Ok(see_other(&format!(
            "/dashboard/adverts/{}?created=1",
            advert.id
        ))),
        Err(e) => Err(super::form::form_error(Some(&signed_in), &raw, e)),
    }
}

/// `GET /dashboard/adverts/{id}/report.csv`: every hour (or day) of the advert, as the API's CSV.
#[utoipa::path(
    get,
    path = "/dashboard/adverts/{id}/report.csv",
    tag = "dashboard",
    summary = "Download an advert's report",
    description = "The advert's counts over its whole life, a row per hour (or day), in the CSV \
                   columns of `GET /api/v1/adverts/{id}/report`: \
                   `bucket,clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,suspicious_impressions`, `bucket` in RFC 3339 \
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
    signed_in: SignedIn,
    portal: web::Data<Portal>,
) -> Result<HttpResponse, PageError> {
    let id = parse_id(&id).ok_or_else(|| signed_in.not_found())?;
    let granularity = query_param(&req, "granularity")
        .and_then(|g| Granularity::parse(&g))
        .unwrap_or(Granularity::Hour);
    let report = match portal
        .tracking
        .report(
            signed_in.customer.id,
            id,
            granularity,
            Breakdown::default(),
            0,
            END_OF_TIME,
        )
        .await
    {
        Ok(report) => report,
        Err(TrackingError::NotFound) => return Err(signed_in.not_found()),
        Err(e) => return Err(signed_in.fail(e)),
    };
    Ok(HttpResponse::Ok()
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
        .body(crate::modules::tracking::to_csv(&report)))
}

//! Tracking's endpoints: the redirect (hot path) and the reports.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, guard, web};
use serde::{Deserialize, Serialize};

use crate::domain::AdvertId;
use crate::platform::auth::Customer;
use crate::platform::http::{FieldError, HttpError};

use super::counters::Metric;
use super::links::Link;
use super::report::{self, Granularity};
use super::visitors::{ClickKind, is_prefetch};
use super::{TrackingError, TrackingService};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/r/{code}",
        web::route()
            .guard(guard::Any(guard::Get()).or(guard::Head()))
            .to(follow_link),
    )
    .route("/api/v1/adverts/{id}/report", web::get().to(advert_report))
    .route("/api/v1/reports", web::get().to(customer_report));
}

const GONE_BODY: &str = "This advert is no longer available.\n";
const UNKNOWN_BODY: &str = "No such link.\n";

/// `GET|HEAD /r/{code}`: redirect to the advert's stored target and count the click.
async fn follow_link(req: HttpRequest, tracking: web::Data<TrackingService>) -> HttpResponse {
    let code = req.match_info().get("code").unwrap_or_default();
    let link = match tracking.links.resolve(code).await {
        Ok(link) => link,
        Err(e) => {
            tracing::warn!(error = %e, "link lookup failed");
            return HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, HeaderValue::from_static("5")))
                .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
                .finish();
        }
    };
    match &*link {
        Link::Live { advert, location } => {
            if req.method() != Method::HEAD && !is_prefetch(&req) {
                let visitor = impression_token(req.query_string())
                    .and_then(|token| tracking.hooks.visitor(token, *advert));
                let metric = match tracking.visitors.classify(&req, *advert, visitor) {
                    ClickKind::Billable => {
                        tracking.hooks.clicked(*advert, visitor);
                        Metric::Click
                    }
                    ClickKind::Bot => Metric::BotClick,
                    ClickKind::Duplicate => Metric::DuplicateClick,
                };
                tracking.pipeline.record(*advert, metric);
            }
            HttpResponse::build(tracking.redirect_status)
                .insert_header((header::LOCATION, location.clone()))
                // A cached redirect would be a click nobody counts.
                .insert_header((
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, no-store"),
                ))
                .insert_header((header::REFERRER_POLICY, tracking.referrer_policy.clone()))
                .finish()
        }
        Link::Gone { .. } => short_answer(StatusCode::GONE, GONE_BODY),
        Link::Unknown => short_answer(StatusCode::NOT_FOUND, UNKNOWN_BODY),
    }
}

/// The `t` parameter of a tracked link (set on links handed out by serving).
fn impression_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("t="))
        .filter(|t| !t.is_empty())
}

fn short_answer(status: StatusCode, body: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        ))
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    granularity: Option<String>,
    format: Option<String>,
}

/// `GET /api/v1/adverts/{id}/report`: flushes what is pending, then reads the database.
async fn advert_report(
    customer: Customer,
    id: web::Path<i64>,
    query: web::Query<ReportQuery>,
    tracking: web::Data<TrackingService>,
) -> Result<HttpResponse, HttpError> {
    let mut errors = Vec::new();
    let mut instant = |field: &str, value: &Option<String>, default: i64| match value {
        None => default,
        Some(raw) => report::parse_instant(raw).unwrap_or_else(|| {
            errors.push(FieldError::new(
                field,
                "invalid_time",
                "must be an RFC 3339 time (2026-11-26T10:00:00Z) or a date (2026-11-26)",
            ));
            default
        }),
    };
    let from = instant("from", &query.from, 0);
    let to = instant("to", &query.to, i64::from(i32::MAX) * 4);
    let granularity = match query.granularity.as_deref() {
        None => Granularity::Hour,
        Some(raw) => Granularity::parse(raw).unwrap_or_else(|| {
            errors.push(FieldError::new(
                "granularity",
                "invalid",
                "must be hour or day",
            ));
            Granularity::Hour
        }),
    };
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            errors.push(FieldError::new("format", "invalid", "must be json or csv"));
            false
        }
    };
    if from >= to && errors.is_empty() {
        errors.push(FieldError::new(
            "to",
            "before_start",
            "must be later than from",
        ));
    }
    if !errors.is_empty() {
        return Err(HttpError::validation(errors));
    }
    let report = tracking
        .report(
            customer.id,
            AdvertId(id.into_inner()),
            granularity,
            from,
            to,
        )
        .await?;
    if csv {
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"advert-{}-report.csv\"",
                    report.advert_id
                ),
            ))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(report::to_csv(&report)));
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(report))
}

#[derive(Debug, Serialize)]
struct SummaryRow {
    advert_id: AdvertId,
    title: String,
    status: String,
    clicks: u64,
    bot_clicks: u64,
    duplicate_clicks: u64,
    impressions: u64,
    ctr: f64,
}

/// `GET /api/v1/reports`: every advert of the customer with its all-time totals.
async fn customer_report(
    customer: Customer,
    tracking: web::Data<TrackingService>,
) -> Result<HttpResponse, HttpError> {
    let rows = tracking.summary(customer.id).await?;
    let adverts: Vec<SummaryRow> = rows
        .into_iter()
        .map(|r| SummaryRow {
            advert_id: r.advert_id,
            ctr: report::ctr(&r.counts),
            title: r.title,
            status: r.status,
            clicks: r.counts[0],
            bot_clicks: r.counts[1],
            duplicate_clicks: r.counts[2],
            impressions: r.counts[3],
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "adverts": adverts })))
}

impl From<TrackingError> for HttpError {
    fn from(e: TrackingError) -> Self {
        match e {
            TrackingError::NotFound => HttpError::not_found("no such advert"),
            TrackingError::Unavailable(reason) => {
                tracing::warn!(%reason, "report unavailable");
                HttpError::unavailable()
            }
            TrackingError::Db(db) => crate::platform::http::log_internal(&db),
        }
    }
}

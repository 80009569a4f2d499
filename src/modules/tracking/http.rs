//! Tracking's endpoints: the redirect (hot path) and the reports.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::{Deserialize, Serialize};

use crate::domain::{AdvertId, AdvertStatus, Counts};
use crate::platform::auth::{Customer, WriteCustomer};
use crate::platform::http::{ErrorBody, FieldError, HttpError, no_route};

use super::clicks::BadClickId;
use super::counters::Metric;
use super::links::Link;
use super::report::{self, Granularity, Point, Report};
use super::visitors::{ClickKind, is_prefetch};
use super::{Breakdown, ConversionError, ConversionTaken, TrackingError, TrackingService};

/// The tracked link `/r/{code}`, the hottest route. Other requests pass its `/r` scope with a
/// prefix comparison; the scope's default service reads the code from the rest of the path
/// itself, since a `/{code}` pattern is a regular expression matched with captures on every
/// redirect (about a tenth of a redirect's instructions, bench/RESULTS.md).
pub fn configure_redirect(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/r").default_service(web::to(follow_link)));
}

/// Where tracked links' paths start.
pub const REDIRECT_PREFIX: &str = "/r/";

/// The route the redirect's requests are counted under (`reklama_http_requests_total`): the edge
/// counts every path under [`REDIRECT_PREFIX`] under it (the router matched no pattern to name),
/// unless `follow_link` finds no code there.
pub const REDIRECT_ROUTE: &str = "/r/{code}";

/// The code in what follows `/r`: one non-empty path segment. `None` for paths that are no
/// tracked link at all (`/r`, `/r/`, `/r/a/b`).
fn link_code(rest: &str) -> Option<&str> {
    rest.strip_prefix('/')
        .filter(|code| !code.is_empty() && !code.contains('/'))
}

/// The reports.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/adverts/{id}/report", web::get().to(advert_report))
        .route("/api/v1/reports", web::get().to(customer_report))
        .route("/api/v1/conversions", web::post().to(report_conversion));
}

/// Tracking's part of the OpenAPI document (merged by `main_app::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(follow_link, advert_report, customer_report, report_conversion))]
pub struct ApiDoc;

const GONE_BODY: &str = "This advert is no longer available.\n";
const UNKNOWN_BODY: &str = "No such link.\n";

/// `GET|HEAD /r/{code}`: redirect to the advert's stored target and count the click.
#[utoipa::path(
    method(get, head),
    path = "/r/{code}",
    tag = "tracking",
    summary = "Follow a tracked link",
    description = "Redirects to the advert's target exactly as stored and counts the click \
                   (billable, bot, duplicate, or suspicious: past a per-address or per-user \
                   threshold of billable clicks per hour, or with an expired token). HEAD and \
                   prefetch requests are redirected without counting. The answers are for browsers: 404 and 410 are short plain \
                   text, 503 has no body, never the JSON error format.",
    params(
        ("code" = String, Path, description = "The link code (12 characters)", example = "Ab3dE5gH7jK9"),
        ("t" = Option<String>, Query, description = "Impression token, set on the `click_url` of served cards: attributes the click to the user it was served to")
    ),
    responses(
        (status = 302, description = "To the target (307 when `tracking.redirect_status = 307`); never cached",
            headers(("Location" = String, description = "The advert's target URL"))),
        (status = 307, description = "As 302, when so configured",
            headers(("Location" = String, description = "The advert's target URL"))),
        (status = 404, description = "No such link (plain text)", body = String, content_type = "text/plain",
            example = json!("No such link.\n")),
        (status = 410, description = "The advert is paused or deleted (plain text)", body = String, content_type = "text/plain",
            example = json!("This advert is no longer available.\n")),
        (status = 503, description = "The link could not be looked up; no body",
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn follow_link(req: HttpRequest, tracking: web::Data<TrackingService>) -> HttpResponse {
    let Some(code) = link_code(req.match_info().unprocessed()) else {
        return no_route(&req).error_response();
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, HeaderValue::from_static("GET, HEAD")))
            .finish();
    }
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
        Link::Live {
            advert,
            location,
            fill,
        } => {
            let attribution = impression_token(req.query_string())
                .and_then(|token| tracking.hooks.attribute(token, *advert));
            let placement = attribution.and_then(|a| a.placement);
            let creative = attribution.and_then(|a| a.creative).map(|s| s.creative);
            let viewer = tracking.hooks.viewer(&req);
            if req.method() != Method::HEAD && !is_prefetch(&req) {
                let visitor = attribution.map(|a| a.visitor);
                let expired = attribution.is_some_and(|a| a.expired);
                let metric = match tracking.visitors.classify(&req, *advert, visitor, expired) {
                    ClickKind::Billable => {
                        tracking.hooks.clicked(*advert, attribution.as_ref());
                        Metric::Click
                    }
                    ClickKind::Bot => Metric::BotClick,
                    ClickKind::Duplicate => Metric::DuplicateClick,
                    ClickKind::Suspicious => Metric::SuspiciousClick,
                };
                tracking.record(*advert, metric, placement, creative, viewer);
            }
            let location = match fill {
                None => location.clone(),
                Some(fill) => tracking
                    .filled_location(fill, *advert, placement, creative, viewer)
                    .unwrap_or_else(|| location.clone()),
            };
            HttpResponse::build(tracking.redirect_status)
                .insert_header((header::LOCATION, location))
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
        // The look-up budget is spent (a flood of made-up codes): answered from memory.
        Link::Deferred => HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")))
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .finish(),
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// Start, inclusive: RFC 3339 (`2026-11-26T10:00:00Z`) or a date (`2026-11-26`, midnight
    /// UTC). The beginning of time when left out.
    #[param(example = "2026-11-26")]
    from: Option<String>,
    /// End, exclusive, in the same forms; later than `from`. No end when left out.
    #[param(example = "2026-11-27")]
    to: Option<String>,
    /// `hour` (the default) or `day`.
    #[param(schema_with = granularity_schema)]
    granularity: Option<String>,
    /// `json` (the default) or `csv` (the series only, as a download).
    #[param(schema_with = format_schema)]
    format: Option<String>,
    /// `placement`: also split every bucket, and the range, by the placement the card was
    /// served for. The generic card (served without a placement, a link followed without a
    /// placement's token, counts from before placements were recorded) is `"placement": null`
    /// in JSON and an empty `placement` field in CSV, which then has a row per bucket and
    /// placement. `creative`: likewise by the creative the card showed (`creatives`, each with
    /// its `creative_id` and `ctr`; `null` for links followed without a token naming one and
    /// counts from before creatives were). `device`: by the viewer's device (`devices`, each
    /// with its `device` and `ctr`; `null` where the device was not known); `country` likewise
    /// (`countries`, by the viewer's country). Several splits separated by commas: JSON only.
    #[param(schema_with = by_schema)]
    by: Option<String>,
}

fn enum_schema(values: &[&'static str]) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

fn granularity_schema() -> utoipa::openapi::Object {
    enum_schema(&["hour", "day"])
}

fn format_schema() -> utoipa::openapi::Object {
    enum_schema(&["json", "csv"])
}

/// The splits `by` names.
const BY: [&str; 4] = ["placement", "creative", "device", "country"];

/// `by`: one split, or several separated by commas (JSON only).
fn by_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(
            "^(placement|creative|device|country)(,(placement|creative|device|country))*$",
        ))
        .examples([serde_json::json!("device")])
        .build()
}

/// The example report of the OpenAPI document, built from the real type.
fn report_example() -> serde_json::Value {
    let report = Report {
        advert_id: AdvertId(1),
        granularity: "hour",
        from: "2026-11-26T00:00:00Z".into(),
        to: "2026-11-27T00:00:00Z".into(),
        counts: Counts::from_values([42, 3, 5, 1200, 0, 0]),
        ctr: 0.035,
        converted: report::Converted::of(3, 59_970_000, 42),
        currencies: vec!["EUR".into()],
        reach: 950,
        series: vec![
            Point {
                start: 1_795_687_200,
                bucket: "2026-11-26T10:00:00Z".into(),
                counts: Counts::from_values([30, 2, 4, 800, 0, 0]),
                converted: report::Converted::default(),
                reach: None,
                placements: None,
                creatives: None,
                devices: None,
                countries: None,
            },
            Point {
                start: 1_795_690_800,
                bucket: "2026-11-26T11:00:00Z".into(),
                counts: Counts::from_values([12, 1, 1, 400, 0, 0]),
                converted: report::Converted::default(),
                reach: None,
                placements: None,
                creatives: None,
                devices: None,
                countries: None,
            },
        ],
        placements: None,
        creatives: None,
        devices: None,
        countries: None,
    };
    serde_json::to_value(report).unwrap_or_default()
}

/// `GET /api/v1/adverts/{id}/report`: flushes what is pending, then reads the database.
#[utoipa::path(
    get,
    path = "/api/v1/adverts/{id}/report",
    tag = "reports",
    summary = "One advert's report",
    description = "Clicks, bot clicks, duplicate clicks, impressions and CTR over a range, with a \
                   series per hour or day. Includes every click any instance answered more than \
                   one push interval (10 ms) ago. A deleted advert keeps its report. With \
                   `by=placement`, the range and every bucket also list each placement's share \
                   (`placements`), the generic card as `\"placement\": null`; `by=creative`, \
                   `by=device` and `by=country` likewise (`creatives`, `devices`, \
                   `countries`, `null` for the unknown share); the totals are the same either \
                   way. Conversions (`conversions`, `conversion_value`, `cvr`) count in the \
                   hour of their click, everywhere counts are.",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The advert's id"), ReportQuery),
    responses(
        (status = 200, description = "The report; with `by=placement`, `placements` on the report and on every series point, and in CSV a row per bucket and placement (`bucket,placement,clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,suspicious_impressions`)", content(
            (Report = "application/json", example = report_example),
            (String = "text/csv", example = json!("bucket,clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,suspicious_impressions\n2026-11-26T10:00:00Z,30,2,4,800,0,0\n"))
        ), headers(("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"advert-{id}-report.csv\"`"))),
        (status = 400, description = "`invalid_query`: an unknown parameter", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such advert, or another customer's", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a bad time, granularity, format or `by`", body = ErrorBody,
            example = json!({"error": {"status": 422, "code": "validation_failed", "message": "granularity: must be hour or day",
                "fields": [{"field": "granularity", "code": "invalid", "message": "must be hour or day"}]}})),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the database, or a configured Redis, is down; a report never leaves out clicks", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
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
    let to = instant("to", &query.to, report::END_OF_TIME);
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
    let mut breakdown = Breakdown::default();
    let mut splits = 0;
    for split in query.by.iter().flat_map(|by| by.split(',')) {
        let wanted = match split.trim() {
            "placement" => &mut breakdown.placement,
            "creative" => &mut breakdown.creative,
            "device" => &mut breakdown.device,
            "country" => &mut breakdown.country,
            _ => {
                let mut error = FieldError::new(
                    "by",
                    "invalid",
                    "must be placement, creative, device or country, or several separated by \
                     commas",
                );
                error.allowed = Some(BY.map(str::to_owned).to_vec());
                errors.push(error);
                break;
            }
        };
        splits += usize::from(!*wanted);
        *wanted = true;
    }
    if csv && splits > 1 {
        errors.push(FieldError::new(
            "by",
            "one_split_in_csv",
            "a CSV report splits one way: placement, creative, device or country",
        ));
    }
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
            breakdown,
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

/// One advert's all-time totals.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SummaryRow {
    #[schema(value_type = i64, example = 1)]
    advert_id: AdvertId,
    #[schema(example = "Summer in Sochi")]
    title: String,
    status: AdvertStatus,
    #[serde(flatten)]
    counts: Counts,
    /// Billable clicks per impression, 4 decimals; 0 when nothing was shown.
    #[schema(example = 0.035)]
    ctr: f64,
    #[serde(flatten)]
    converted: report::Converted,
}

/// `GET /api/v1/reports`. Serialized straight from the rows: a customer with 100 000 adverts
/// gets about 15 MB of JSON, and an intermediate `serde_json::Value` tree would take ten times that.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(description = "Every advert of the customer with its all-time totals.")]
struct Summary {
    /// Newest advert first.
    adverts: Vec<SummaryRow>,
}

/// `GET /api/v1/reports`: every advert of the customer with its all-time totals.
#[utoipa::path(
    get,
    path = "/api/v1/reports",
    tag = "reports",
    summary = "Every advert's totals",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "All-time totals, newest advert first", body = Summary),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn customer_report(
    customer: Customer,
    tracking: web::Data<TrackingService>,
) -> Result<HttpResponse, HttpError> {
    let rows = tracking.summary(customer.id).await?;
    let adverts: Vec<SummaryRow> = rows
        .into_iter()
        .map(|r| SummaryRow {
            advert_id: r.advert_id,
            ctr: r.counts.ctr_rounded(),
            converted: report::Converted::of(r.conversions, r.conversion_micros, r.counts.clicks),
            title: r.title,
            status: r.status,
            counts: r.counts,
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Summary { adverts }))
}

/// The body of `POST /api/v1/conversions`, for the OpenAPI document only (read by
/// `conversions::parse`).
#[derive(utoipa::ToSchema)]
#[schema(
    as = Conversion,
    example = json!({"click_id": "AQAAAAAAAAABaV8oQAAAAAMCREUw3kLq5yRDEG1lZGl1bV9yZWN0YW5nbGV7AjYz2Ym1mSjfsw", "event": "purchase", "value": 19.99, "currency": "EUR"})
)]
#[expect(dead_code, reason = "documentation only, never built")]
struct ConversionInput {
    /// The `rk_click` value the landing page received (or what `{click_id}` filled in).
    #[schema(min_length = 1, max_length = 104)]
    click_id: String,
    /// What happened: 1 to 64 letters, digits, `_`, `-`, `.` or `:`; `conversion` when left
    /// out. Each event counts once per click: `purchase` and `sign_up` of one click are two
    /// conversions, `purchase` reported twice is one.
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$", example = "purchase")]
    event: Option<String>,
    /// What the conversion was worth, 0 to 10^12, kept to millionths; reports add the values
    /// up as numbers, so report one currency per advert.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64, example = 19.99)]
    value: Option<f64>,
    /// ISO 4217, three capital letters.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: Option<String>,
}

/// `POST /api/v1/conversions`: a conversion of a click on one of the customer's adverts.
#[utoipa::path(
    post,
    path = "/api/v1/conversions",
    tag = "reports",
    summary = "Report a conversion",
    description = "Reports that a click led to a conversion, by the click id the redirect \
                   appended to the target as `rk_click` (adverts with `conversion_tracking`) or \
                   filled into `{click_id}`. Idempotent per (`click_id`, `event`): a repeat is \
                   answered 202 with `duplicate: true` and changes nothing. The conversion \
                   counts in the hour of its click, in the advert's reports (`conversions`, \
                   `conversion_value`, `cvr`).",
    security(("bearer" = ["write"])),
    request_body(content = ConversionInput, content_type = "application/json"),
    responses(
        (status = 202, description = "Taken (or taken before: `duplicate`)", body = ConversionTaken),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: a read key; or `foreign_click_id`: the click was on another customer's advert", body = ErrorBody),
        (status = 410, description = "`click_expired`: the click is older than `tracking.attribution_window_days` (30)", body = ErrorBody),
        (status = 422, description = "`invalid_click_id` (not an id reklama issued, or altered) or `validation_failed`, each naming its field", body = ErrorBody,
            example = json!({"error": {"status": 422, "code": "invalid_click_id", "message": "click_id: its signature does not match: it was altered or not issued here",
                "fields": [{"field": "click_id", "code": "forged", "message": "its signature does not match: it was altered or not issued here"}]}})),
        (status = 503, description = "`unavailable`: the database is down", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn report_conversion(
    customer: WriteCustomer,
    body: web::Bytes,
    tracking: web::Data<TrackingService>,
) -> Result<HttpResponse, HttpError> {
    let taken = tracking.convert(customer.id, &body).await?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(taken))
}

impl From<ConversionError> for HttpError {
    fn from(e: ConversionError) -> Self {
        let message = e.to_string();
        match e {
            ConversionError::Invalid(fields) => HttpError::validation(fields),
            ConversionError::BadClickId(bad) => {
                let code = match bad {
                    BadClickId::Malformed => "malformed",
                    BadClickId::Forged => "forged",
                };
                HttpError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_click_id",
                    format!("click_id: {bad}"),
                )
                .with_fields(vec![FieldError::new(
                    "click_id",
                    code,
                    bad.to_string(),
                )])
            }
            ConversionError::Foreign => {
                HttpError::new(StatusCode::FORBIDDEN, "foreign_click_id", message)
            }
            ConversionError::Expired { .. } => {
                HttpError::new(StatusCode::GONE, "click_expired", message)
            }
            ConversionError::Tracking(e) => e.into(),
        }
    }
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

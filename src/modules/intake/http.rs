//! Intake's endpoints: the JSON/multipart API. Handlers only parse, call the
//! service and map the result.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::domain::AdvertId;
use crate::domain::creative::{CreativeId, CreativeStatus};
use crate::platform::auth::{Customer, WriteCustomer};
use crate::platform::http::{ErrorBody, FieldError, HttpError, read_body};
use crate::platform::urls::PublicUrls;

use super::creatives::CreativeView;
use super::error::IntakeError;
use super::input::{
    AdvertInput, AdvertPatchInput, AdvertUpload, FormReader, RawAdvert, parse_patch,
};
use super::service::IntakeService;
use super::view::AdvertView;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/adverts")
            .route(web::post().to(create_advert))
            .route(web::get().to(list_adverts)),
    )
    .service(
        web::resource("/api/v1/adverts/{id}")
            .route(web::get().to(get_advert))
            .route(web::patch().to(update_advert))
            .route(web::delete().to(delete_advert)),
    )
    .configure(super::variants::http::configure)
    .configure(configure_creatives);
}

/// Intake's part of the OpenAPI document (merged by `main_app::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(create_advert, list_adverts, get_advert, update_advert, delete_advert))]
pub struct ApiDoc;

/// Intake's document with the variants endpoint merged in.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = ApiDoc::openapi();
    doc.merge(super::variants::http::ApiDoc::openapi());
    doc.merge(CreativesApiDoc::openapi());
    doc
}

/// `POST /api/v1/adverts`: JSON (`image_base64`) or multipart (`image` file).
#[utoipa::path(
    post,
    path = "/api/v1/adverts",
    tag = "adverts",
    summary = "Create an advert",
    description = "JSON with the image as base64, or multipart/form-data with the image as a file. \
                   Every field is checked and every problem reported in one answer. The image is \
                   compressed into the creative (600×600 at most, JPEG quality 80, metadata \
                   stripped); the full copy reaches the cloud store in the background.",
    security(("bearer" = ["write"])),
    request_body(content(
        (AdvertInput = "application/json"),
        (AdvertUpload = "multipart/form-data")
    )),
    responses(
        (status = 201, description = "Created", body = AdvertView,
            headers(("Location" = String, description = "`/api/v1/adverts/{id}`"))),
        (status = 400, description = "`malformed_body`: not JSON, not an object, or broken multipart", body = ErrorBody,
            example = json!({"error": {"status": 400, "code": "malformed_body", "message": "the JSON body must be an object"}})),
        (status = 401, description = "`unauthorized`: no, unknown or revoked API key", body = ErrorBody,
            example = json!({"error": {"status": 401, "code": "unauthorized", "message": "a valid API key is required: send Authorization: Bearer rk_..."}})),
        (status = 403, description = "`insufficient_scope`: a read key (this takes a write key)", body = ErrorBody,
            example = json!({"error": {"status": 403, "code": "insufficient_scope", "message": "this API key is a read key: it may read adverts, variants and reports but not change anything; use a write key"}})),
        (status = 413, description = "`payload_too_large`: the body or the image is too large", body = ErrorBody,
            example = json!({"error": {"status": 413, "code": "payload_too_large", "message": "image is larger than 10485760 bytes",
                "fields": [{"field": "image", "code": "too_large", "message": "must be at most 10485760 bytes"}]}})),
        (status = 415, description = "`unsupported_media_type`: neither JSON nor multipart, or an image that is not JPEG, PNG, WebP or GIF", body = ErrorBody),
        (status = 422, description = "`validation_failed`: every invalid field, with its own code", body = ErrorBody,
            example = json!({"error": {"status": 422, "code": "validation_failed", "message": "2 fields are invalid", "fields": [
                {"field": "title", "code": "too_long", "message": "must be at most 90 characters (got 112)"},
                {"field": "genre", "code": "unknown_genre",
                    "message": "unknown genre \"boats\"; accepted values: automotive, beauty, education, electronics, entertainment, fashion, finance, food, games, health, home, real_estate, sports, travel, other",
                    "allowed": ["automotive", "beauty", "education", "electronics", "entertainment", "fashion", "finance", "food", "games", "health", "home", "real_estate", "sports", "travel", "other"]}
            ]}})),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the database is down; retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn create_advert(
    customer: WriteCustomer,
    req: HttpRequest,
    payload: web::Payload,
    service: web::Data<IntakeService>,
    urls: web::Data<PublicUrls>,
    limits: web::Data<BodyLimit>,
) -> Result<HttpResponse, HttpError> {
    let raw = if is_json(&req) {
        let body = read_body(payload, limits.0).await?;
        RawAdvert::from_json(&body, service.max_image_bytes())?
    } else if is_multipart(&req) {
        declared_length_within(&req, limits.0)?;
        let form = actix_multipart::Multipart::new(req.headers(), payload);
        let mut raw = RawAdvert::default();
        FormReader::new(form, service.max_image_bytes(), limits.0)
            .read_rest(&mut raw)
            .await?;
        raw
    } else {
        return Err(
            IntakeError::UnsupportedContentType("application/json or multipart/form-data").into(),
        );
    };
    let advert = service.create(&customer, raw).await?;
    let view = AdvertView::new(advert, &urls);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/adverts/{}", view.id)))
        .json(view))
}

fn content_type(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json(req: &HttpRequest) -> bool {
    content_type(req).starts_with("application/json")
}

/// Whether the request's body is multipart/form-data.
pub fn is_multipart(req: &HttpRequest) -> bool {
    content_type(req).starts_with("multipart/form-data")
}

/// Refuses a body whose declared length is over `limit` before any of it is read (a chunked
/// body is counted as it is read instead).
pub fn declared_length_within(req: &HttpRequest, limit: usize) -> Result<(), IntakeError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > u64::try_from(limit).unwrap_or(u64::MAX) => {
            Err(IntakeError::TooLarge {
                field: "body".into(),
                limit,
            })
        }
        _ => Ok(()),
    }
}

/// The largest request body, shared with the handlers that read bodies themselves.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size, 1–100; 50 when left out.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// Only adverts with a smaller id: the previous page's `next_before`.
    before: Option<i64>,
}

/// One page of the customer's adverts, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AdvertList {
    adverts: Vec<AdvertView>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, required = false)]
    next_before: Option<AdvertId>,
}

/// List the customer's adverts
///
/// Newest first, a page at a time (`limit`, `before`). Deleted adverts are left out.
#[utoipa::path(
    get,
    path = "/api/v1/adverts",
    tag = "adverts",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of adverts", body = AdvertList),
        (status = 400, description = "`invalid_query`: an unknown parameter, a non-integer value, or `limit` out of range (the field named)", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn list_adverts(
    customer: Customer,
    query: web::Query<ListQuery>,
    service: web::Data<IntakeService>,
    urls: web::Data<PublicUrls>,
) -> Result<HttpResponse, HttpError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=super::service::MAX_PAGE).contains(&limit) {
        return Err(HttpError::bad_request(
            "invalid_query",
            "the query string has an invalid value",
        )
        .with_fields(vec![FieldError::new(
            "limit",
            "out_of_range",
            format!("must be 1 to {}", super::service::MAX_PAGE),
        )]));
    }
    let adverts = service
        .list(customer.id, query.before.map(AdvertId), limit)
        .await?;
    let full_page = i64::try_from(adverts.len()).unwrap_or(0) == limit;
    let next_before = if full_page {
        adverts.last().map(|a| a.id)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(AdvertList {
        adverts: adverts
            .into_iter()
            .map(|a| AdvertView::new(a, &urls))
            .collect(),
        next_before,
    }))
}

/// Get one advert
#[utoipa::path(
    get,
    path = "/api/v1/adverts/{id}",
    tag = "adverts",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The advert's id")),
    responses(
        (status = 200, description = "The advert", body = AdvertView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such advert, another customer's, or deleted", body = ErrorBody,
            example = json!({"error": {"status": 404, "code": "not_found", "message": "no such advert"}})),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn get_advert(
    customer: Customer,
    id: web::Path<i64>,
    service: web::Data<IntakeService>,
    urls: web::Data<PublicUrls>,
) -> Result<HttpResponse, HttpError> {
    let advert = service.get(customer.id, AdvertId(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(AdvertView::new(advert, &urls)))
}

/// `PATCH /api/v1/adverts/{id}`: changes title, text, image, status, weight, schedule or caps
/// (JSON; `null` clears).
#[utoipa::path(
    patch,
    path = "/api/v1/adverts/{id}",
    tag = "adverts",
    summary = "Change an advert",
    description = "Title, text, image (base64), status, weight, schedule or caps; a field left \
                   out stays as it is and `null` clears the ones that may be empty. Title, text \
                   and image are checked as on creation; a new image becomes a new creative (new \
                   `image_url`; the old one answers 404) and its original replaces the old one in \
                   the cloud copy. A content change renders the placement variants again: they \
                   are `pending` until then and no placement serves the old ones. Every instance \
                   follows within a second.",
    security(("bearer" = ["write"])),
    params(("id" = i64, Path, description = "The advert's id")),
    request_body(content = AdvertPatchInput, content_type = "application/json"),
    responses(
        (status = 200, description = "The advert after the change", body = AdvertView),
        (status = 400, description = "`malformed_body`: not JSON or not an object", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: a read key (this takes a write key)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`last_creative`: new `titles` or `texts` would leave only paused creatives", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than `server.max_body_bytes`, or the image than `intake.max_image_bytes`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not application/json, or an image that is not JPEG, PNG, WebP or GIF", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody,
            example = json!({"error": {"status": 422, "code": "validation_failed", "message": "2 fields are invalid",
                "fields": [{"field": "status", "code": "invalid", "message": "must be one of: active, paused", "allowed": ["active", "paused"]},
                           {"field": "title", "code": "too_long", "message": "must be at most 90 characters (got 112)"}]}})),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn update_advert(
    customer: WriteCustomer,
    id: web::Path<i64>,
    req: HttpRequest,
    payload: web::Payload,
    service: web::Data<IntakeService>,
    urls: web::Data<PublicUrls>,
    limits: web::Data<BodyLimit>,
) -> Result<HttpResponse, HttpError> {
    if !is_json(&req) {
        return Err(IntakeError::UnsupportedContentType("application/json").into());
    }
    let body = read_body(payload, limits.0).await?;
    let patch = parse_patch(&body, service.max_image_bytes())?;
    let advert = service
        .update(customer.id, AdvertId(id.into_inner()), patch)
        .await?;
    Ok(HttpResponse::Ok().json(AdvertView::new(advert, &urls)))
}

/// `DELETE /api/v1/adverts/{id}`: a soft delete; the advert leaves the API, its link answers 410
/// and its report stays.
#[utoipa::path(
    delete,
    path = "/api/v1/adverts/{id}",
    tag = "adverts",
    summary = "Delete an advert",
    description = "The advert leaves the API and serving; its link answers 410 and its report \
                   stays.",
    security(("bearer" = ["write"])),
    params(("id" = i64, Path, description = "The advert's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: a read key (this takes a write key)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn delete_advert(
    customer: WriteCustomer,
    id: web::Path<i64>,
    service: web::Data<IntakeService>,
) -> Result<HttpResponse, HttpError> {
    service
        .delete(customer.id, AdvertId(id.into_inner()))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- creatives ---------------------------------------------------------------------------------

/// The creatives of one advert.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreativeList {
    pub creatives: Vec<CreativeView>,
}

/// `PATCH /api/v1/adverts/{id}/creatives/{creative_id}`.
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "documentation only, never built")]
pub struct CreativePatchInput {
    #[schema(schema_with = CreativeStatus::settable_schema)]
    status: String,
}

fn configure_creatives(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/adverts/{id}/creatives",
        web::get().to(list_creatives),
    )
    .route(
        "/api/v1/adverts/{id}/creatives/{creative_id}",
        web::patch().to(update_creative),
    );
}

/// The creatives endpoints in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_creatives, update_creative))]
struct CreativesApiDoc;

#[utoipa::path(
    get,
    path = "/api/v1/adverts/{id}/creatives",
    tag = "adverts",
    summary = "An advert's creatives",
    description = "Every combination of the advert's image, titles and texts, by number. Serving \
                   chooses among the `active` ones for each card (or among the `pinned` ones, if \
                   any) and learns which wins: a card's `creative_id` is one of these numbers. A \
                   creative whose image, title or text left the advert is `retired`; it keeps \
                   its number.",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The advert's id")),
    responses(
        (status = 200, description = "The creatives", body = CreativeList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such advert, or another customer's", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn list_creatives(
    customer: Customer,
    id: web::Path<i64>,
    service: web::Data<IntakeService>,
) -> Result<HttpResponse, HttpError> {
    let creatives = service
        .creatives(customer.id, AdvertId(id.into_inner()))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(CreativeList { creatives }))
}

#[utoipa::path(
    patch,
    path = "/api/v1/adverts/{id}/creatives/{creative_id}",
    tag = "adverts",
    summary = "Pause, pin or resume a creative",
    description = "`paused`: never served. `pinned`: served, and while any creative is pinned \
                   only pinned ones are. `active`: the learner decides. Every instance serves the \
                   change within its change-poll interval.",
    security(("bearer" = ["write"])),
    params(
        ("id" = i64, Path, description = "The advert's id"),
        ("creative_id" = u32, Path, description = "The creative's number")
    ),
    request_body(content = CreativePatchInput, content_type = "application/json"),
    responses(
        (status = 200, description = "The creative as it now is", body = CreativeView),
        (status = 400, description = "`malformed_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: a read key (this takes a write key)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such advert or creative", body = ErrorBody),
        (status = 409, description = "`retired` (its title or text left the advert) or \
                                      `last_creative` (nothing would be left to serve)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `status` missing or not settable", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn update_creative(
    customer: WriteCustomer,
    path: web::Path<(i64, u32)>,
    req: HttpRequest,
    payload: web::Payload,
    service: web::Data<IntakeService>,
    limits: web::Data<BodyLimit>,
) -> Result<HttpResponse, HttpError> {
    if !is_json(&req) {
        return Err(IntakeError::UnsupportedContentType("application/json").into());
    }
    let body = read_body(payload, limits.0).await?;
    let status = parse_status(&body)?;
    let (id, creative) = path.into_inner();
    let view = service
        .set_creative_status(customer.id, AdvertId(id), CreativeId(creative), status)
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// The body `{"status": "..."}`; any other field is refused.
fn parse_status(body: &[u8]) -> Result<CreativeStatus, IntakeError> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| IntakeError::MalformedBody(format!("the body is not a JSON object: {e}")))?;
    let mut errors = Vec::new();
    let mut status = None;
    for (key, value) in object {
        if key != "status" {
            let mut error = FieldError::new(key, "unknown_field", "is not a field of a creative");
            error.allowed = Some(vec!["status".to_owned()]);
            errors.push(error);
            continue;
        }
        let allowed = || {
            CreativeStatus::SETTABLE
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect()
        };
        match value.as_str().map(CreativeStatus::parse) {
            Some(Ok(parsed)) => status = Some(parsed),
            Some(Err(e)) => {
                let mut error = FieldError::new("status", e.code, e.message);
                error.allowed = Some(allowed());
                errors.push(error);
            }
            None => {
                let mut error = FieldError::new("status", "invalid_type", "must be a string");
                error.allowed = Some(allowed());
                errors.push(error);
            }
        }
    }
    if status.is_none() && errors.is_empty() {
        errors.push(FieldError::new("status", "required", "is required"));
    }
    match status {
        Some(status) if errors.is_empty() => Ok(status),
        _ => Err(IntakeError::Invalid(errors)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod creative_patch_tests {
    use super::*;

    fn codes(body: &str) -> Vec<(String, &'static str)> {
        match parse_status(body.as_bytes()) {
            Err(IntakeError::Invalid(fields)) => {
                fields.into_iter().map(|f| (f.field, f.code)).collect()
            }
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_creative_patch_takes_a_settable_status_only() {
        assert_eq!(
            parse_status(br#"{"status": "pinned"}"#).unwrap(),
            CreativeStatus::Pinned
        );
        assert_eq!(
            codes(r#"{"status": "retired"}"#),
            [("status".into(), "invalid")]
        );
        assert_eq!(
            codes(r#"{"status": 1}"#),
            [("status".into(), "invalid_type")]
        );
        assert_eq!(codes("{}"), [("status".into(), "required")]);
        assert_eq!(
            codes(r#"{"title": "x", "status": "active"}"#),
            [("title".into(), "unknown_field")]
        );
        assert!(matches!(
            parse_status(b"[1]"),
            Err(IntakeError::MalformedBody(_))
        ));
    }
}

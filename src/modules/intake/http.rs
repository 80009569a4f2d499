//! Intake's endpoints: the HTML form, and the JSON/multipart API. Handlers only parse, call the
//! service and map the result.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::advert::OffloadStatus;
use crate::domain::{Advert, AdvertId, AdvertStatus, Genre};
use crate::platform::auth::{AuthError, Customer};
use crate::platform::http::{FieldError, HttpError, html_page, read_body};
use crate::platform::urls::PublicUrls;

use super::error::IntakeError;
use super::input::{RawAdvert, parse_patch};
use super::pages;
use super::service::IntakeService;

const STYLESHEET: &str = include_str!("../../../assets/reklama.css");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(show_form))
        .route("/assets/reklama.css", web::get().to(stylesheet))
        .route("/adverts", web::post().to(submit_form))
        .service(
            web::resource("/api/v1/adverts")
                .route(web::post().to(create_advert))
                .route(web::get().to(list_adverts)),
        )
        .service(
            web::resource("/api/v1/adverts/{id}")
                .route(web::get().to(get_advert))
                .route(web::patch().to(update_advert))
                .route(web::delete().to(delete_advert)),
        );
}

/// A change names at most seven small fields: a body larger than this is not one.
const PATCH_BODY_LIMIT: usize = 16 * 1024;

/// An advert as the API shows it: the stored advert plus the links built from it.
#[derive(Debug, Clone, Serialize)]
pub struct AdvertView {
    pub id: AdvertId,
    pub title: String,
    pub text: String,
    pub genre: Genre,
    pub lang: Option<String>,
    pub target_url: String,
    pub tracked_url: String,
    pub image_url: String,
    /// `image_url` without the origin, for this service's own pages (their CSP allows `'self'`).
    #[serde(skip)]
    pub image_path: String,
    pub image_width: u32,
    pub image_height: u32,
    pub status: AdvertStatus,
    pub weight: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    pub max_impressions: Option<u64>,
    pub max_clicks: Option<u64>,
    pub daily_max_impressions: Option<u64>,
    pub offload_status: OffloadStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub offloaded_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl AdvertView {
    pub fn new(advert: Advert, urls: &PublicUrls) -> Self {
        Self {
            tracked_url: urls.tracked_link(&advert.link_code),
            image_url: urls.creative(advert.id, &advert.creative.hash),
            image_path: PublicUrls::creative_path(advert.id, &advert.creative.hash),
            id: advert.id,
            title: advert.title.as_str().to_owned(),
            text: advert.text.as_str().to_owned(),
            genre: advert.genre,
            lang: advert.lang.map(|l| l.as_str().to_owned()),
            target_url: advert.target_url.into_inner(),
            image_width: advert.creative.width,
            image_height: advert.creative.height,
            status: advert.status,
            weight: advert.weight,
            starts_at: advert.starts_at,
            ends_at: advert.ends_at,
            max_impressions: advert.caps.max_impressions,
            max_clicks: advert.caps.max_clicks,
            daily_max_impressions: advert.caps.daily_max_impressions,
            offload_status: advert.offload_status,
            offloaded_at: advert.offloaded_at,
            created_at: advert.created_at,
            updated_at: advert.updated_at,
        }
    }
}

async fn show_form() -> HttpResponse {
    html_page(
        StatusCode::OK,
        pages::form_page(&RawAdvert::default(), &[], None),
    )
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLESHEET)
}

/// `POST /adverts`: the HTML form. Answers a page either way: the advert, or the form again
/// with every error next to its field.
async fn submit_form(
    req: HttpRequest,
    payload: web::Payload,
    service: web::Data<IntakeService>,
    urls: web::Data<PublicUrls>,
) -> HttpResponse {
    if !is_multipart(&req) {
        return form_error(
            &RawAdvert::default(),
            IntakeError::MalformedBody(
                "the form must be sent as multipart/form-data: please use the form on this page"
                    .into(),
            ),
        );
    }
    let form = actix_multipart::Multipart::new(req.headers(), payload);
    let mut raw = RawAdvert::default();
    if let Err(e) = raw.read_multipart(form, service.max_image_bytes()).await {
        return form_error(&raw, e);
    }
    let key = raw.api_key.clone().unwrap_or_default();
    let customer = match service.customers().authenticate(&key).await {
        Ok(customer) => customer,
        Err(AuthError::Rejected) => {
            let mut errors = raw.validate().err().unwrap_or_default();
            errors.insert(
                0,
                FieldError::new(
                    "api_key",
                    "unauthorized",
                    "this API key is unknown or revoked",
                ),
            );
            return html_page(
                StatusCode::UNAUTHORIZED,
                pages::form_page(&raw, &errors, None),
            );
        }
        Err(e) => return form_error(&raw, IntakeError::from(e)),
    };
    match service.create(&customer, raw.clone()).await {
        Ok(advert) => html_page(
            StatusCode::CREATED,
            pages::advert_page(&AdvertView::new(advert, &urls)),
        ),
        Err(e) => form_error(&raw, e),
    }
}

fn form_error(raw: &RawAdvert, error: IntakeError) -> HttpResponse {
    let fields = error.field_errors();
    let http = HttpError::from(error);
    let notice = fields.is_empty().then_some(http.message.as_str());
    let mut response = html_page(http.status, pages::form_page(raw, &fields, notice));
    if let Some(secs) = http.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// `POST /api/v1/adverts`: JSON (`image_base64`) or multipart (`image` file).
async fn create_advert(
    customer: Customer,
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
        let form = actix_multipart::Multipart::new(req.headers(), payload);
        let mut raw = RawAdvert::default();
        raw.read_multipart(form, service.max_image_bytes()).await?;
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

fn is_multipart(req: &HttpRequest) -> bool {
    content_type(req).starts_with("multipart/form-data")
}

/// The largest request body, shared with the handlers that read bodies themselves.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    before: Option<i64>,
}

#[derive(Debug, Serialize)]
struct AdvertList {
    adverts: Vec<AdvertView>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<AdvertId>,
}

async fn list_adverts(
    customer: Customer,
    query: web::Query<ListQuery>,
    service: web::Data<IntakeService>,
    urls: web::Data<PublicUrls>,
) -> Result<HttpResponse, HttpError> {
    let limit = query.limit.unwrap_or(50);
    let adverts = service
        .list(customer.id, query.before.map(AdvertId), limit)
        .await?;
    let full_page =
        i64::try_from(adverts.len()).unwrap_or(0) == limit.clamp(1, super::service::MAX_PAGE);
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

async fn get_advert(
    customer: Customer,
    id: web::Path<i64>,
    service: web::Data<IntakeService>,
    urls: web::Data<PublicUrls>,
) -> Result<HttpResponse, HttpError> {
    let advert = service.get(customer.id, AdvertId(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(AdvertView::new(advert, &urls)))
}

/// `PATCH /api/v1/adverts/{id}`: changes status, weight, schedule or caps (JSON; `null` clears).
async fn update_advert(
    customer: Customer,
    id: web::Path<i64>,
    req: HttpRequest,
    payload: web::Payload,
    service: web::Data<IntakeService>,
    urls: web::Data<PublicUrls>,
) -> Result<HttpResponse, HttpError> {
    if !is_json(&req) {
        return Err(IntakeError::UnsupportedContentType("application/json").into());
    }
    let body = read_body(payload, PATCH_BODY_LIMIT).await?;
    let patch = parse_patch(&body)?;
    let advert = service
        .update(customer.id, AdvertId(id.into_inner()), patch)
        .await?;
    Ok(HttpResponse::Ok().json(AdvertView::new(advert, &urls)))
}

/// `DELETE /api/v1/adverts/{id}`: a soft delete; the advert leaves the API, its link answers 410
/// and its report stays.
async fn delete_advert(
    customer: Customer,
    id: web::Path<i64>,
    service: web::Data<IntakeService>,
) -> Result<HttpResponse, HttpError> {
    service
        .delete(customer.id, AdvertId(id.into_inner()))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

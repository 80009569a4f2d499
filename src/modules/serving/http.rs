//! Serving's endpoints: the decision (`/api/v1/serve`, CORS for the configured frontends), the
//! owner's full record, and the creatives (media.rs).

use actix_cors::Cors;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::domain::{AdvertId, Genre};
use crate::platform::auth::Customer;
use crate::platform::http::{ErrorBody, FieldError, HttpError, log_internal};

use super::full::FullError;
use super::{Card, ServeRequest, ServingService, answer_json};

const MAX_USER_ID_LEN: usize = 256;

/// Serving's part of the OpenAPI document (merged by `main_app::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    serve_adverts,
    get_full_advert,
    super::media::get_creative,
    super::media::get_variant_image
))]
pub struct ApiDoc;

/// Mounts serving's routes; `cors_origins` are the frontends allowed to call `/api/v1/serve`.
pub fn configure(cors_origins: &[String]) -> impl Fn(&mut web::ServiceConfig) + Clone + use<> {
    let origins = cors_origins.to_vec();
    move |cfg: &mut web::ServiceConfig| {
        let mut cors = Cors::default()
            .allowed_methods(vec!["GET"])
            .allowed_headers(vec![header::ACCEPT, header::CONTENT_TYPE])
            .max_age(3600);
        for origin in &origins {
            cors = if origin == "*" {
                cors.allow_any_origin()
            } else {
                cors.allowed_origin(origin.trim_end_matches('/'))
            };
        }
        cfg.service(
            web::resource("/api/v1/serve")
                .wrap(cors)
                .route(web::get().to(serve_adverts)),
        )
        .route("/api/v1/adverts/{id}/full", web::get().to(get_full_advert));
        super::media::configure(cfg);
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ServeQuery {
    /// The frontend's id of the user (at most 256 bytes); frequency caps and learned interests
    /// are per user. Only its keyed hash is kept.
    #[param(required = true, value_type = String, min_length = 1, max_length = 256, example = "u-829")]
    user_id: Option<String>,
    /// Comma-separated genres (canonical names, synonyms or Russian names). None: the genres
    /// the user clicked first, then any.
    #[param(example = "travel,food")]
    genres: Option<String>,
    /// A two-letter ISO 639-1 code: only adverts in that language or without one. Blank (a
    /// frontend that does not know the user's language) is the same as leaving it out.
    #[param(pattern = "^\\s*([A-Za-z]{2})?\\s*$", example = "ru")]
    lang: Option<String>,
    /// How many distinct adverts, 1 to `serving.max_count` (10 by default); 1 when left out.
    /// Fewer come back when fewer are eligible.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10, example = 2)]
    count: Option<String>,
    /// A placement of the catalogue (`[[serving.placements]]`): cards carry that placement's
    /// variant (exact size, shortened title and text); adverts without one are left out.
    #[param(example = "medium_rectangle")]
    placement: Option<String>,
    /// The same, by pixel size (`300x250`), matched to the catalogue.
    #[param(example = "300x250")]
    size: Option<String>,
    /// The user's device: `desktop`, `mobile` or `tablet`. Left out, it is read from the
    /// request's User-Agent (right when the browser calls; a frontend calling from its servers
    /// should pass it). Adverts targeting devices are not shown to a user whose device is
    /// unknown.
    #[param(example = "mobile")]
    device: Option<String>,
    /// The user's country, ISO 3166-1 alpha-2. Left out, it is read from the header named by
    /// `serving.country_header` (e.g. `CF-IPCountry`), when configured. Adverts targeting
    /// countries are not shown to a user whose country is unknown.
    #[param(pattern = "^\\s*([A-Za-z]{2})?\\s*$", example = "DE")]
    country: Option<String>,
}

/// The adverts chosen for one user, best first; empty when none is eligible.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = serve_example)]
struct ServeAnswer {
    adverts: Vec<Card>,
}

/// The example answer of the OpenAPI document, built from the real types.
fn serve_example() -> serde_json::Value {
    let answer = ServeAnswer {
        adverts: vec![Card {
            advert_id: AdvertId(1),
            creative_id: crate::domain::creative::CreativeId(2),
            title: "Summer in Sochi".into(),
            text: "Seven nights by the sea".into(),
            genre: Genre::Travel,
            image_url: "https://ads.example.com/media/1/3f9c2a1b7d4e8f60.jpg".into(),
            click_url: "https://ads.example.com/r/Ab3dE5gH7jK9?t=AAAAAAAAAAEAAAAAAAAAAQ3kx1pA"
                .into(),
            placement: None,
            width: None,
            height: None,
            layout: None,
        }],
    };
    serde_json::to_value(answer).unwrap_or_default()
}

fn parse_request(
    req: &HttpRequest,
    query: ServeQuery,
    serving: &ServingService,
) -> Result<ServeRequest, HttpError> {
    let (max_count, catalogue) = (serving.settings().max_count, serving.catalogue());
    let mut errors = Vec::new();
    let viewer = super::viewers::viewer(
        req,
        query.device.as_deref(),
        query.country.as_deref(),
        serving.country_header(),
        &mut errors,
    );
    let placement = match (query.placement.as_deref(), query.size.as_deref()) {
        (None, None) => None,
        (Some(wanted), _) | (None, Some(wanted)) => {
            let field = if query.placement.is_some() {
                "placement"
            } else {
                "size"
            };
            match catalogue.index_of(wanted) {
                Some(index) => Some(index),
                None => {
                    let mut error = FieldError::new(
                        field,
                        "unknown_placement",
                        format!("{wanted:?} is not in the placement catalogue"),
                    );
                    error.allowed = Some(
                        catalogue
                            .placements()
                            .iter()
                            .map(|p| format!("{} ({}x{})", p.name, p.width, p.height))
                            .collect(),
                    );
                    errors.push(error);
                    None
                }
            }
        }
    };
    let user_id = match query.user_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() && id.len() <= MAX_USER_ID_LEN => id.to_owned(),
        Some(id) if !id.is_empty() => {
            errors.push(FieldError::new(
                "user_id",
                "too_long",
                format!("must be at most {MAX_USER_ID_LEN} bytes"),
            ));
            String::new()
        }
        _ => {
            errors.push(FieldError::new(
                "user_id",
                "required",
                "is required: the frontend's id of the user",
            ));
            String::new()
        }
    };
    let mut genres = Vec::new();
    for raw in query.genres.as_deref().unwrap_or_default().split(',') {
        if raw.trim().is_empty() {
            continue;
        }
        match Genre::parse(raw) {
            Ok(g) if !genres.contains(&g) => genres.push(g),
            Ok(_) => {}
            Err(e) => {
                let mut error = FieldError::new("genres", "unknown_genre", e.to_string());
                error.allowed = Some(Genre::ALL.iter().map(|g| g.as_str().to_owned()).collect());
                errors.push(error);
                break;
            }
        }
    }
    let lang = match query
        .lang
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        None => None,
        Some(l) => match crate::domain::advert::Lang::parse(l) {
            Ok(lang) => Some(lang.as_str().to_owned()),
            Err(e) => {
                errors.push(FieldError::new("lang", e.code, e.message));
                None
            }
        },
    };
    let count = match query.count.as_deref().map(str::trim) {
        None => 1,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=max_count).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    "count",
                    "out_of_range",
                    format!("must be a whole number from 1 to {max_count}"),
                ));
                1
            }
        },
    };
    if errors.is_empty() {
        Ok(ServeRequest {
            user_id,
            genres,
            lang,
            count,
            placement,
            viewer,
        })
    } else {
        Err(HttpError::validation(errors))
    }
}

/// `GET /api/v1/serve?user_id=U&genres=travel,food&lang=ru&count=N`.
#[utoipa::path(
    get,
    path = "/api/v1/serve",
    tag = "serving",
    summary = "Adverts for one user",
    description = "What a frontend asks for: up to `count` distinct active adverts for one of its \
                   users, by genre and language, within schedules, targeting (device, country, \
                   weekdays and hours), frequency and delivery caps, in weighted rotation. Answered from memory; each card served counts an \
                   impression (a `suspicious_impression`, never billed, when the client address \
                   is past `serving.max_serves_per_address_per_minute`). Each `click_url` \
                   carries an impression token with its issue time: a click on it after \
                   `serving.token_ttl_secs` counts as a `suspicious_click`. No API key; CORS \
                   for the origins in `serving.cors_origins`.",
    params(ServeQuery),
    responses(
        (status = 200, description = "The cards", body = ServeAnswer),
        (status = 400, description = "`invalid_query`: a query string that cannot be read", body = ErrorBody),
        (status = 422, description = "`validation_failed`: every bad parameter", body = ErrorBody,
            example = json!({"error": {"status": 422, "code": "validation_failed", "message": "2 fields are invalid", "fields": [
                {"field": "user_id", "code": "required", "message": "is required: the frontend's id of the user"},
                {"field": "count", "code": "out_of_range", "message": "must be a whole number from 1 to 10"}
            ]}}))
    )
)]
async fn serve_adverts(
    req: HttpRequest,
    query: web::Query<ServeQuery>,
    serving: web::Data<ServingService>,
) -> Result<HttpResponse, HttpError> {
    let request = parse_request(&req, query.into_inner(), &serving)?;
    let billable = serving.serve_is_billable(&req);
    let served = serving.serve(&request, billable).await;
    // `ServeAnswer` as it serialises: each card's JSON was written when it was loaded.
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .content_type(ContentType::json())
        .body(answer_json(&served)))
}

/// `GET /api/v1/adverts/{id}/full` (owner): the full record from the cloud store.
#[utoipa::path(
    get,
    path = "/api/v1/adverts/{id}/full",
    tag = "serving",
    summary = "An advert's full record, from the cloud store",
    description = "The complete stored advert as archived in the cloud store (`adverts/{id}.json`): \
                   the API view's fields plus `customer_id`, `link_code` and `creative` \
                   (hash, size, the original's type and size). A deleted advert's copy says \
                   `\"status\": \"deleted\"`.",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The advert's id")),
    responses(
        (status = 200, description = "The record", body = Object, content_type = "application/json",
            example = json!({"id": 1, "customer_id": 1, "title": "Summer in Sochi", "text": "Seven nights by the sea",
                "genre": "travel", "lang": "ru", "target_url": "https://example.com/sochi", "link_code": "Ab3dE5gH7jK9",
                "status": "active", "weight": 10, "starts_at": null, "ends_at": null,
                "max_impressions": null, "max_clicks": null, "daily_max_impressions": null, "pacing": "asap",
                "creative": {"hash": "3f9c2a1b7d4e8f60", "width": 600, "height": 450, "source_mime": "image/png",
                    "source_width": 800, "source_height": 600},
                "offload_status": "done", "offloaded_at": "2026-11-26T10:00:01Z",
                "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:01Z"})),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such advert, or another customer's", body = ErrorBody),
        (status = 409, description = "`not_in_cloud_yet`: still being copied; retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")),
            example = json!({"error": {"status": 409, "code": "not_in_cloud_yet",
                "message": "the full record is still being copied to the cloud store; retry shortly"}})),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the cloud store or the database is down", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")),
            example = json!({"error": {"status": 503, "code": "unavailable", "message": "the service is temporarily unavailable; retry shortly"}}))
    )
)]
async fn get_full_advert(
    customer: Customer,
    id: web::Path<i64>,
    serving: web::Data<ServingService>,
) -> Result<HttpResponse, HttpError> {
    match serving
        .full_records()
        .get(customer.id, AdvertId(id.into_inner()))
        .await
    {
        Ok(bytes) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(bytes.as_ref().clone())),
        Err(FullError::NotFound) => Err(HttpError::not_found("no such advert")),
        Err(FullError::NotYetInCloud) => Err(HttpError {
            retry_after_secs: Some(2),
            ..HttpError::new(
                StatusCode::CONFLICT,
                "not_in_cloud_yet",
                "the full record is still being copied to the cloud store; retry shortly",
            )
        }),
        Err(FullError::Cloud(reason)) => {
            tracing::warn!(%reason, "full record unavailable");
            Err(HttpError::unavailable())
        }
        Err(FullError::Db(crate::platform::db::DbError::Unavailable(_))) => {
            Err(HttpError::unavailable())
        }
        Err(FullError::Db(e)) => Err(log_internal(&e)),
    }
}

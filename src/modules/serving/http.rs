//! Serving's endpoints: the decision (`/api/v1/serve`, CORS for the configured frontends), the
//! owner's full record, and the creatives (media.rs).

use actix_cors::Cors;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::domain::{AdvertId, Genre};
use crate::platform::auth::Customer;
use crate::platform::http::{FieldError, HttpError, log_internal};

use super::full::FullError;
use super::{Card, ServeRequest, ServingService};

const MAX_USER_ID_LEN: usize = 256;

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

#[derive(Debug, Deserialize)]
struct ServeQuery {
    user_id: Option<String>,
    genres: Option<String>,
    lang: Option<String>,
    count: Option<String>,
}

#[derive(Serialize)]
struct ServeAnswer {
    adverts: Vec<Card>,
}

fn parse_request(query: ServeQuery, max_count: usize) -> Result<ServeRequest, HttpError> {
    let mut errors = Vec::new();
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
        None | Some("") => 1,
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
        })
    } else {
        Err(HttpError::validation(errors))
    }
}

/// `GET /api/v1/serve?user_id=U&genres=travel,food&lang=ru&count=N`.
async fn serve_adverts(
    query: web::Query<ServeQuery>,
    serving: web::Data<ServingService>,
) -> Result<HttpResponse, HttpError> {
    let request = parse_request(query.into_inner(), serving.settings().max_count)?;
    let adverts = serving.serve(&request).await;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(ServeAnswer { adverts }))
}

/// `GET /api/v1/adverts/{id}/full` (owner): the full record from the cloud store.
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

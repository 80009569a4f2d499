//! Compressed creatives over HTTP: cached in memory (moka, bounded in bytes), immutable URLs with
//! a strong ETag, so browsers and CDNs fetch each image once.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use moka::future::Cache;

use crate::domain::AdvertId;
use crate::platform::db::{Db, DbError};
use crate::platform::http::{ErrorBody, HttpError, log_internal};
use crate::platform::limits::MissBudget;
use crate::platform::telemetry::{CacheMetrics, CacheUsage};

use super::store;

/// One creative as it is served.
#[derive(Debug)]
pub struct MediaObject {
    pub hash: String,
    pub mime: String,
    pub bytes: web::Bytes,
    etag: HeaderValue,
}

/// A creative (`placement: None`) or one of a placement's variants, and its hash: a placement
/// has a variant per image and per composed creative, all served at once.
type MediaKey = (AdvertId, Option<Box<str>>, Box<str>);

/// How long a URL found to name no image is answered 404 from memory.
const MISS_TTL: Duration = Duration::from_secs(30);
/// URLs remembered as naming no image, at most.
const MISSES_KEPT: u64 = 100_000;

#[derive(Clone)]
pub struct MediaService {
    db: Db,
    cache: Cache<MediaKey, Arc<MediaObject>>,
    /// Negative entries: made-up ids and wrong hashes cost memory, not a query each.
    misses: Cache<MediaKey, ()>,
    budget: MissBudget,
    metrics: CacheMetrics,
}

impl MediaService {
    pub fn new(db: Db, cache_bytes: u64, budget: MissBudget) -> Self {
        let cache = Cache::builder()
            .weigher(|_k: &MediaKey, v: &Arc<MediaObject>| {
                u32::try_from(v.bytes.len() + v.hash.len() + 64).unwrap_or(u32::MAX)
            })
            .max_capacity(cache_bytes)
            .support_invalidation_closures()
            .build();
        Self {
            db,
            cache,
            misses: Cache::builder()
                .max_capacity(MISSES_KEPT)
                .time_to_live(MISS_TTL)
                .support_invalidation_closures()
                .build(),
            budget,
            metrics: CacheMetrics::new("media"),
        }
    }

    /// The image with this hash, from memory or the database. The database is asked only for
    /// the exact (advert, placement, hash), so a wrong hash reads no bytes and never displaces
    /// a cached image; a URL that named nothing is remembered for a while, and a look-up past
    /// the instance's budget answers [`MediaLookup::Deferred`] without one.
    pub async fn image(
        &self,
        id: AdvertId,
        placement: Option<&str>,
        hash: &str,
    ) -> Result<MediaLookup, DbError> {
        let key: MediaKey = (id, placement.map(Into::into), hash.into());
        if let Some(hit) = self.cache.get(&key).await {
            self.metrics.memory(true);
            return Ok(MediaLookup::Found(hit));
        }
        self.metrics.memory(false);
        if self.misses.contains_key(&key) {
            return Ok(MediaLookup::NotFound);
        }
        if !self.budget.try_spend() {
            return Ok(MediaLookup::Deferred);
        }
        let wanted = placement.map(str::to_owned);
        let asked = hash.to_owned();
        let row = self
            .db
            .run(move |conn| match wanted {
                None => store::creative_image(conn, id, &asked),
                Some(placement) => store::variant_image(conn, id, &placement, &asked),
            })
            .await?;
        let Some(store::StoredImage {
            hash: stored_hash,
            mime,
            bytes,
        }) = row
        else {
            self.misses.insert(key, ()).await;
            return Ok(MediaLookup::NotFound);
        };
        let etag = HeaderValue::from_str(&format!("\"{stored_hash}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        let object = Arc::new(MediaObject {
            hash: stored_hash,
            mime,
            bytes: web::Bytes::from(bytes),
            etag,
        });
        self.cache.insert(key, object.clone()).await;
        Ok(MediaLookup::Found(object))
    }

    /// The creatives held in memory and the bytes they weigh against `serving.media_cache_bytes`.
    pub async fn usage(&self) -> CacheUsage {
        CacheUsage::of(&self.cache, true).await
    }

    /// Drops the advert's images (the creative and every placement's variant) from memory, so
    /// the next request reads the current ones, and what was remembered as missing (a new image
    /// or variant may be just what was asked for).
    pub fn forget(&self, id: AdvertId) {
        // A predicate hides the entries it matches from the next read on; the memory is freed
        // in the background.
        let _ = self
            .cache
            .invalidate_entries_if(move |(advert, ..), _| *advert == id);
        let _ = self
            .misses
            .invalidate_entries_if(move |(advert, ..), _| *advert == id);
    }
}

/// What a media request finds.
#[derive(Debug)]
pub enum MediaLookup {
    Found(Arc<MediaObject>),
    NotFound,
    /// Not in memory, and the instance's look-up budget is spent.
    Deferred,
}

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/media/{advert_id}/{file}", web::get().to(get_creative))
        .route(
            "/media/{advert_id}/{placement}/{file}",
            web::get().to(get_variant_image),
        );
}

/// `GET /media/{advert_id}/{hash}.jpg`. A stale hash is a 404: the URL names one exact image.
#[utoipa::path(
    get,
    path = "/media/{advert_id}/{file}",
    tag = "serving",
    summary = "An advert's creative",
    description = "The compressed image, from memory. Immutable: the file name is the image's hash, \
                   so a new image gets a new URL and an old URL answers 404.",
    params(
        ("advert_id" = i64, Path, description = "The advert's id"),
        ("file" = String, Path, description = "`{hash}.jpg`, as in `image_url`", example = "3f9c2a1b7d4e8f60.jpg"),
        ("If-None-Match" = Option<String>, Header, description = "A previously received ETag")
    ),
    responses(
        (status = 200, description = "The image (JPEG)", content(("image/jpeg")), headers(
                ("ETag" = String, description = "Strong; the hash in quotes"),
                ("Cache-Control" = String, description = "`public, max-age=31536000, immutable`")
            )),
        (status = 304, description = "Not modified (the ETag matched)"),
        (status = 404, description = "`not_found`: no such advert, or not its current image", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
pub(super) async fn get_creative(
    req: HttpRequest,
    path: web::Path<(i64, String)>,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, HttpError> {
    let (id, file) = path.into_inner();
    let Some(hash) = file.strip_suffix(".jpg") else {
        return Err(HttpError::not_found("no such image"));
    };
    answer_image(&req, media.image(AdvertId(id), None, hash).await)
}

/// `GET /media/{advert_id}/{placement}/{hash}.{webp|jpg}`: a placement variant's image.
#[utoipa::path(
    get,
    path = "/media/{advert_id}/{placement}/{file}",
    tag = "serving",
    summary = "A placement variant's image",
    description = "The image generated for one placement, of its exact pixel size and within its \
                   byte budget (WebP, or JPEG when WebP cannot fit). Immutable like the creative.",
    params(
        ("advert_id" = i64, Path, description = "The advert's id"),
        ("placement" = String, Path, description = "A placement of the catalogue", example = "medium_rectangle"),
        ("file" = String, Path, description = "`{hash}.webp` or `{hash}.jpg`, as in the card's `image_url`", example = "9a0c6e1f44d2b871.webp"),
        ("If-None-Match" = Option<String>, Header, description = "A previously received ETag")
    ),
    responses(
        (status = 200, description = "The image", content(("image/webp"), ("image/jpeg")), headers(
                ("ETag" = String, description = "Strong; the hash in quotes"),
                ("Cache-Control" = String, description = "`public, max-age=31536000, immutable`")
            )),
        (status = 304, description = "Not modified (the ETag matched)"),
        (status = 404, description = "`not_found`: no such variant, or not its current image", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
pub(super) async fn get_variant_image(
    req: HttpRequest,
    path: web::Path<(i64, String, String)>,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, HttpError> {
    let (id, placement, file) = path.into_inner();
    let Some(hash) = file
        .strip_suffix(".webp")
        .or_else(|| file.strip_suffix(".jpg"))
    else {
        return Err(HttpError::not_found("no such image"));
    };
    answer_image(
        &req,
        media.image(AdvertId(id), Some(&placement), hash).await,
    )
}

fn answer_image(
    req: &HttpRequest,
    found: Result<MediaLookup, DbError>,
) -> Result<HttpResponse, HttpError> {
    let object = match found {
        Ok(MediaLookup::Found(object)) => object,
        Ok(MediaLookup::NotFound) => return Err(HttpError::not_found("no such image")),
        Ok(MediaLookup::Deferred) => {
            return Err(HttpError {
                retry_after_secs: Some(1),
                ..HttpError::unavailable()
            });
        }
        Err(DbError::Unavailable(_)) => return Err(HttpError::unavailable()),
        Err(e) => return Err(log_internal(&e)),
    };
    let not_modified = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/").as_bytes() == object.etag.as_bytes()
        });
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, object.etag.clone()))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if not_modified {
        return Ok(response.finish());
    }
    Ok(response
        .content_type(object.mime.as_str())
        .body(object.bytes.clone()))
}

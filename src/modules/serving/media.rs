//! Compressed creatives over HTTP: cached in memory (moka, bounded in bytes), immutable URLs with
//! a strong ETag, so browsers and CDNs fetch each image once.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use diesel::prelude::*;
use moka::future::Cache;

use crate::domain::AdvertId;
use crate::platform::db::schema::creatives;
use crate::platform::db::{Db, DbError};
use crate::platform::http::{HttpError, log_internal};

/// One creative as it is served.
#[derive(Debug)]
pub struct MediaObject {
    pub hash: String,
    pub mime: String,
    pub bytes: web::Bytes,
    etag: HeaderValue,
}

#[derive(Clone)]
pub struct MediaService {
    db: Db,
    cache: Cache<AdvertId, Arc<MediaObject>>,
}

impl MediaService {
    pub fn new(db: Db, cache_bytes: u64) -> Self {
        let cache = Cache::builder()
            .weigher(|_k: &AdvertId, v: &Arc<MediaObject>| {
                u32::try_from(v.bytes.len() + v.hash.len() + 64).unwrap_or(u32::MAX)
            })
            .max_capacity(cache_bytes)
            .build();
        Self { db, cache }
    }

    /// The advert's current creative, from memory or the database.
    pub async fn creative(&self, id: AdvertId) -> Result<Option<Arc<MediaObject>>, DbError> {
        if let Some(hit) = self.cache.get(&id).await {
            return Ok(Some(hit));
        }
        let row: Option<(String, String, Vec<u8>)> = self
            .db
            .run(move |conn| {
                creatives::table
                    .find(id.0)
                    .select((creatives::hash, creatives::mime, creatives::bytes))
                    .first(conn)
                    .optional()
                    .map_err(DbError::from)
            })
            .await?;
        let Some((hash, mime, bytes)) = row else {
            return Ok(None);
        };
        let etag = HeaderValue::from_str(&format!("\"{hash}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        let object = Arc::new(MediaObject {
            hash,
            mime,
            bytes: web::Bytes::from(bytes),
            etag,
        });
        self.cache.insert(id, object.clone()).await;
        Ok(Some(object))
    }

    /// Drops a cached creative, e.g. after its advert was deleted or its image replaced.
    pub async fn forget(&self, id: AdvertId) {
        self.cache.invalidate(&id).await;
    }
}

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/media/{advert_id}/{file}", web::get().to(get_creative));
}

/// `GET /media/{advert_id}/{hash}.jpg`. A stale hash is a 404: the URL names one exact image.
async fn get_creative(
    req: HttpRequest,
    path: web::Path<(i64, String)>,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, HttpError> {
    let (id, file) = path.into_inner();
    let Some(hash) = file.strip_suffix(".jpg") else {
        return Err(HttpError::not_found("no such image"));
    };
    let object = match media.creative(AdvertId(id)).await {
        Ok(Some(object)) if object.hash == hash => object,
        Ok(_) => return Err(HttpError::not_found("no such image")),
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

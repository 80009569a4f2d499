//! An advert's creatives: every combination of its image, titles and texts, numbered within the
//! advert (`advert_creatives`), with the customer's say over each (`active`, `paused`,
//! `pinned`). A combination keeps its number while it stays on the advert, so counts per
//! creative keep their meaning across edits; one that leaves is `retired`.
//!
//! `GET /api/v1/adverts/{id}/creatives` lists them; `PATCH .../creatives/{creative_id}` sets a
//! status.

use actix_web::{HttpRequest, HttpResponse, web};
use diesel::prelude::*;
use serde::Serialize;

use crate::domain::creative::{CreativeId, CreativeStatus, combinations, servable};
use crate::domain::{Advert, AdvertId, AdvertStatus, CustomerId};
use crate::platform::auth::Customer;
use crate::platform::db::schema::{advert_creatives, adverts};
use crate::platform::db::{DbConnection, DbError};
use crate::platform::http::{ErrorBody, FieldError, HttpError, read_body};

use super::error::IntakeError;
use super::http::BodyLimit;
use super::outbox::bumped_updated_at;
use super::service::IntakeService;

/// A creative as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = advert_creatives)]
pub struct CreativeRow {
    pub number: i32,
    pub image_index: i32,
    pub title: String,
    pub body: String,
    pub status: CreativeStatus,
}

fn rows(conn: &mut DbConnection, advert: AdvertId) -> QueryResult<Vec<CreativeRow>> {
    advert_creatives::table
        .filter(advert_creatives::advert_id.eq(advert.0))
        .select(CreativeRow::as_select())
        .order(advert_creatives::number)
        .load(conn)
}

/// Brings the advert's creatives in line with its titles and texts (in the transaction that
/// changed them): a combination already numbered keeps its number and status (a retired one
/// becomes active again), a new one gets the next number, one no longer on the advert is
/// retired.
pub fn sync(conn: &mut DbConnection, advert: &Advert, now: i64) -> Result<(), DbError> {
    let existing = rows(conn, advert.id)?;
    let wanted = combinations(1, &advert.titles(), &advert.texts());
    let mut next = existing.iter().map(|r| r.number).max().unwrap_or(0) + 1;
    let mut kept = Vec::with_capacity(wanted.len());
    for combination in &wanted {
        let image = i32::try_from(combination.image).unwrap_or(0);
        match existing.iter().find(|r| {
            r.image_index == image && r.title == combination.title && r.body == combination.text
        }) {
            Some(row) => {
                kept.push(row.number);
                if row.status == CreativeStatus::Retired {
                    set(conn, advert.id, row.number, CreativeStatus::Active)?;
                }
            }
            None => {
                diesel::insert_into(advert_creatives::table)
                    .values((
                        advert_creatives::advert_id.eq(advert.id.0),
                        advert_creatives::number.eq(next),
                        advert_creatives::image_index.eq(image),
                        advert_creatives::title.eq(&combination.title),
                        advert_creatives::body.eq(&combination.text),
                        advert_creatives::status.eq(CreativeStatus::Active),
                        advert_creatives::created_at.eq(now),
                    ))
                    .execute(conn)?;
                kept.push(next);
                next += 1;
            }
        }
    }
    diesel::update(
        advert_creatives::table
            .filter(advert_creatives::advert_id.eq(advert.id.0))
            .filter(advert_creatives::number.ne_all(kept)),
    )
    .set(advert_creatives::status.eq(CreativeStatus::Retired))
    .execute(conn)?;
    Ok(())
}

/// Refuses a change that leaves the advert nothing to serve (every creative it still has is
/// paused): its transaction then rolls back.
pub fn ensure_servable(conn: &mut DbConnection, advert: AdvertId) -> Result<(), IntakeError> {
    let statuses: Vec<(CreativeId, CreativeStatus)> = rows(conn, advert)?
        .iter()
        .map(|r| (CreativeId(u32::try_from(r.number).unwrap_or(0)), r.status))
        .collect();
    if servable(&statuses).is_empty() {
        return Err(last_creative());
    }
    Ok(())
}

fn last_creative() -> IntakeError {
    IntakeError::Conflict {
        code: "last_creative",
        message: "the advert would have no creative to serve: resume a creative, or pause the \
                  advert instead"
            .into(),
    }
}

fn set(
    conn: &mut DbConnection,
    advert: AdvertId,
    number: i32,
    status: CreativeStatus,
) -> QueryResult<usize> {
    diesel::update(advert_creatives::table.find((advert.0, number)))
        .set(advert_creatives::status.eq(status))
        .execute(conn)
}

/// Whether `owner` owns the live advert `id`.
fn owns(conn: &mut DbConnection, id: AdvertId, owner: CustomerId) -> QueryResult<bool> {
    let found: Option<i64> = adverts::table
        .filter(adverts::id.eq(id.0))
        .filter(adverts::customer_id.eq(owner.0))
        .filter(adverts::status.ne(AdvertStatus::Deleted))
        .select(adverts::id)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
}

/// The creatives of a customer's advert, by number.
pub fn list(
    conn: &mut DbConnection,
    id: AdvertId,
    owner: CustomerId,
) -> Result<Vec<CreativeRow>, IntakeError> {
    if !owns(conn, id, owner)? {
        return Err(IntakeError::NotFound);
    }
    Ok(rows(conn, id)?)
}

/// Sets a creative's status. A retired creative cannot be set, and the last servable creative
/// cannot be paused (the advert would be served with nothing: pause the advert instead). Bumps
/// the advert's `updated_at`, so every instance reloads its cards.
pub fn set_status(
    conn: &mut DbConnection,
    id: AdvertId,
    owner: CustomerId,
    creative: CreativeId,
    status: CreativeStatus,
    now: i64,
) -> Result<(CreativeRow, String), IntakeError> {
    conn.transaction(|conn| {
        // The first statement writes, so SQLite takes its write lock at once.
        let link_code: Option<String> = diesel::update(
            adverts::table
                .filter(adverts::id.eq(id.0))
                .filter(adverts::customer_id.eq(owner.0))
                .filter(adverts::status.ne(AdvertStatus::Deleted)),
        )
        .set(bumped_updated_at(now))
        .returning(adverts::link_code)
        .get_result(conn)
        .optional()?;
        let link_code = link_code.ok_or(IntakeError::NotFound)?;
        let mut all = rows(conn, id)?;
        let number = i32::try_from(creative.0).map_err(|_| IntakeError::NoCreative)?;
        let Some(at) = all.iter().position(|r| r.number == number) else {
            return Err(IntakeError::NoCreative);
        };
        if all[at].status == CreativeStatus::Retired {
            return Err(IntakeError::Conflict {
                code: "retired",
                message: "the creative's title or text is no longer on the advert".into(),
            });
        }
        all[at].status = status;
        let statuses: Vec<(CreativeId, CreativeStatus)> = all
            .iter()
            .map(|r| (CreativeId(u32::try_from(r.number).unwrap_or(0)), r.status))
            .collect();
        if servable(&statuses).is_empty() {
            return Err(last_creative());
        }
        set(conn, id, number, status)?;
        Ok((all.swap_remove(at), link_code))
    })
}

/// A creative as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreativeView {
    /// The creative's number within the advert: `creative_id` in cards and reports.
    #[schema(value_type = u32, example = 2)]
    pub creative_id: CreativeId,
    /// The position of its image on the advert (0: the first).
    pub image_index: u32,
    pub title: String,
    pub text: String,
    pub status: CreativeStatus,
}

impl From<CreativeRow> for CreativeView {
    fn from(row: CreativeRow) -> Self {
        Self {
            creative_id: CreativeId(u32::try_from(row.number).unwrap_or(0)),
            image_index: u32::try_from(row.image_index).unwrap_or(0),
            title: row.title,
            text: row.body,
            status: row.status,
        }
    }
}

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

pub fn configure(cfg: &mut web::ServiceConfig) {
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
pub struct ApiDoc;

#[utoipa::path(
    get,
    path = "/api/v1/adverts/{id}/creatives",
    tag = "adverts",
    summary = "An advert's creatives",
    description = "Every combination of the advert's image, titles and texts, by number. Serving \
                   chooses among the `active` ones for each card (or among the `pinned` ones, if \
                   any) and learns which wins: a card's `creative_id` is one of these numbers. A \
                   creative whose title or text left the advert is `retired`; it keeps its \
                   number.",
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
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The advert's id"),
        ("creative_id" = u32, Path, description = "The creative's number")
    ),
    request_body(content = CreativePatchInput, content_type = "application/json"),
    responses(
        (status = 200, description = "The creative as it now is", body = CreativeView),
        (status = 400, description = "`malformed_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
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
    customer: Customer,
    path: web::Path<(i64, u32)>,
    req: HttpRequest,
    payload: web::Payload,
    service: web::Data<IntakeService>,
    limits: web::Data<BodyLimit>,
) -> Result<HttpResponse, HttpError> {
    if !super::http::is_json(&req) {
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
mod tests {
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

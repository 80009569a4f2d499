//! The webhooks' endpoints: `/api/v1/webhooks` (list, create), `/api/v1/webhooks/{id}` (one,
//! change, delete) and `/api/v1/webhooks/{id}/deliveries`. Reading takes any key; changing
//! takes a write key. Another customer's webhook answers 404, exactly as one that does not
//! exist. The signing secret is in the answer that creates the webhook, never again.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::domain::events::EventType;
use crate::platform::auth::{Customer, WriteCustomer};
use crate::platform::db::{self, DbError};
use crate::platform::http::{ErrorBody, FieldError, HttpError, log_internal, read_body};
use crate::platform::tokens::{is_base62, random_base62};

use super::guard::{self, TargetError};
use super::store::{self, DeliveryRow, EVERY_EVENT, WebhookRow};
use super::{WebhookSettings, WebhooksService};

/// Bodies are far below this.
const BODY_LIMIT: usize = 64 * 1024;
/// Webhooks a customer may have at once.
pub const MAX_WEBHOOKS: i64 = 20;
/// Deliveries `GET .../deliveries` shows.
const DELIVERIES_SHOWN: i64 = 100;
const ID_PREFIX: &str = "wh_";
const ID_LEN: usize = 20;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/webhooks")
            .route(web::get().to(list_webhooks))
            .route(web::post().to(create_webhook)),
    )
    .service(
        web::resource("/api/v1/webhooks/{id}")
            .route(web::get().to(get_webhook))
            .route(web::patch().to(update_webhook))
            .route(web::delete().to(delete_webhook)),
    )
    .route(
        "/api/v1/webhooks/{id}/deliveries",
        web::get().to(list_deliveries),
    );
}

/// The webhooks' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_webhooks,
    create_webhook,
    get_webhook,
    update_webhook,
    delete_webhook,
    list_deliveries
))]
pub struct ApiDoc;

fn at(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A webhook as its owner sees it: never its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "wh_3kT9bQx0aZ7mP1vR5sW2", "url": "https://hooks.example.com/reklama",
    "events": ["advert.paused", "advert.cap_reached"], "enabled": true, "disabled_reason": null,
    "failing_since": null, "created_at": "2026-12-08T09:30:00Z", "updated_at": "2026-12-08T09:30:00Z"}))]
pub struct WebhookView {
    /// `wh_` and 20 letters and digits.
    id: String,
    url: String,
    /// The event types it receives, or `["*"]` for every type.
    events: Vec<String>,
    /// `false` once disabled (by failing for `webhooks.disable_after_hours`, or by the
    /// customer); nothing is sent to it until enabled again.
    enabled: bool,
    /// Why it is disabled; `null` while enabled.
    disabled_reason: Option<String>,
    /// Since when its deliveries fail without a success; `null` when the last one succeeded.
    #[serde(with = "time::serde::rfc3339::option")]
    failing_since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<WebhookRow> for WebhookView {
    fn from(row: WebhookRow) -> Self {
        Self {
            events: row.event_names(),
            id: row.public_id,
            url: row.url,
            enabled: row.disabled_at.is_none(),
            disabled_reason: row.disabled_reason,
            failing_since: row.failing_since.map(at),
            created_at: at(row.created_at),
            updated_at: at(row.updated_at),
        }
    }
}

/// `GET /api/v1/webhooks`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// The customer's webhooks, oldest first.
    webhooks: Vec<WebhookView>,
}

/// `POST /api/v1/webhooks`'s answer: the webhook and its signing secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "wh_3kT9bQx0aZ7mP1vR5sW2", "url": "https://hooks.example.com/reklama",
    "events": ["advert.paused"], "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8uRcHqZbWWo=",
    "enabled": true, "disabled_reason": null, "failing_since": null,
    "created_at": "2026-12-08T09:30:00Z", "updated_at": "2026-12-08T09:30:00Z"}))]
pub struct NewWebhook {
    id: String,
    url: String,
    events: Vec<String>,
    /// `whsec_` and the base64 of 32 random bytes: the key of every delivery's signature
    /// (the bytes after `whsec_`, base64-decoded). Shown this once.
    secret: String,
    enabled: bool,
    disabled_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    failing_since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

/// One event on its way to a webhook.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": 42, "event_id": "evt_4Qx1mZ0aB7cD9eF2gH5iJ8", "event_type": "advert.paused",
    "status": "failed", "attempts": 3, "last_response_code": 500, "last_error": "the endpoint answered 500",
    "created_at": "2026-12-08T09:30:00Z", "updated_at": "2026-12-08T09:31:00Z", "delivered_at": null}))]
pub struct DeliveryView {
    id: i64,
    /// The event's `id` (the `webhook-id` header).
    event_id: String,
    event_type: String,
    /// `pending` (being tried, retried with backoff), `succeeded` (a 2xx answer) or `failed`
    /// (attempts ran out, or the webhook was disabled or deleted).
    status: String,
    /// Requests made so far.
    attempts: i32,
    /// The status code of the last answer; `null` if none came (a network error, a timeout).
    last_response_code: Option<i32>,
    /// What went wrong the last time; `null` after a success.
    last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    delivered_at: Option<OffsetDateTime>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(row: DeliveryRow) -> Self {
        Self {
            id: row.id,
            event_id: row.event_id,
            event_type: row.event_type,
            status: row.status,
            attempts: row.attempts,
            last_response_code: row.last_response_code,
            last_error: row.last_error,
            created_at: at(row.created_at),
            updated_at: at(row.updated_at),
            delivered_at: row.delivered_at.map(at),
        }
    }
}

/// `GET /api/v1/webhooks/{id}/deliveries`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// The newest 100 deliveries, newest first.
    deliveries: Vec<DeliveryView>,
}

/// `POST /api/v1/webhooks`'s body, for the OpenAPI document: read field by field (any other
/// field is refused, `unknown_field`).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"url": "https://hooks.example.com/reklama", "events": ["advert.paused", "advert.cap_reached"]}))]
#[expect(dead_code, reason = "documentation only, never built")]
pub struct NewWebhookInput {
    /// An absolute `https://` (or `http://`) URL, at most 2048 characters, without credentials
    /// or a fragment, that does not resolve to a loopback, private, link-local or metadata
    /// address.
    url: String,
    /// Event types (see `/asyncapi.json`), at least one; `"*"` for every type.
    events: Vec<String>,
}

/// `PATCH /api/v1/webhooks/{id}`'s body: the fields to change, each optional.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"enabled": true}))]
#[expect(dead_code, reason = "documentation only, never built")]
pub struct WebhookPatchInput {
    url: Option<String>,
    events: Option<Vec<String>>,
    /// `true` enables a disabled webhook again (and forgets its failures); `false` disables it.
    enabled: Option<bool>,
}

fn validation(fields: Vec<FieldError>) -> HttpError {
    HttpError::validation(fields)
}

fn db_error(e: DbError) -> HttpError {
    match e {
        DbError::Unavailable(_) => HttpError::unavailable(),
        other => log_internal(&other),
    }
}

fn not_found() -> HttpError {
    HttpError::not_found("no such webhook")
}

fn no_store(mut response: HttpResponse) -> HttpResponse {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn is_webhook_id(text: &str) -> bool {
    text.strip_prefix(ID_PREFIX)
        .is_some_and(|rest| rest.len() == ID_LEN && is_base62(rest))
}

/// A fresh signing secret: `whsec_` and the base64 of 32 random bytes.
fn fresh_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// The parsed fields of a body; `None` where the field was absent.
#[derive(Debug, Default)]
struct Fields {
    url: Option<String>,
    events: Option<Vec<String>>,
    enabled: Option<bool>,
}

fn event_allowed() -> Vec<String> {
    EventType::ALL
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect()
}

/// Reads `{"url", "events"[, "enabled"]}`; every problem at once. `patch`: `enabled` allowed.
fn parse_body(body: &[u8], patch: bool) -> Result<Fields, HttpError> {
    let object: serde_json::Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        HttpError::bad_request(
            "malformed_body",
            format!("the body is not a JSON object: {e}"),
        )
    })?;
    let known: &[&str] = if patch {
        &["url", "events", "enabled"]
    } else {
        &["url", "events"]
    };
    let mut errors = Vec::new();
    let mut fields = Fields::default();
    for (key, value) in object {
        match (key.as_str(), value) {
            ("url", Value::String(text)) => match guard::url_problem(&text) {
                Some((code, message)) => errors.push(FieldError::new("url", code, message)),
                None => fields.url = Some(text),
            },
            ("url", _) => errors.push(FieldError::new("url", "invalid_type", "must be a string")),
            ("events", Value::Array(items)) => {
                let mut names: Vec<String> = Vec::new();
                let mut bad = false;
                for item in &items {
                    match item {
                        Value::String(name)
                            if name == EVERY_EVENT || EventType::parse(name).is_some() =>
                        {
                            if !names.contains(name) {
                                names.push(name.clone());
                            }
                        }
                        Value::String(name) => {
                            bad = true;
                            errors.push(FieldError {
                                allowed: Some(event_allowed()),
                                ..FieldError::new(
                                    "events",
                                    "unknown_event",
                                    format!(
                                        "unknown event type {name:?}; use the names listed in \
                                         allowed, or \"*\" for every type"
                                    ),
                                )
                            });
                        }
                        _ => {
                            bad = true;
                            errors.push(FieldError::new(
                                "events",
                                "invalid_type",
                                "must be an array of event type names",
                            ));
                        }
                    }
                }
                if items.is_empty() {
                    errors.push(FieldError {
                        allowed: Some(event_allowed()),
                        ..FieldError::new(
                            "events",
                            "empty",
                            "must name at least one event type (or \"*\" for every type)",
                        )
                    });
                } else if !bad {
                    // "*" covers everything: nothing else need be stored.
                    if names.iter().any(|n| n == EVERY_EVENT) {
                        names = vec![EVERY_EVENT.to_owned()];
                    }
                    fields.events = Some(names);
                }
            }
            ("events", _) => errors.push(FieldError::new(
                "events",
                "invalid_type",
                "must be an array of event type names",
            )),
            ("enabled", Value::Bool(on)) if patch => fields.enabled = Some(on),
            ("enabled", _) if patch => errors.push(FieldError::new(
                "enabled",
                "invalid_type",
                "must be true or false",
            )),
            _ => errors.push(FieldError {
                allowed: Some(known.iter().map(|k| (*k).to_owned()).collect()),
                ..FieldError::new(key, "unknown_field", "is not a field of a webhook")
            }),
        }
    }
    if !patch {
        if fields.url.is_none() && !errors.iter().any(|e| e.field == "url") {
            errors.insert(0, FieldError::new("url", "required", "is required"));
        }
        if fields.events.is_none() && !errors.iter().any(|e| e.field == "events") {
            errors.push(FieldError {
                allowed: Some(event_allowed()),
                ..FieldError::new("events", "required", "is required")
            });
        }
    }
    if errors.is_empty() {
        Ok(fields)
    } else {
        Err(validation(errors))
    }
}

/// Refuses a target the SSRF guard refuses (a name that does not resolve now is let through:
/// every delivery checks again).
async fn check_target(url: &str, settings: &WebhookSettings) -> Result<(), HttpError> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    match guard::check(&parsed, settings.allow_private_targets, settings.timeout()).await {
        Err(TargetError::Private { address, what }) => Err(validation(vec![FieldError::new(
            "url",
            "private_target",
            format!("resolves to {address}, {what}: webhooks may only reach public addresses"),
        )])),
        Ok(_) | Err(TargetError::Unresolved(_)) => Ok(()),
    }
}

fn require_json(req: &HttpRequest) -> Result<(), HttpError> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if json {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ))
    }
}

/// `GET /api/v1/webhooks`
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "List your webhooks",
    description = "The customer's webhooks, oldest first, enabled or not. Never a secret. Any key \
                   may list them.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The webhooks", body = WebhookList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn list_webhooks(
    customer: Customer,
    service: web::Data<WebhooksService>,
) -> Result<HttpResponse, HttpError> {
    let id = customer.id;
    let rows = service
        .db
        .run(move |c| Ok::<_, DbError>(store::list(c, id)?))
        .await
        .map_err(db_error)?;
    let webhooks = rows.into_iter().map(WebhookView::from).collect();
    Ok(no_store(HttpResponse::Ok().json(WebhookList { webhooks })))
}

/// `POST /api/v1/webhooks`
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "Create a webhook",
    description = "Registers an endpoint that receives the customer's events of the types named \
                   (`\"*\"`: every type), each POSTed as the event's envelope and signed as the \
                   Standard Webhooks specification says (`webhook-id`, `webhook-timestamp`, \
                   `webhook-signature`). The answer carries the signing secret this once: keep \
                   it. The URL may not resolve to a loopback, private, link-local or metadata \
                   address (422 `private_target`). At most 20 webhooks per customer. Takes a \
                   write key.",
    security(("bearer" = ["write"])),
    request_body(content = NewWebhookInput, content_type = "application/json"),
    responses(
        (status = 201, description = "The new webhook, with its secret shown once", body = NewWebhook,
            headers(("Location" = String, description = "`/api/v1/webhooks/{id}`"))),
        (status = 400, description = "`malformed_body`: not a JSON object", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: a read key (this takes a write key)", body = ErrorBody),
        (status = 409, description = "`too_many_webhooks`: 20 webhooks already", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not application/json", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `url` missing, not an absolute \
            http(s) URL, with credentials or a fragment, too long, or `private_target`; `events` \
            missing, empty or naming an unknown type (`allowed` lists them); another field", body = ErrorBody,
            example = json!({"error": {"status": 422, "code": "validation_failed",
                "message": "url: resolves to 10.0.0.1, a private address: webhooks may only reach public addresses",
                "fields": [{"field": "url", "code": "private_target",
                    "message": "resolves to 10.0.0.1, a private address: webhooks may only reach public addresses"}]}})),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn create_webhook(
    customer: WriteCustomer,
    req: HttpRequest,
    payload: web::Payload,
    service: web::Data<WebhooksService>,
) -> Result<HttpResponse, HttpError> {
    require_json(&req)?;
    let body = read_body(payload, BODY_LIMIT).await?;
    let fields = parse_body(&body, false)?;
    let (Some(url), Some(events)) = (fields.url, fields.events) else {
        return Err(HttpError::internal());
    };
    check_target(&url, &service.settings).await?;
    let secret = fresh_secret();
    let public_id = format!("{ID_PREFIX}{}", random_base62(ID_LEN));
    let customer_id = customer.id;
    let stored_secret = secret.clone();
    let row = service
        .db
        .run(move |c| {
            db::transaction(c, |c| {
                if store::count(c, customer_id)? >= MAX_WEBHOOKS {
                    return Ok(None);
                }
                store::insert(
                    c,
                    customer_id,
                    &public_id,
                    &url,
                    &store::events_column(&events),
                    &stored_secret,
                )
                .map(Some)
            })
            .map_err(DbError::from)
        })
        .await
        .map_err(db_error)?;
    let Some(row) = row else {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!("a customer may have at most {MAX_WEBHOOKS} webhooks: delete one first"),
        ));
    };
    refresh(&service).await;
    let view = WebhookView::from(row);
    let location = format!("/api/v1/webhooks/{}", view.id);
    Ok(no_store(
        HttpResponse::Created()
            .insert_header((header::LOCATION, location))
            .json(NewWebhook {
                id: view.id,
                url: view.url,
                events: view.events,
                secret,
                enabled: view.enabled,
                disabled_reason: view.disabled_reason,
                failing_since: view.failing_since,
                created_at: view.created_at,
                updated_at: view.updated_at,
            }),
    ))
}

/// After a change: the outbox follows at once on this instance.
async fn refresh(service: &WebhooksService) {
    if let Err(e) = service.refresh_interest().await {
        tracing::warn!(error = %e, "webhook subscriptions not re-read; they are every few seconds");
    }
}

async fn find(
    service: &WebhooksService,
    customer: &Customer,
    id: &str,
) -> Result<WebhookRow, HttpError> {
    if !is_webhook_id(id) {
        return Err(not_found());
    }
    let (customer_id, id) = (customer.id, id.to_owned());
    service
        .db
        .run(move |c| Ok::<_, DbError>(store::find(c, customer_id, &id)?))
        .await
        .map_err(db_error)?
        .ok_or_else(not_found)
}

/// `GET /api/v1/webhooks/{id}`
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Get one webhook",
    description = "One of the customer's webhooks, without its secret. Another customer's answers \
                   404, as one that does not exist. Any key.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook's id", example = "wh_3kT9bQx0aZ7mP1vR5sW2")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such webhook among the customer's", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn get_webhook(
    customer: Customer,
    id: web::Path<String>,
    service: web::Data<WebhooksService>,
) -> Result<HttpResponse, HttpError> {
    let row = find(&service, &customer, &id).await?;
    Ok(no_store(HttpResponse::Ok().json(WebhookView::from(row))))
}

/// `PATCH /api/v1/webhooks/{id}`
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Change a webhook",
    description = "Changes `url`, `events` or `enabled` (each optional). `\"enabled\": true` \
                   enables a disabled webhook again and forgets its failures; `false` disables \
                   it. The secret stays. Takes a write key.",
    security(("bearer" = ["write"])),
    params(("id" = String, Path, description = "The webhook's id", example = "wh_3kT9bQx0aZ7mP1vR5sW2")),
    request_body(content = WebhookPatchInput, content_type = "application/json"),
    responses(
        (status = 200, description = "The webhook as it is now", body = WebhookView),
        (status = 400, description = "`malformed_body`: not a JSON object", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: a read key (this takes a write key)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such webhook among the customer's", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not application/json", body = ErrorBody),
        (status = 422, description = "`validation_failed`: as for creating one, and `enabled` \
            not a boolean", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn update_webhook(
    customer: WriteCustomer,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
    service: web::Data<WebhooksService>,
) -> Result<HttpResponse, HttpError> {
    // An unknown id is 404 before the body is judged, as for every per-resource endpoint.
    find(&service, &customer, &id).await?;
    require_json(&req)?;
    let body = read_body(payload, BODY_LIMIT).await?;
    let fields = parse_body(&body, true)?;
    if let Some(url) = &fields.url {
        check_target(url, &service.settings).await?;
    }
    let change = store::Change {
        url: fields.url,
        events: fields.events.as_deref().map(store::events_column),
        enabled: fields.enabled,
    };
    let (customer_id, id) = (customer.id, id.into_inner());
    let row = service
        .db
        .run(move |c| Ok::<_, DbError>(store::update(c, customer_id, &id, &change)?))
        .await
        .map_err(db_error)?
        .ok_or_else(not_found)?;
    refresh(&service).await;
    Ok(no_store(HttpResponse::Ok().json(WebhookView::from(row))))
}

/// `DELETE /api/v1/webhooks/{id}`
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook",
    description = "Deletes the webhook and its deliveries; nothing more is sent to it (a request \
                   already under way finishes). Takes a write key.",
    security(("bearer" = ["write"])),
    params(("id" = String, Path, description = "The webhook's id", example = "wh_3kT9bQx0aZ7mP1vR5sW2")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: a read key (this takes a write key)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such webhook among the customer's", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn delete_webhook(
    customer: WriteCustomer,
    id: web::Path<String>,
    service: web::Data<WebhooksService>,
) -> Result<HttpResponse, HttpError> {
    if !is_webhook_id(&id) {
        return Err(not_found());
    }
    let (customer_id, id) = (customer.id, id.into_inner());
    let deleted = service
        .db
        .run(move |c| Ok::<_, DbError>(store::delete(c, customer_id, &id)?))
        .await
        .map_err(db_error)?;
    if !deleted {
        return Err(not_found());
    }
    refresh(&service).await;
    Ok(no_store(HttpResponse::NoContent().finish()))
}

/// `GET /api/v1/webhooks/{id}/deliveries`
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "A webhook's deliveries",
    description = "The newest 100 deliveries of the webhook, newest first: the event, the status \
                   (`pending`, `succeeded`, `failed`), the attempts so far and the last answer's \
                   status code. Any key.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The webhook's id", example = "wh_3kT9bQx0aZ7mP1vR5sW2")),
    responses(
        (status = 200, description = "The deliveries", body = DeliveryList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such webhook among the customer's", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn list_deliveries(
    customer: Customer,
    id: web::Path<String>,
    service: web::Data<WebhooksService>,
) -> Result<HttpResponse, HttpError> {
    let webhook = find(&service, &customer, &id).await?;
    let rows = service
        .db
        .run(move |c| Ok::<_, DbError>(store::deliveries(c, webhook.id, DELIVERIES_SHOWN)?))
        .await
        .map_err(db_error)?;
    let deliveries = rows.into_iter().map(DeliveryView::from).collect();
    Ok(no_store(
        HttpResponse::Ok().json(DeliveryList { deliveries }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(body: &str, patch: bool) -> Vec<(String, &'static str)> {
        let mut codes: Vec<(String, &'static str)> = match parse_body(body.as_bytes(), patch) {
            Ok(_) => Vec::new(),
            Err(e) => e.fields.into_iter().map(|f| (f.field, f.code)).collect(),
        };
        codes.sort();
        codes
    }

    #[test]
    fn bodies_are_read_strictly() {
        assert!(
            codes(
                r#"{"url": "https://x.example/h", "events": ["advert.paused"]}"#,
                false
            )
            .is_empty()
        );
        assert!(codes(r#"{"url": "https://x.example/h", "events": ["*"]}"#, false).is_empty());
        assert_eq!(
            codes(r#"{"events": []}"#, false),
            vec![("events".into(), "empty"), ("url".into(), "required")]
        );
        assert_eq!(
            codes(
                r#"{"url": "ftp://x", "events": ["advert.exploded"], "x": 1}"#,
                false
            ),
            vec![
                ("events".into(), "unknown_event"),
                ("url".into(), "invalid"),
                ("x".into(), "unknown_field")
            ]
        );
        assert_eq!(
            codes(r#"{"enabled": true}"#, false),
            vec![
                ("enabled".into(), "unknown_field"),
                ("events".into(), "required"),
                ("url".into(), "required")
            ]
        );
        assert!(codes(r#"{"enabled": true}"#, true).is_empty());
        assert_eq!(
            codes(r#"{"enabled": 1}"#, true),
            vec![("enabled".into(), "invalid_type")]
        );
    }

    #[test]
    fn secrets_and_ids_have_their_shape() {
        let secret = fresh_secret();
        let bytes = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(bytes.len(), 32);
        assert_ne!(fresh_secret(), secret);
        assert!(is_webhook_id(&format!("wh_{}", random_base62(20))));
        assert!(!is_webhook_id("wh_short"));
        assert!(!is_webhook_id(&random_base62(23)));
    }
}

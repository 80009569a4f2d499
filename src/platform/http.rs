//! HTTP plumbing shared by every module: the one JSON error format, and extractor settings that
//! turn malformed requests into that format instead of actix's plain-text defaults.
//!
//! Error format (version 1), used by every endpoint:
//! `{"error": {"status": 422, "code": "validation_failed", "message": "...",
//!   "fields": [{"field": "title", "code": "too_long", "message": "..."}]}}`.
//! `code` values are stable; `fields` appears only when particular fields are at fault.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::platform::telemetry::Unmatched;

/// One field's problem, as shown to API clients and next to the field in HTML forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({
    "field": "genre",
    "code": "unknown_genre",
    "message": "unknown genre \"boats\"; accepted values: automotive, beauty, ...",
    "allowed": ["automotive", "beauty", "travel", "other"]
}))]
pub struct FieldError {
    /// The field (or query parameter) at fault, as the request named it.
    #[schema(example = "title")]
    pub field: String,
    /// Stable, per field: `required`, `too_long`, `invalid`, `invalid_type`, `unknown_field`,
    /// `unknown_genre`, `out_of_range`, `invalid_time`, `before_start`, `too_large`, ...
    #[schema(example = "too_long")]
    pub code: &'static str,
    /// For people; may change.
    pub message: String,
    /// The accepted values, when the field takes one of a closed set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
            allowed: None,
        }
    }

    /// The field error for a value the domain refused.
    pub fn invalid(field: impl Into<String>, invalid: crate::domain::invalid::Invalid) -> Self {
        Self {
            field: field.into(),
            code: invalid.code,
            message: invalid.message,
            allowed: invalid.allowed,
        }
    }
}

/// The error format, version 1: the body of every JSON error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error, example = json!({"error": {
    "status": 404, "code": "not_found", "message": "no such advert"
}}))]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

/// What went wrong. New codes and fields may be added within version 1; existing ones keep
/// their meaning.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// The HTTP status, repeated.
    #[schema(example = 422)]
    status: u16,
    /// Stable, for programs: `validation_failed`, `malformed_json`, `malformed_body`,
    /// `invalid_query`, `unsupported_media_type`, `payload_too_large`, `unauthorized`,
    /// `insufficient_scope`, `not_found`, `not_in_cloud_yet`, `last_write_key`, `too_many_keys`,
    /// `too_many_webhooks`, `unavailable`, `internal`.
    #[schema(example = "validation_failed")]
    code: &'a str,
    /// For people; may change.
    #[schema(example = "title: must be at most 90 characters")]
    message: &'a str,
    /// Present only when particular fields are at fault (`validation_failed`, and some
    /// `payload_too_large` and `unsupported_media_type` answers).
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    #[schema(required = false)]
    fields: &'a [FieldError],
}

/// An HTTP error with the JSON body above. Modules map their own error enums into it once.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<FieldError>,
    pub retry_after_secs: Option<u32>,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            retry_after_secs: None,
        }
    }

    pub fn with_fields(mut self, fields: Vec<FieldError>) -> Self {
        self.fields = fields;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// A backend (database, pool) is down or saturated: the client should retry shortly.
    pub fn unavailable() -> Self {
        Self {
            retry_after_secs: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service is temporarily unavailable; retry shortly",
            )
        }
    }

    /// The body says nothing about the cause; the caller logs it.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        )
    }

    pub fn validation(fields: Vec<FieldError>) -> Self {
        let message = match fields.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
        .with_fields(fields)
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        response.json(ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                code: self.code,
                message: &self.message,
                fields: &self.fields,
            },
        })
    }
}

/// The answer to a path no route takes (the app's 404, and a scope's default service that finds
/// nothing it serves in the rest of the path): marks the request, so that the edge counts it
/// as `unmatched` without asking the router.
pub fn no_route(req: &HttpRequest) -> HttpError {
    req.extensions_mut().insert(Unmatched);
    HttpError::not_found("no such route")
}

/// JSON bodies: size limit and the error format above for malformed input.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, _req| {
            use actix_web::error::JsonPayloadError;
            let http = match &err {
                JsonPayloadError::OverflowKnownLength { .. }
                | JsonPayloadError::Overflow { .. } => HttpError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the request body is larger than {limit} bytes"),
                ),
                JsonPayloadError::ContentType => HttpError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as application/json",
                ),
                JsonPayloadError::Deserialize(e) => HttpError::bad_request(
                    "malformed_json",
                    format!("the JSON body is malformed: {e}"),
                ),
                other => HttpError::bad_request("malformed_body", other.to_string()),
            };
            actix_web::Error::from(http)
        })
}

/// Path segments that fail to parse (e.g. a non-numeric id) are a 404, not a 400 with actix's text.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|_err, _req| HttpError::not_found("no such resource").into())
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        HttpError::bad_request("invalid_query", format!("invalid query string: {err}")).into()
    })
}

/// Wraps a handler-level result so that any error is logged once with its full chain.
pub fn log_internal(error: &dyn std::error::Error) -> HttpError {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::error!(error = %chain, "internal error");
    HttpError::internal()
}

/// Content-Security-Policy of every HTML page: only our own styles and images, no scripts, no
/// framing, forms post only to us.
const HTML_CSP: &str = "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; \
                        frame-ancestors 'none'; base-uri 'none'";

/// An HTML response with the security headers every page carries.
pub fn html_page(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, HTML_CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// Reads a whole request body, refusing it once it passes `limit` bytes.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, HttpError> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| HttpError::bad_request("malformed_body", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

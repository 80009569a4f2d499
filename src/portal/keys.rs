//! The customer's API keys, for programs and for people: `GET`/`POST /api/v1/keys` and
//! `DELETE /api/v1/keys/{id}` (JSON, with an API key), and the dashboard's "API keys" page
//! (`GET`/`POST /dashboard/keys`, `POST /dashboard/keys/{id}/revoke`). Keys themselves are the
//! platform's ([`Customers`]); this is where a customer manages its own.
//!
//! Rules: a new key is shown once, in the answer that creates it; lists never carry a secret or
//! a hash. Creating and revoking take a write key (or a dashboard session signed in with one).
//! Any key may be revoked, the one presented included (its next request is 401, and dashboard
//! sessions opened with it end), except the customer's last live write key (409
//! `last_write_key`): that one would leave the account without a key that can manage it.
//! Another customer's key id answers 404, as one that does not exist.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::platform::auth::{
    AuthError, Customer, Customers, KeyError, KeyInfo, Scope, WriteCustomer, name_field,
    scope_field,
};
use crate::platform::http::{ErrorBody, FieldError, HttpError, html_page, read_body};

use super::Portal;
use super::session::{PageError, SignedIn, WithCsrf, see_other};
use super::templates::keys as pages;

/// The body of `POST /api/v1/keys` is far below this.
const BODY_LIMIT: usize = 8 * 1024;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/keys")
            .route(web::get().to(list_keys))
            .route(web::post().to(create_key)),
    )
    .route("/api/v1/keys/{id}", web::delete().to(revoke_key))
    .service(
        web::resource("/dashboard/keys")
            .route(web::get().to(keys_page))
            .route(web::post().to(create_key_form)),
    )
    .route(
        "/dashboard/keys/{id}/revoke",
        web::post().to(revoke_key_form),
    );
}

/// The keys' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_keys,
    create_key,
    revoke_key,
    keys_page,
    create_key_form,
    revoke_key_form
))]
pub(super) struct ApiDoc;

// ---- the JSON API ----------------------------------------------------------------------------

/// A live key, as its owner sees it: never its secret or its hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "Zq3xKe81bT0a", "scope": "read", "name": "reporting",
    "created_at": "2026-12-08T09:30:00Z", "last_used_at": "2026-12-08T10:02:00Z", "current": false}))]
pub(super) struct KeyView {
    /// The key's public id: the `rk_<id>` part of the key, and its `{id}` in
    /// `DELETE /api/v1/keys/{id}`.
    id: String,
    scope: Scope,
    /// The label given when it was made, if any.
    name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// When it was last used, to the minute (noted at most once a minute); `null` if never.
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
    /// Whether this is the key the request was made with.
    current: bool,
}

impl KeyView {
    fn new(info: KeyInfo, current_key: &str) -> Self {
        Self {
            current: info.key_id == current_key,
            id: info.key_id,
            scope: info.scope,
            name: info.name,
            created_at: at(info.created_at),
            last_used_at: info.last_used_at.map(at),
        }
    }
}

/// Unix milliseconds as a time.
pub(super) fn at(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `GET /api/v1/keys`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct KeyList {
    /// The live keys, oldest first.
    keys: Vec<KeyView>,
}

/// `POST /api/v1/keys`'s answer: the key itself, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "Zq3xKe81bT0a", "key": "rk_Zq3xKe81bT0a_4rVbN0pQ2sT6uW8yA1cE3gI5kM7oQ9sU",
    "scope": "read", "name": "reporting", "created_at": "2026-12-08T09:30:00Z", "last_used_at": null}))]
pub(super) struct NewKey {
    /// The key's public id.
    id: String,
    /// The whole key, `rk_<id>_<secret>`: shown this once, never again (only its SHA-256 is
    /// kept).
    key: String,
    scope: Scope,
    name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Always `null` for a new key.
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
}

/// `POST /api/v1/keys`'s body, for the OpenAPI document: the body is read field by field (any
/// other field is refused, `unknown_field`).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"scope": "read", "name": "reporting"}))]
#[expect(dead_code, reason = "documentation only, never built")]
pub(super) struct NewKeyInput {
    /// `read`: GET adverts, variants, creatives, full records, reports and keys. `write`:
    /// everything.
    scope: Scope,
    /// A label to tell keys apart, at most 60 characters; `null`, empty or left out: none.
    #[schema(max_length = 60)]
    name: Option<String>,
}

/// The body `{"scope": ..., "name": ...}`; any other field is refused.
fn parse_new_key(body: &[u8]) -> Result<(Scope, Option<String>), HttpError> {
    let object: serde_json::Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        HttpError::bad_request(
            "malformed_body",
            format!("the body is not a JSON object: {e}"),
        )
    })?;
    let mut errors = Vec::new();
    let (mut scope, mut name) = (None, None);
    let mut scope_seen = false;
    for (key, value) in object {
        match (key.as_str(), value) {
            ("scope", Value::String(text)) => {
                scope_seen = true;
                match scope_field(Some(&text)) {
                    Ok(parsed) => scope = Some(parsed),
                    Err(e) => errors.push(e),
                }
            }
            ("scope", Value::Null) => {}
            ("scope", _) => {
                scope_seen = true;
                errors.push(FieldError {
                    allowed: Some(Scope::allowed()),
                    ..FieldError::new("scope", "invalid_type", "must be a string: read or write")
                });
            }
            ("name", Value::String(text)) => match name_field(Some(&text)) {
                Ok(parsed) => name = parsed,
                Err(e) => errors.push(e),
            },
            ("name", Value::Null) => {}
            ("name", _) => errors.push(FieldError::new("name", "invalid_type", "must be a string")),
            _ => errors.push(FieldError {
                allowed: Some(vec!["scope".to_owned(), "name".to_owned()]),
                ..FieldError::new(key, "unknown_field", "is not a field of a key")
            }),
        }
    }
    if !scope_seen && let Err(e) = scope_field(None) {
        errors.insert(0, e);
    }
    match scope {
        Some(scope) if errors.is_empty() => Ok((scope, name)),
        _ => Err(HttpError::validation(errors)),
    }
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

fn no_store(mut response: HttpResponse) -> HttpResponse {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /api/v1/keys`
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "keys",
    summary = "List your API keys",
    description = "The customer's live keys, oldest first: public id, scope, name, when made and \
                   when last used (noted at most once a minute), and which one made this request \
                   (`current`). Never a key's secret or hash. Any key may list them.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn list_keys(
    customer: Customer,
    customers: web::Data<Customers>,
) -> Result<HttpResponse, HttpError> {
    let keys = customers.keys(customer.id).await.map_err(AuthError::Db)?;
    let keys = keys
        .into_iter()
        .map(|k| KeyView::new(k, &customer.key_id))
        .collect();
    Ok(no_store(HttpResponse::Ok().json(KeyList { keys })))
}

/// `POST /api/v1/keys`
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "keys",
    summary = "Create an API key",
    description = "A new key of the customer's, `read` or `write`, with an optional name. The \
                   answer carries the whole key (`key`) this once: keep it, it is never shown \
                   again. Takes a write key. At most 50 live keys per customer.",
    security(("bearer" = ["write"])),
    request_body(content = NewKeyInput, content_type = "application/json"),
    responses(
        (status = 201, description = "The new key, shown once", body = NewKey),
        (status = 400, description = "`malformed_body`: not a JSON object", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: a read key (this takes a write key)", body = ErrorBody),
        (status = 409, description = "`too_many_keys`: 50 live keys already", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: more than 8 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not application/json", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `scope` missing or not `read`/`write`, \
            `name` too long, or a field that is not `scope` or `name`", body = ErrorBody,
            example = json!({"error": {"status": 422, "code": "validation_failed", "message": "scope: must be read or write",
                "fields": [{"field": "scope", "code": "invalid", "message": "must be read or write", "allowed": ["read", "write"]}]}})),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn create_key(
    customer: WriteCustomer,
    req: HttpRequest,
    payload: web::Payload,
    customers: web::Data<Customers>,
) -> Result<HttpResponse, HttpError> {
    if !is_json(&req) {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    let body = read_body(payload, BODY_LIMIT).await?;
    let (scope, name) = parse_new_key(&body)?;
    let issued = customers.add_key(&customer, scope, name).await?;
    let info = issued.info;
    Ok(no_store(HttpResponse::Created().json(NewKey {
        id: info.key_id,
        key: issued.key,
        scope: info.scope,
        name: info.name,
        created_at: at(info.created_at),
        last_used_at: None,
    })))
}

/// `DELETE /api/v1/keys/{id}`
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{id}",
    tag = "keys",
    summary = "Revoke an API key",
    description = "Revokes one of the customer's keys at once, on every instance: its next \
                   request is 401, and dashboard sessions signed in with it end. The key making \
                   this request may revoke itself (then that was its last request), but the \
                   customer's last live write key cannot be revoked (409 `last_write_key`): \
                   create another write key first. Another customer's key answers 404, exactly \
                   as one that does not exist. Takes a write key.",
    security(("bearer" = ["write"])),
    params(("id" = String, Path, description = "The key's public id (the `rk_<id>` part)", example = "Zq3xKe81bT0a")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: a read key (this takes a write key)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such live key among the customer's", body = ErrorBody),
        (status = 409, description = "`last_write_key`: the customer's only live write key", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn revoke_key(
    customer: WriteCustomer,
    id: web::Path<String>,
    customers: web::Data<Customers>,
) -> Result<HttpResponse, HttpError> {
    customers.revoke_key(customer.id, &id).await?;
    Ok(no_store(HttpResponse::NoContent().finish()))
}

// ---- the dashboard page ----------------------------------------------------------------------

/// `POST /dashboard/keys`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(description = "The new key form, urlencoded.")]
pub(super) struct NewKeyForm {
    /// The session's CSRF token; missing or wrong: 403.
    #[serde(default)]
    csrf_token: Option<String>,
    /// `read` or `write`.
    #[serde(default)]
    #[schema(value_type = Scope)]
    scope: Option<String>,
    /// An optional label, at most 60 characters.
    #[serde(default)]
    name: Option<String>,
}

impl WithCsrf for NewKeyForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// `POST /dashboard/keys/{id}/revoke`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(description = "A key's revoke button, urlencoded.")]
pub(super) struct RevokeKeyForm {
    /// The session's CSRF token; missing or wrong: 403.
    #[serde(default)]
    csrf_token: Option<String>,
}

impl WithCsrf for RevokeKeyForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// The page, for `signed_in`, with what happened just before.
async fn render(
    customers: &Customers,
    signed_in: &SignedIn,
    outcome: pages::Outcome<'_>,
) -> Result<String, PageError> {
    let keys = customers
        .keys(signed_in.customer.id)
        .await
        .map_err(|e| signed_in.fail(AuthError::Db(e)))?;
    Ok(pages::keys_page(signed_in, &keys, outcome))
}

/// `GET /dashboard/keys`
#[utoipa::path(
    get,
    path = "/dashboard/keys",
    tag = "dashboard",
    summary = "The API keys page",
    description = "The customer's live keys (public id, scope, name, made, last used; the one \
                   the session was signed in with is marked), a form to create one and a revoke \
                   button for each. A session signed in with a read key sees the list only.",
    security(("session" = [])),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in, or the session has ended: to the sign-in page",
            headers(
                ("Location" = String, description = "`/login`"),
                ("Set-Cookie" = String, description = "Clears the cookie, when a stale one was sent")
            )),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn keys_page(
    signed_in: SignedIn,
    customers: web::Data<Customers>,
) -> Result<HttpResponse, PageError> {
    let html = render(&customers, &signed_in, pages::Outcome::None).await?;
    Ok(html_page(StatusCode::OK, html))
}

/// `POST /dashboard/keys`
#[utoipa::path(
    post,
    path = "/dashboard/keys",
    tag = "dashboard",
    summary = "Create an API key, signed in",
    description = "The new key form (urlencoded, at most 8 KiB, with the session's CSRF token). \
                   The answer is the keys page with the new key shown this once. Refused when \
                   sent from another site, without the right token, or from a session signed in \
                   with a read key. Errors are HTML pages.",
    security(("session" = [])),
    request_body(content = NewKeyForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 201, description = "Created: the keys page, with the new key shown once", body = String,
            content_type = "text/html"),
        (status = 303, description = "Not signed in, or the session has ended: to the sign-in page",
            headers(
                ("Location" = String, description = "`/login`"),
                ("Set-Cookie" = String, description = "Clears the cookie, when a stale one was sent")
            )),
        (status = 400, description = "A broken body: an error page", body = String, content_type = "text/html"),
        (status = 403, description = "Sent from another site, the CSRF token is missing or wrong, or the session \
            was signed in with a read key: a \"Request refused\" page", body = String, content_type = "text/html"),
        (status = 409, description = "50 live keys already: the page again, saying so", body = String,
            content_type = "text/html"),
        (status = 413, description = "The body is larger than 8 KiB: an error page", body = String, content_type = "text/html"),
        (status = 422, description = "`scope` is not `read` or `write`, or `name` is too long: the page again, \
            the error beside the field", body = String, content_type = "text/html"),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn create_key_form(
    req: HttpRequest,
    payload: web::Payload,
    portal: web::Data<Portal>,
    customers: web::Data<Customers>,
) -> Result<HttpResponse, PageError> {
    let (session, form) = portal
        .write_form_session::<NewKeyForm>(&req, payload)
        .await?;
    let signed_in = SignedIn::of(&session);
    let checked = (
        scope_field(form.scope.as_deref()),
        name_field(form.name.as_deref()),
    );
    let (scope, name) = match checked {
        (Ok(scope), Ok(name)) => (scope, name),
        (scope, name) => {
            let errors: Vec<FieldError> = [scope.err(), name.err()].into_iter().flatten().collect();
            let html = render(&customers, &signed_in, pages::Outcome::Invalid(&errors)).await?;
            return Err(PageError::Answer {
                html,
                error: Box::new(HttpError::validation(errors)),
            });
        }
    };
    match customers.add_key(&session.customer, scope, name).await {
        Ok(issued) => {
            let html = render(
                &customers,
                &signed_in,
                pages::Outcome::Created {
                    key: &issued.key,
                    info: &issued.info,
                },
            )
            .await?;
            Ok(html_page(StatusCode::CREATED, html))
        }
        Err(KeyError::TooManyKeys) => {
            let error = HttpError::from(KeyError::TooManyKeys);
            let html = render(
                &customers,
                &signed_in,
                pages::Outcome::Refused(&error.message),
            )
            .await?;
            Err(PageError::Answer {
                html,
                error: Box::new(error),
            })
        }
        Err(e) => Err(signed_in.fail(e)),
    }
}

/// `POST /dashboard/keys/{id}/revoke`
#[utoipa::path(
    post,
    path = "/dashboard/keys/{id}/revoke",
    tag = "dashboard",
    summary = "Revoke an API key, signed in",
    description = "A key's revoke button (urlencoded, at most 8 KiB, with the session's CSRF \
                   token); the same rules as `DELETE /api/v1/keys/{id}`. Revoking the key the \
                   session was signed in with ends the session: the browser goes to the sign-in \
                   page. Refused when sent from another site, without the right token, or from a \
                   session signed in with a read key. Errors are HTML pages.",
    security(("session" = [])),
    params(("id" = String, Path, description = "The key's public id")),
    request_body(content = RevokeKeyForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Revoked: back to the keys page, or to the sign-in page when it was the \
            session's own key (the cookie is cleared). Not signed in, or the session has ended: to the sign-in page",
            headers(
                ("Location" = String, description = "`/dashboard/keys` or `/login`"),
                ("Set-Cookie" = String, description = "Clears the cookie, when the session ended")
            )),
        (status = 400, description = "A broken body: an error page", body = String, content_type = "text/html"),
        (status = 403, description = "Sent from another site, the CSRF token is missing or wrong, or the session \
            was signed in with a read key: a \"Request refused\" page", body = String, content_type = "text/html"),
        (status = 404, description = "No such live key among the customer's: a \"Not found\" page", body = String,
            content_type = "text/html"),
        (status = 409, description = "The customer's last live write key: the page again, saying so", body = String,
            content_type = "text/html"),
        (status = 413, description = "The body is larger than 8 KiB: an error page", body = String, content_type = "text/html"),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn revoke_key_form(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    portal: web::Data<Portal>,
    customers: web::Data<Customers>,
) -> Result<HttpResponse, PageError> {
    let (session, _form) = portal
        .write_form_session::<RevokeKeyForm>(&req, payload)
        .await?;
    let signed_in = SignedIn::of(&session);
    match customers.revoke_key(session.customer.id, &id).await {
        Ok(()) if *id == session.key_id => {
            // The session ended with its key.
            let mut response = see_other("/login");
            if let Ok(clear) = HeaderValue::from_str(&portal.sessions().clear_cookie()) {
                response.headers_mut().insert(header::SET_COOKIE, clear);
            }
            Ok(response)
        }
        Ok(()) => Ok(see_other("/dashboard/keys")),
        Err(KeyError::NotFound) => {
            Err(signed_in.fail(HttpError::not_found("There is no such key among yours.")))
        }
        Err(KeyError::LastWriteKey) => {
            let error = HttpError::from(KeyError::LastWriteKey);
            let html = render(
                &customers,
                &signed_in,
                pages::Outcome::Refused(&error.message),
            )
            .await?;
            Err(PageError::Answer {
                html,
                error: Box::new(error),
            })
        }
        Err(e) => Err(signed_in.fail(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Vec<(String, &'static str, Option<Vec<String>>)> {
        match parse_new_key(body.as_bytes()) {
            Err(e) => e
                .fields
                .into_iter()
                .map(|f| (f.field, f.code, f.allowed))
                .collect(),
            Ok(ok) => panic!("{body}: {ok:?}"),
        }
    }

    #[test]
    fn a_new_key_takes_a_scope_and_an_optional_name_only() {
        assert_eq!(
            parse_new_key(br#"{"scope": "read"}"#).unwrap(),
            (Scope::Read, None)
        );
        assert_eq!(
            parse_new_key(br#"{"scope": "write", "name": "  ci  "}"#).unwrap(),
            (Scope::Write, Some("ci".to_owned()))
        );
        assert_eq!(
            parse_new_key(br#"{"scope": "read", "name": null}"#).unwrap(),
            (Scope::Read, None)
        );
        let allowed = Some(vec!["read".to_owned(), "write".to_owned()]);
        assert_eq!(
            fields(r#"{"scope": "admin"}"#),
            [("scope".into(), "invalid", allowed.clone())]
        );
        assert_eq!(
            fields("{}"),
            [("scope".into(), "required", allowed.clone())]
        );
        assert_eq!(
            fields(r#"{"scope": 1}"#),
            [("scope".into(), "invalid_type", allowed.clone())]
        );
        assert_eq!(
            fields(r#"{"scope": "read", "owner": 2}"#),
            [(
                "owner".into(),
                "unknown_field",
                Some(vec!["scope".to_owned(), "name".to_owned()])
            )]
        );
        let long = format!(r#"{{"scope": "read", "name": "{}"}}"#, "n".repeat(61));
        assert_eq!(fields(&long), [("name".into(), "too_long", None)]);
        assert_eq!(
            fields(r#"{"scope": "read", "name": "a\u0007b"}"#),
            [("name".into(), "invalid", None)]
        );
        assert_eq!(parse_new_key(b"[1]").unwrap_err().code, "malformed_body");
    }
}

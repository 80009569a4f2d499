//! The OpenAPI document (`GET /openapi.json`) and the interactive documentation (`GET /docs`).
//!
//! The document is generated from the code: each module describes its own endpoints next to the
//! handlers (`#[utoipa::path]` on them, `ApiDoc` in its `http.rs`) and this composition root
//! merges them with the endpoints it serves itself. It is built and serialised once, on first
//! use. `/docs` is Swagger UI, whose files are compiled into the binary (from the
//! `utoipa-swagger-ui-vendored` crate); nothing is fetched from elsewhere, at build time or by
//! the browser.

use std::sync::{Arc, LazyLock};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::modules::{intake, integrations, serving, tracking};
use crate::platform::http::{ErrorBody, FieldError, HttpError};
use crate::platform::session::COOKIE_NAME;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";

/// Content-Security-Policy of the documentation pages: scripts and styles only from this origin,
/// nothing inline; images also as `data:` (Swagger UI's icons) and `blob:` (image answers shown
/// by "try it out"); requests only to this origin; no framing. Checked in a browser with every
/// operation and model open and "try it out" used: no violation.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                        img-src 'self' data: blob:; connect-src 'self'; form-action 'self'; \
                        frame-ancestors 'none'; base-uri 'none'";

/// The documentation page. Every script and stylesheet it names is a file served under `/docs/`
/// from the binary; the one that starts Swagger UI (`swagger-initializer.js`) is generated from
/// [`swagger_config`].
const DOCS_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>reklama API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="stylesheet" href="/docs/index.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js" charset="utf-8"></script>
<script src="/docs/swagger-ui-standalone-preset.js" charset="utf-8"></script>
<script src="/docs/swagger-initializer.js" charset="utf-8"></script>
</body>
</html>
"#;

const DESCRIPTION: &str = "\
reklama: advert intake (an HTML form and a JSON API), tracked links with click counting, and \
serving of adverts to frontends.

**Authentication.** The customer API takes an API key as `Authorization: Bearer rk_...` \
(`reklama customer add NAME` prints one). A key is `write` (everything) or `read`: a read key \
may GET adverts, variants, creatives, full records, reports and keys, and anything else is \
403 `insufficient_scope`; operations that take a write key name the `bearer` scheme with the \
scope `write`. Keys are made and revoked with `/api/v1/keys`, on the dashboard's API keys page, \
or `reklama customer key add NAME --scope read|write`. The dashboard (`/login`, `/dashboard...`) is for \
people: signing in with the key sets a session cookie, and its forms carry the session's CSRF \
token as the `csrf_token` field. `/api/v1/serve`, `/r/{code}`, `/media/...` and the \
operational endpoints take none, except `/metrics` when `admin.token` is set \
(`Authorization: Bearer <admin.token>`). With `server.admin_listen` set, the operational \
endpoints (but `/healthz`) and this documentation are served on that listener only.

**Errors.** Every JSON API error has one shape, the `Error` schema, version 1:
`{\"error\": {\"status\": 422, \"code\": \"validation_failed\", \"message\": \"...\", \
\"fields\": [{\"field\": \"title\", \"code\": \"too_long\", \"message\": \"...\"}]}}`. \
`code` is stable and meant for programs: `validation_failed`, `malformed_json`, \
`malformed_body`, `invalid_query`, `unsupported_media_type`, `payload_too_large`, \
`unauthorized`, `insufficient_scope`, `not_found`, `not_in_cloud_yet`, `last_write_key`, \
`too_many_keys`, `unavailable`, `internal`. `message` is for people and may change. `fields` appears only when particular fields are at fault, each with its \
own stable `code` (and `allowed` values for closed sets). 503 and 409 carry `Retry-After`. \
Within version 1 codes and fields may be added, never changed or removed. Answers meant for \
browsers are the exceptions: the HTML form (`POST /adverts`) and the dashboard answer errors as \
HTML pages, and the tracked link (`/r/{code}`) as short plain text.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "reklama",
        description = DESCRIPTION,
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")
    ),
    paths(healthz, readyz, metrics, openapi_json, asyncapi_json, docs_page, docs_file),
    components(schemas(ErrorBody, FieldError)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "adverts", description = "Create, list, change and delete adverts (API key)"),
        (name = "reports", description = "Clicks, impressions and CTR (API key)"),
        (name = "webhooks", description = "Endpoints that receive the customer's events, signed (API key; changes take a write key)"),
        (name = "keys", description = "The customer's API keys (API key; creating and revoking take a write key)"),
        (name = "serving", description = "Adverts for frontends, creatives, full records"),
        (name = "tracking", description = "Tracked links"),
        (name = "form", description = "The HTML form for people"),
        (name = "dashboard", description = "The customer dashboard for people (session cookie)"),
        (name = "operations", description = "Health, readiness, metrics, this documentation and the events' document")
    )
)]
struct RootDoc;

/// Adds the security schemes the customer endpoints name: `bearer` (the API) and `session` (the
/// dashboard).
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("rk_<id>_<secret>")
                    .description(Some(
                        "A customer's API key, `rk_<id>_<secret>`, as printed once by \
                         `reklama customer add NAME` or made by `POST /api/v1/keys`. Its scope \
                         is `read` (GETs) or `write` (everything); an operation listing the \
                         scope `write` refuses a read key with 403 `insufficient_scope`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                COOKIE_NAME.to_owned(),
                format!(
                    "The dashboard's session, set by `POST /login` (HttpOnly, SameSite=Lax; \
                     over HTTPS named `__Host-{COOKIE_NAME}`, Secure, Path=/, no Domain) and \
                     ended by `POST /logout` on every instance. It is signed by the service, \
                     recorded server-side, and names the API key it was opened with, never its \
                     secret; revoking the key ends it. A session signed in with a read key is \
                     read-only: forms that change something answer 403. Forms that change something also carry the \
                     session's CSRF token, the `csrf_token` field of every dashboard form; a \
                     `{COOKIE_NAME}` cookie alone is not enough."
                ),
            ))),
        );
    }
}

/// The whole document: this root's endpoints and every module's.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = RootDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.merge(intake::openapi());
    doc.merge(crate::portal::openapi());
    doc.merge(tracking::ApiDoc::openapi());
    doc.merge(serving::ApiDoc::openapi());
    doc.merge(integrations::ApiDoc::openapi());
    distinct_head_operation_ids(&mut doc);
    doc
}

/// One handler serving GET and HEAD (`/r/{code}`) is described once, so both operations get its
/// name; operation ids must be unique, so the HEAD one gets a suffix.
fn distinct_head_operation_ids(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        if let (Some(get), Some(head)) = (&item.get, &mut item.head)
            && head.operation_id.is_some()
            && head.operation_id == get.operation_id
        {
            head.operation_id = head.operation_id.take().map(|id| format!("{id}_head"));
        }
    }
}

/// The document serialised once, on first use.
static DOCUMENT: LazyLock<Option<web::Bytes>> = LazyLock::new(|| {
    serde_json::to_vec(&document())
        .map(web::Bytes::from)
        .map_err(|e| tracing::error!(error = %e, "the OpenAPI document cannot be serialised"))
        .ok()
});

fn swagger_config() -> utoipa_swagger_ui::Config<'static> {
    utoipa_swagger_ui::Config::new([DOCUMENT_PATH])
        .use_base_layout()
        .try_it_out_enabled(true)
        .display_request_duration(true)
        .persist_authorization(false)
        .validator_url("none")
}

static SWAGGER_CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
    LazyLock::new(|| Arc::new(swagger_config()));

/// Mounts `/openapi.json`, `/docs` and the documentation's files.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(DOCUMENT_PATH, web::get().to(openapi_json))
        .route("/docs", web::get().to(docs_page))
        .route("/docs/", web::get().to(docs_page))
        .route("/docs/{file}", web::get().to(docs_file));
}

/// This document
///
/// The OpenAPI 3.1 document of every endpoint, generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The document", body = Object, content_type = "application/json"),
        (status = 500, description = "`internal`", body = ErrorBody)
    )
)]
async fn openapi_json() -> Result<HttpResponse, HttpError> {
    let body = DOCUMENT.as_ref().ok_or_else(HttpError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body.clone()))
}

/// Interactive documentation
///
/// Swagger UI over `/openapi.json`, with "try it out". Its scripts and styles are served from
/// `/docs/` by this binary.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    responses((status = 200, description = "The page", body = String, content_type = "text/html"))
)]
async fn docs_page() -> HttpResponse {
    let mut response = docs_response(StatusCode::OK, "text/html; charset=utf-8", DOCS_PAGE.into());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A file of the interactive documentation
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "operations",
    params(("file" = String, Path, description = "A Swagger UI file", example = "swagger-ui-bundle.js")),
    responses(
        (status = 200, description = "The file (JavaScript, CSS, an image, a source map, or \
                                       `index.html`, which is the `/docs` page)",
            content(("text/javascript"), ("application/javascript"), ("text/css"), ("image/png"),
                ("application/json"), ("text/html"))),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody)
    )
)]
async fn docs_file(file: web::Path<String>) -> Result<HttpResponse, HttpError> {
    // `index.html` is Swagger UI's own page, with relative links: `/docs` is ours.
    if file.as_str() == "index.html" {
        return Ok(docs_page().await);
    }
    match utoipa_swagger_ui::serve(&file, SWAGGER_CONFIG.clone()) {
        Ok(Some(found)) => {
            let mut response =
                docs_response(StatusCode::OK, &found.content_type, found.bytes.to_vec());
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            Ok(response)
        }
        Ok(None) => Err(HttpError::not_found("no such file")),
        Err(e) => {
            tracing::error!(error = %e, "swagger-ui file failed");
            Err(HttpError::internal())
        }
    }
}

fn docs_response(status: StatusCode, content_type: &str, body: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, DOCS_CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .body(body)
}

// The endpoints `main_app` serves itself (see its `mod.rs`), described here so that handlers
// there stay as they are. These functions exist only to carry the descriptions.

/// Liveness
///
/// Answers as long as the process serves HTTP; touches no backend.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
#[expect(
    dead_code,
    reason = "documentation only: the handler is main_app::healthz"
)]
fn healthz() {}

/// Readiness
///
/// Each backend this instance uses, with its state. Always 200 while the process answers:
/// "degraded" when a backend is down, since redirects and serving go on from memory (intake and
/// reports answer 503 meanwhile). Alert on the states, not on the status code. With
/// `admin.token` set, `checks` is given only for `Authorization: Bearer <admin.token>`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready, or degraded with the backends that are down", body = Readiness,
            example = json!({"status": "degraded", "checks": {"database": "up", "redis": "down", "cloud": "up"}}))
    )
)]
#[expect(
    dead_code,
    reason = "documentation only: the handler is main_app::readyz"
)]
fn readyz() {}

/// Prometheus metrics
///
/// Job outcomes and queue depth, counter flushes and pushes, journal appends and size, database
/// checkouts. With `admin.token` set, only for `Authorization: Bearer <admin.token>`. With
/// `server.admin_listen` set, this and the other operations endpoints (but `/healthz`) are
/// served on that listener only.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, description = "`unauthorized`: `admin.token` is set and was not presented", body = ErrorBody)
    )
)]
#[expect(
    dead_code,
    reason = "documentation only: the handler is main_app::metrics_page"
)]
fn metrics() {}

/// The events' document
///
/// The AsyncAPI 3.0 document of the events reklama publishes to `events.exchange` and delivers
/// to webhooks: every event type, its envelope and its `data`, generated from the code like this
/// one (see docs/EVENTS.md). Served with this documentation: with `server.admin_listen` set, on
/// that listener only.
#[utoipa::path(
    get,
    path = "/asyncapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The AsyncAPI 3.0 document", body = Object, content_type = "application/json")
    )
)]
#[expect(
    dead_code,
    reason = "documentation only: the handler is mounted by main_app::asyncapi"
)]
fn asyncapi_json() {}

/// `GET /healthz`, for the document only.
#[derive(utoipa::ToSchema)]
#[schema(description = "The process is alive.")]
#[expect(dead_code, reason = "documentation only, never built")]
struct Health {
    #[schema(example = "ok")]
    status: String,
}

/// `GET /readyz`, for the document only.
#[derive(utoipa::ToSchema)]
#[schema(
    description = "Whether this instance can serve, and each backend's state.",
    example = json!({"status": "ready", "checks": {"database": "up", "redis": "disabled", "cloud": "up"}})
)]
#[expect(dead_code, reason = "documentation only, never built")]
struct Readiness {
    /// `ready` (every backend up) or `degraded` (some down).
    #[schema(example = "ready")]
    status: String,
    /// Left out when `admin.token` is set and was not presented.
    checks: Option<ReadinessChecks>,
}

/// Each backend's state: `up` or `down` (`disabled` for Redis when not configured).
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "documentation only, never built")]
struct ReadinessChecks {
    database: String,
    redis: String,
    cloud: String,
}

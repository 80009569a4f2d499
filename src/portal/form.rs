//! The advert form for people: `GET /` shows it, `POST /adverts` takes it with the API key as a
//! field and answers the created advert's page (or the form again, each error beside its
//! field), and the preview link of that page shows every placement once rendered. Also the
//! pages' static assets. The advert itself is made by intake, as for the JSON API.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::domain::AdvertId;
use crate::modules::intake::{
    AdvertUpload, AdvertView, FormReader, IntakeError, RawAdvert, declared_length_within,
    is_multipart,
};
use crate::platform::auth::{AuthError, insufficient_scope};
use crate::platform::http::{FieldError, HttpError, html_page};

use super::Portal;
use super::session::{PageError, SignedIn, with_retry_after};
use super::templates::{self, form as pages};

const STYLESHEET: &str = include_str!("../../assets/reklama.css");
const PENDING_IMAGE: &str = include_str!("../../assets/pending.svg");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(show_form))
        .route("/assets/reklama.css", web::get().to(stylesheet))
        .route("/assets/pending.svg", web::get().to(pending_image))
        .route("/assets/dashboard.js", web::get().to(script))
        .route("/adverts", web::post().to(submit_form))
        .route("/adverts/{id}/preview", web::get().to(preview_advert));
}

/// The form's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    show_form,
    stylesheet,
    pending_image,
    script,
    submit_form,
    preview_advert
))]
pub(super) struct ApiDoc;

/// The advert form
///
/// An HTML page without JavaScript; the customer types the API key into the form.
#[utoipa::path(
    get,
    path = "/",
    tag = "form",
    responses((status = 200, description = "The form", body = String, content_type = "text/html"))
)]
async fn show_form(req: HttpRequest, portal: web::Data<Portal>) -> HttpResponse {
    // Signed in to the dashboard, the form needs no API key (and posts to the dashboard). A
    // session of a read key cannot submit: it gets the form that asks for a key.
    let signed_in = portal.signed_in(&req).await.filter(SignedIn::may_write);
    html_page(
        StatusCode::OK,
        pages::form_page(&RawAdvert::default(), &[], None, signed_in.as_ref()),
    )
}

/// The pages' stylesheet
#[utoipa::path(
    get,
    path = "/assets/reklama.css",
    tag = "form",
    responses((status = 200, description = "CSS", body = String, content_type = "text/css"))
)]
async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLESHEET)
}

/// The placeholder of a placement still being prepared
#[utoipa::path(
    get,
    path = "/assets/pending.svg",
    tag = "form",
    responses((status = 200, description = "SVG", body = String, content_type = "image/svg+xml"))
)]
async fn pending_image() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(PENDING_IMAGE)
}

/// `GET /assets/dashboard.js`: the copy button.
#[utoipa::path(
    get,
    path = "/assets/dashboard.js",
    tag = "dashboard",
    summary = "The dashboard's script",
    description = "The tracked link's copy button on an advert's page: the only script of the \
                   dashboard, served by this binary.",
    responses((status = 200, description = "JavaScript", body = String, content_type = "text/javascript"))
)]
async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(SCRIPT)
}

/// `POST /adverts`: the HTML form. Answers a page either way: the advert, or the form again
/// with every error next to its field.
#[utoipa::path(
    post,
    path = "/adverts",
    tag = "form",
    summary = "Submit the advert form",
    description = "The form's submission, for browsers. The API key is the `api_key` field (a \
                   cross-site form cannot know it, so no CSRF token is needed). Every answer is an \
                   HTML page, errors included: the form again with each error beside its field \
                   (this endpoint alone answers errors as HTML, not in the JSON error format).",
    request_body(content = AdvertUpload, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "The created advert's page", body = String, content_type = "text/html"),
        (status = 400, description = "Not multipart, or a malformed body: the form again", body = String, content_type = "text/html"),
        (status = 401, description = "Unknown or revoked API key: the form again", body = String, content_type = "text/html"),
        (status = 403, description = "A read key (`insufficient_scope`): the form again", body = String, content_type = "text/html"),
        (status = 413, description = "The image or a field is too large: the form again", body = String, content_type = "text/html"),
        (status = 415, description = "Not a JPEG, PNG, WebP or GIF: the form again", body = String, content_type = "text/html"),
        (status = 422, description = "Invalid fields: the form again", body = String, content_type = "text/html"),
        (status = 500, description = "Internal error: the form again", body = String, content_type = "text/html"),
        (status = 503, description = "A backend is down: the form again, with `Retry-After`", body = String, content_type = "text/html",
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn submit_form(
    req: HttpRequest,
    payload: web::Payload,
    portal: web::Data<Portal>,
) -> Result<HttpResponse, PageError> {
    if !is_multipart(&req) {
        return Err(form_error(None, &RawAdvert::default(), not_multipart()));
    }
    declared_length_within(&req, portal.max_body_bytes)
        .map_err(|e| form_error(None, &RawAdvert::default(), e))?;
    let form = actix_multipart::Multipart::new(req.headers(), payload);
    let mut reader = FormReader::new(form, portal.intake.max_image_bytes(), portal.max_body_bytes);
    let mut raw = RawAdvert::default();
    // The form sends the key and the text fields first: the key is checked before the image,
    // the bulk of the body, is read at all. A client that sends the key after the image gets
    // its whole body read first.
    if let Err(e) = reader.read_until_image(&mut raw).await {
        return Err(form_error(None, &raw, e));
    }
    let mut reader = Some(reader);
    if raw.api_key.is_none()
        && let Some(rest) = reader.take()
        && let Err(e) = rest.read_rest(&mut raw).await
    {
        return Err(form_error(None, &raw, e));
    }
    let image_unread = reader.as_ref().is_some_and(FormReader::image_pending);
    let key = raw.api_key.clone().unwrap_or_default();
    let authenticated = portal.intake.customers().authenticate(&key).await;
    // A read key is refused before the image is read, like an unknown one.
    if authenticated.as_ref().is_ok_and(|c| c.may_write())
        && let Some(rest) = reader.take()
        && let Err(e) = rest.read_rest(&mut raw).await
    {
        return Err(form_error(None, &raw, e));
    }
    let customer = match authenticated {
        Ok(customer) if !customer.may_write() => {
            let error = insufficient_scope();
            let fields = vec![FieldError::new(
                "api_key",
                "insufficient_scope",
                "this is a read key: submitting an advert takes a write key",
            )];
            return Err(PageError::Answer {
                html: pages::form_page(&raw, &fields, None, None),
                error: Box::new(error),
            });
        }
        Ok(customer) => customer,
        Err(AuthError::Rejected) => {
            let mut errors = raw.validate().err().unwrap_or_default();
            // An image sent but left unread is not missing.
            if image_unread {
                errors.retain(|e| e.field != "image");
            }
            errors.insert(
                0,
                FieldError::new(
                    "api_key",
                    "unauthorized",
                    "this API key is unknown or revoked",
                ),
            );
            return Err(PageError::Answer {
                html: pages::form_page(&raw, &errors, None, None),
                error: Box::new(HttpError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this API key is unknown or revoked",
                )),
            });
        }
        Err(e) => return Err(form_error(None, &raw, IntakeError::from(e))),
    };
    let advert = portal
        .intake
        .create(&customer, raw.clone())
        .await
        .map_err(|e| form_error(None, &raw, e))?;
    let id = advert.id;
    // Rendering has just been queued, so most placements are still pending here.
    let rows = match portal.intake.variants(customer.id, id).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(advert_id = %id, error = %e, "variants unavailable for the form's answer");
            Vec::new()
        }
    };
    let variants = portal.variant_views(id, &rows);
    let preview = preview_path(
        id,
        &portal
            .sessions()
            .preview_token(id, customer.id, &customer.key_id),
    );
    Ok(html_page(
        StatusCode::CREATED,
        pages::advert_page(&AdvertView::new(advert, &portal.urls), &variants, &preview),
    ))
}

/// The preview page of an advert, with its capability token.
fn preview_path(id: AdvertId, token: &str) -> String {
    format!("/adverts/{id}/preview?t={token}")
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PreviewQuery {
    /// The token from the form's answer: it names the advert's owner and when it expires, signed
    /// by the server.
    t: Option<String>,
}

/// `GET /adverts/{id}/preview?t=TOKEN`: every placement of one advert at its real size, for the
/// holder of the link the form's answer gave (no account session needed).
#[utoipa::path(
    get,
    path = "/adverts/{id}/preview",
    tag = "form",
    summary = "Preview an advert's placements",
    description = "Every placement of the catalogue at its real size: the ready variants, and \
                   placeholders of the exact size for those still being prepared, while which the \
                   page reloads itself every 3 seconds (no script). Opened with the link the \
                   form's answer gives: `t` is a token signed by the server for this advert, valid \
                   as long as a dashboard session (`dashboard.session_ttl_secs`). A missing, wrong \
                   or expired token, or a deleted advert, answers the same 404 page.",
    params(
        ("id" = i64, Path, description = "The advert's id"),
        PreviewQuery
    ),
    responses(
        (status = 200, description = "The preview", body = String, content_type = "text/html"),
        (status = 404, description = "No such preview: the page says so", body = String, content_type = "text/html"),
        (status = 500, description = "Internal error", body = String, content_type = "text/html"),
        (status = 503, description = "A backend is down", body = String, content_type = "text/html")
    )
)]
async fn preview_advert(
    req: HttpRequest,
    id: web::Path<String>,
    portal: web::Data<Portal>,
) -> HttpResponse {
    let not_found = || html_page(StatusCode::NOT_FOUND, pages::preview_not_found_page());
    let Ok(id) = id.parse::<i64>().map(AdvertId) else {
        return not_found();
    };
    let token = web::Query::<PreviewQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().t)
        .unwrap_or_default();
    let owner = match portal.sessions().preview_owner(id, &token).await {
        Ok(Some(owner)) => owner,
        Ok(None) => return not_found(),
        Err(e) => return preview_unavailable(IntakeError::Db(e)),
    };
    let found = async {
        let advert = portal.intake.get(owner, id).await?;
        let rows = portal.intake.variants(owner, id).await?;
        Ok::<_, IntakeError>((advert, rows))
    };
    match found.await {
        Ok((advert, rows)) => {
            let variants = portal.variant_views(id, &rows);
            let mut response = html_page(
                StatusCode::OK,
                pages::preview_page(&AdvertView::new(advert, &portal.urls), &variants),
            );
            response.headers_mut().insert(
                header::HeaderName::from_static("x-robots-tag"),
                HeaderValue::from_static("noindex"),
            );
            response
        }
        Err(IntakeError::NotFound) => not_found(),
        Err(e) => preview_unavailable(e),
    }
}

fn preview_unavailable(e: IntakeError) -> HttpResponse {
    let http = HttpError::from(e);
    with_retry_after(
        html_page(
            http.status,
            templates::message_page(None, "Preview unavailable", &http.message),
        ),
        &http,
    )
}

/// The form again, filled with what was sent, each error beside its field (or a notice for an
/// error of no field), with the status and `Retry-After` the API would answer.
pub(super) fn form_error(
    signed_in: Option<&SignedIn>,
    raw: &RawAdvert,
    error: IntakeError,
) -> PageError {
    let fields = error.field_errors();
    let error = HttpError::from(error);
    let notice = fields.is_empty().then_some(error.message.as_str());
    PageError::Answer {
        html: pages::form_page(raw, &fields, notice, signed_in),
        error: Box::new(error),
    }
}

/// A form that was not sent as multipart/form-data.
pub(super) fn not_multipart() -> IntakeError {
    IntakeError::MalformedBody(
        "the form must be sent as multipart/form-data: please use the form on this page".into(),
    )
}

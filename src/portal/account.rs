//! The dashboard's "Account" page (`GET`/`POST /dashboard/account`): the customer's e-mail
//! address and report e-mail ([`Contact`], the platform's). Any session may look; changing them
//! takes a session signed in with a write key, our origin and the session's CSRF token. A bad
//! address is answered with the page again, the error beside the field (422), never a 500.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::platform::auth::{
    AuthError, Contact, ContactChange, Customers, email_field, report_field,
};
use crate::platform::http::{HttpError, html_page};

use super::Portal;
use super::session::{PageError, SignedIn, WithCsrf};
use super::templates::account as pages;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/dashboard/account")
            .route(web::get().to(account_page))
            .route(web::post().to(change_account)),
    );
}

/// The account page's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(account_page, change_account))]
pub(super) struct ApiDoc;

/// `POST /dashboard/account`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(description = "The account form, urlencoded.")]
pub(super) struct AccountForm {
    /// The session's CSRF token; missing or wrong: 403.
    #[serde(default)]
    csrf_token: Option<String>,
    /// The e-mail address (at most 254 characters); empty removes it; left out: unchanged.
    #[serde(default)]
    email: Option<String>,
    /// `off`, `daily` or `weekly`; left out: unchanged.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    report: Option<String>,
}

impl WithCsrf for AccountForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

async fn contact(customers: &Customers, signed_in: &SignedIn) -> Result<Contact, PageError> {
    customers
        .contact(signed_in.customer.id)
        .await
        .map_err(|e| signed_in.fail(AuthError::Db(e)))?
        // The session was checked just before: the customer was revoked in between.
        .ok_or_else(|| signed_in.fail(HttpError::not_found("There is no such account.")))
}

/// `GET /dashboard/account`
#[utoipa::path(
    get,
    path = "/dashboard/account",
    tag = "dashboard",
    summary = "The account page",
    description = "The customer's e-mail address (where alerts and reports go) and report \
                   e-mail (`off`, `daily` or `weekly`), with a form to change them. A session \
                   signed in with a read key sees them only.",
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
async fn account_page(
    signed_in: SignedIn,
    customers: web::Data<Customers>,
) -> Result<HttpResponse, PageError> {
    let contact = contact(&customers, &signed_in).await?;
    Ok(html_page(
        StatusCode::OK,
        pages::account_page(&signed_in, &contact, pages::Outcome::None),
    ))
}

/// `POST /dashboard/account`
#[utoipa::path(
    post,
    path = "/dashboard/account",
    tag = "dashboard",
    summary = "Change the e-mail address and report e-mail, signed in",
    description = "The account form (urlencoded, at most 8 KiB, with the session's CSRF token). \
                   The answer is the page with the change saved. Refused when sent from another \
                   site, without the right token, or from a session signed in with a read key. \
                   Errors are HTML pages.",
    security(("session" = [])),
    request_body(content = AccountForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Saved: the page again, saying so", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in, or the session has ended: to the sign-in page",
            headers(
                ("Location" = String, description = "`/login`"),
                ("Set-Cookie" = String, description = "Clears the cookie, when a stale one was sent")
            )),
        (status = 400, description = "A broken body: an error page", body = String, content_type = "text/html"),
        (status = 403, description = "Sent from another site, the CSRF token is missing or wrong, or the session \
            was signed in with a read key: a \"Request refused\" page", body = String, content_type = "text/html"),
        (status = 413, description = "The body is larger than 8 KiB: an error page", body = String, content_type = "text/html"),
        (status = 422, description = "`email` is not an e-mail address (or longer than 254 characters), or \
            `report` is not `off`, `daily` or `weekly`: the page again, the error beside the field",
            body = String, content_type = "text/html"),
        (status = 500, description = "Internal error: an error page", body = String, content_type = "text/html"),
        (status = 503, description = "The database is down: an error page, with `Retry-After`", body = String,
            content_type = "text/html", headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn change_account(
    req: HttpRequest,
    payload: web::Payload,
    portal: web::Data<Portal>,
    customers: web::Data<Customers>,
) -> Result<HttpResponse, PageError> {
    let (session, form) = portal
        .write_form_session::<AccountForm>(&req, payload)
        .await?;
    let signed_in = SignedIn::of(&session);
    let entered = form.email.clone().unwrap_or_default();
    // A field left out is left as it is; an empty address removes it.
    let email = form
        .email
        .as_deref()
        .map(|raw| email_field("email", raw))
        .transpose();
    let report = form
        .report
        .as_deref()
        .map(|raw| report_field("report", raw))
        .transpose();
    let change = match (email, report) {
        (Ok(email), Ok(report)) => ContactChange { email, report },
        (email, report) => {
            let errors: Vec<_> = [email.err(), report.err()].into_iter().flatten().collect();
            let contact = contact(&customers, &signed_in).await?;
            let html = pages::account_page(
                &signed_in,
                &contact,
                pages::Outcome::Invalid {
                    errors: &errors,
                    entered: &entered,
                },
            );
            return Err(PageError::Answer {
                html,
                error: Box::new(HttpError::validation(errors)),
            });
        }
    };
    let saved = customers
        .set_contact(session.customer.id, change)
        .await
        .map_err(|e| signed_in.fail(AuthError::Db(e)))?
        .ok_or_else(|| signed_in.fail(HttpError::not_found("There is no such account.")))?;
    tracing::info!(
        customer_id = %session.customer.id,
        has_email = saved.email.is_some(),
        report = saved.report.as_str(),
        "account contact changed"
    );
    Ok(html_page(
        StatusCode::OK,
        pages::account_page(&signed_in, &saved, pages::Outcome::Saved),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::auth::ReportEmail;

    #[test]
    fn the_report_choice_is_one_of_three() {
        assert_eq!(
            report_field("report", "weekly").ok(),
            Some(ReportEmail::Weekly)
        );
        let e = report_field("report", "hourly").err();
        assert_eq!(
            e.map(|e| (e.field, e.code)),
            Some(("report".into(), "invalid"))
        );
    }
}

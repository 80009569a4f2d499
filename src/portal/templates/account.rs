//! The "Account" page: the customer's e-mail address and report e-mail, and a form to change
//! them (read-only for a session signed in with a read key).

use maud::html;

use crate::platform::auth::{Contact, ReportEmail};
use crate::platform::http::FieldError;
use crate::platform::mail::MAX_ADDRESS_LEN;

use super::{Head, SignedIn, csrf_field, layout};

/// What the request before this page did.
pub enum Outcome<'a> {
    None,
    /// The change was saved.
    Saved,
    /// The form was refused, with these errors; `entered` is what was typed, shown again.
    Invalid {
        errors: &'a [FieldError],
        entered: &'a str,
    },
}

fn label(report: ReportEmail) -> &'static str {
    match report {
        ReportEmail::Off => "Off",
        ReportEmail::Daily => "Daily: each day's totals (UTC days, sent after midnight UTC)",
        ReportEmail::Weekly => "Weekly: each week's totals (Monday to Sunday, sent on Mondays)",
    }
}

/// `GET /dashboard/account`, and the answer of its form.
pub fn account_page(signed_in: &SignedIn, contact: &Contact, outcome: Outcome<'_>) -> String {
    let writable = signed_in.customer.may_write();
    let (errors, entered): (&[FieldError], Option<&str>) = match outcome {
        Outcome::Invalid { errors, entered } => (errors, Some(entered)),
        _ => (&[], None),
    };
    let error_for = |field: &str| {
        errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    };
    let email_error = error_for("email");
    let report_error = error_for("report");
    let email_value = entered.unwrap_or_else(|| contact.email.as_deref().unwrap_or_default());
    layout(
        "Account",
        Some(signed_in),
        Head::default(),
        html! {
            h1 { "Account" }
            p {
                "Where reklama e-mails you: alerts about your adverts and, if you want one, a "
                "report of their totals. Without an address you get no e-mail at all."
            }
            @match outcome {
                Outcome::Saved => {
                    div.notice role="status" #saved { p { "Saved." } }
                }
                Outcome::Invalid { .. } => {
                    div.summary role="alert" {
                        @for e in errors {
                            p { a href={ "#account-" (e.field) } { (e.field) } ": " (e.message) }
                        }
                    }
                }
                Outcome::None => {}
            }
            @if writable {
                form method="post" action="/dashboard/account" {
                    (csrf_field(signed_in))
                    label for="account-email" {
                        "E-mail address " span.hint { "(empty: no e-mail)" }
                    }
                    input #account-email type="email" name="email" value=(email_value)
                        maxlength=(MAX_ADDRESS_LEN) autocomplete="email"
                        aria-invalid=[email_error.map(|_| "true")]
                        aria-describedby=[email_error.map(|_| "account-email-error")];
                    @if let Some(error) = email_error {
                        p.field-error #account-email-error { (error) }
                    }
                    label for="account-report" { "Report e-mail" }
                    select #account-report name="report"
                        aria-invalid=[report_error.map(|_| "true")]
                        aria-describedby=[report_error.map(|_| "account-report-error")] {
                        @for report in ReportEmail::ALL {
                            option value=(report.as_str()) selected[report == contact.report] {
                                (label(report))
                            }
                        }
                    }
                    @if let Some(error) = report_error {
                        p.field-error #account-report-error { (error) }
                    }
                    button type="submit" { "Save" }
                }
            } @else {
                p.notice #read-only {
                    "You signed in with a read key: this session can look but not change anything. "
                    "Sign in with a write key to change your address or report e-mail."
                }
                dl.account {
                    dt { "E-mail address" }
                    dd #account-email { (contact.email.as_deref().unwrap_or("none")) }
                    dt { "Report e-mail" }
                    dd #account-report { (label(contact.report)) }
                }
            }
        },
    )
}

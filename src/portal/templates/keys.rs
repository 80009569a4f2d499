//! The "API keys" page: the customer's live keys, a form to make one (the new key shown once)
//! and a revoke button for each.

use maud::html;
use time::OffsetDateTime;

use crate::platform::auth::{KeyInfo, MAX_KEY_NAME, Scope};
use crate::platform::http::FieldError;

use super::{Head, SignedIn, csrf_field, date, layout};

/// What the request before this page did.
pub enum Outcome<'a> {
    None,
    /// A key was made: the only time its secret is shown.
    Created {
        key: &'a str,
        info: &'a KeyInfo,
    },
    /// The new key form was refused, with these errors.
    Invalid(&'a [FieldError]),
    /// A change was refused (the last write key, too many keys): why.
    Refused(&'a str),
}

/// Unix milliseconds as the page shows them: `2026-12-08 09:30 UTC`.
fn when(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!("{} {:02}:{:02} UTC", date(t), t.hour(), t.minute())
}

fn error_for<'a>(errors: &'a [FieldError], field: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|e| e.field == field)
        .map(|e| e.message.as_str())
}

/// `GET /dashboard/keys`, and the answers of its forms.
pub fn keys_page(signed_in: &SignedIn, keys: &[KeyInfo], outcome: Outcome<'_>) -> String {
    let writable = signed_in.customer.may_write();
    let current = signed_in.customer.key_id.as_str();
    let errors: &[FieldError] = match outcome {
        Outcome::Invalid(errors) => errors,
        _ => &[],
    };
    let scope_error = error_for(errors, "scope");
    let name_error = error_for(errors, "name");
    layout(
        "API keys",
        Some(signed_in),
        Head::default(),
        html! {
            h1 { "API keys" }
            p {
                "A " strong { "write" } " key may do everything; a " strong { "read" } " key may only "
                "read adverts, their variants and reports (anything else is refused), and a "
                "dashboard session signed in with it is read-only. Revoking a key stops it at once, "
                "and ends the dashboard sessions signed in with it."
            }
            @match outcome {
                Outcome::Created { key, info } => {
                    div.notice role="status" #new-key {
                        p {
                            "Your new " (info.scope.as_str()) " key"
                            @if let Some(name) = &info.name { " “" (name) "”" }
                            ". Copy it now: it is shown this once, and reklama keeps only a hash of it."
                        }
                        p { code.link #new-key-value { (key) } }
                    }
                }
                Outcome::Refused(why) => {
                    div.summary role="alert" { p { (why) } }
                }
                Outcome::Invalid(_) => {
                    div.summary role="alert" {
                        @for e in errors {
                            p { a href={ "#key-" (e.field) } { (e.field) } ": " (e.message) }
                        }
                    }
                }
                Outcome::None => {}
            }
            @if !writable {
                p.notice #read-only {
                    "You signed in with a read key: this session can look but not change anything. "
                    "Sign in with a write key to make or revoke keys."
                }
            }
            div.table-scroll {
                table.keys {
                    caption { "Your live keys, oldest first. The id is the part after rk_ in the key." }
                    thead {
                        tr {
                            th scope="col" { "Key" }
                            th scope="col" { "Scope" }
                            th scope="col" { "Made" }
                            th scope="col" { "Last used" }
                            @if writable { th scope="col" { span.visually-hidden { "Action" } } }
                        }
                    }
                    tbody {
                        @for key in keys {
                            tr data-key=(key.key_id) {
                                th scope="row" {
                                    code { "rk_" (key.key_id) "_…" }
                                    @if let Some(name) = &key.name { br; (name) }
                                    @if key.key_id == current { br; span.hint { "this session's key" } }
                                }
                                td.scope { (key.scope.as_str()) }
                                td { (when(key.created_at)) }
                                td.last-used {
                                    @match key.last_used_at {
                                        Some(at) => { (when(at)) }
                                        None => { "never" }
                                    }
                                }
                                @if writable {
                                    td {
                                        form.inline method="post" action={ "/dashboard/keys/" (key.key_id) "/revoke" } {
                                            (csrf_field(signed_in))
                                            button.secondary type="submit"
                                                aria-label={ "Revoke rk_" (key.key_id) } { "Revoke" }
                                        }
                                        @if key.key_id == current {
                                            br; span.hint { "signs you out" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if writable {
                h2 { "New key" }
                form method="post" action="/dashboard/keys" {
                    (csrf_field(signed_in))
                    label for="key-scope" { "Scope" }
                    select #key-scope name="scope" required
                        aria-invalid=[scope_error.map(|_| "true")]
                        aria-describedby=[scope_error.map(|_| "key-scope-error")] {
                        @for scope in Scope::ALL {
                            option value=(scope.as_str()) selected[scope == Scope::Read] {
                                (scope.as_str())
                                @if scope == Scope::Read { " (look, never change)" } @else { " (everything)" }
                            }
                        }
                    }
                    @if let Some(error) = scope_error {
                        p.field-error #key-scope-error { (error) }
                    }
                    label for="key-name" {
                        "Name " span.hint { "(optional, at most " (MAX_KEY_NAME) " characters: what the key is for)" }
                    }
                    input #key-name type="text" name="name" maxlength=(MAX_KEY_NAME)
                        aria-invalid=[name_error.map(|_| "true")]
                        aria-describedby=[name_error.map(|_| "key-name-error")];
                    @if let Some(error) = name_error {
                        p.field-error #key-name-error { (error) }
                    }
                    button type="submit" { "Create key" }
                }
                p.hint {
                    "Your last write key cannot be revoked: create another write key first, so that "
                    "the account always has one that can manage it."
                }
            }
        },
    )
}

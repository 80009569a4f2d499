//! The portal's HTML, rendered on the server with maud (which escapes every interpolated
//! value): one layout for every page, the advert form and its answers, the dashboard, the chart.

pub mod account;
pub mod chart;
pub mod dashboard;
pub mod form;
pub mod keys;

use maud::{DOCTYPE, Markup, html};
use time::OffsetDateTime;

use crate::domain::targeting::{Targeting, hour_runs};
use crate::platform::auth::Customer;

/// A signed-in customer, as the pages show them: the name, and the CSRF token of their forms.
/// (The portal's `session` module makes one from a live session.)
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub customer: Customer,
    pub csrf: String,
}

/// How a page is served beyond its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Head {
    /// The page runs the copy button's script (`/assets/dashboard.js`).
    pub script: bool,
    /// The browser reloads the page this often (no script needed).
    pub refresh_secs: Option<u32>,
}

/// Every page: the head, the site's navigation, and `body` as the page's main content.
pub fn layout(title: &str, signed_in: Option<&SignedIn>, head: Head, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(secs) = head.refresh_secs {
                    meta http-equiv="refresh" content=(secs);
                }
                title { (title) " · reklama" }
                link rel="stylesheet" href="/assets/reklama.css";
                @if head.script {
                    script src="/assets/dashboard.js" defer {}
                }
            }
            body {
                (nav(signed_in))
                main { (body) }
            }
        }
    }
    .into_string()
}

/// The site's navigation: the form, the dashboard, and who is signed in (with a sign-out button).
fn nav(signed_in: Option<&SignedIn>) -> Markup {
    html! {
        nav.site aria-label="Site" {
            a href="/" { "Submit an advert" }
            a href="/dashboard" { "Your adverts" }
            @if let Some(who) = signed_in {
                a href="/dashboard/keys" { "API keys" }
                a href="/dashboard/account" { "Account" }
                span.account {
                    span.who {
                        "Signed in as " strong { (who.customer.name) }
                        @if !who.customer.may_write() { " " span.hint #read-only-session { "(read-only)" } }
                    }
                    form.inline method="post" action="/logout" {
                        (csrf_field(who))
                        button.secondary type="submit" { "Sign out" }
                    }
                }
            } @else {
                a href="/login" { "Sign in" }
            }
        }
    }
}

/// The CSRF token as the first field of a form.
pub fn csrf_field(signed_in: &SignedIn) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(signed_in.csrf); }
}

/// A short page for an error or a refusal.
pub fn message_page(signed_in: Option<&SignedIn>, title: &str, message: &str) -> String {
    layout(
        title,
        signed_in,
        Head::default(),
        html! {
            h1 { (title) }
            p { (message) }
            p {
                @if signed_in.is_some() {
                    a href="/dashboard" { "Back to your adverts" }
                } @else {
                    a href="/login" { "Sign in" }
                }
            }
        },
    )
}

/// A CTR as the pages show it: a percentage with two decimals, or a dash without impressions.
pub fn percent(ctr: Option<f64>) -> String {
    match ctr {
        Some(ctr) => format!("{:.2} %", ctr * 100.0),
        None => "—".to_owned(),
    }
}

/// A day as the pages show it: `2026-12-02`.
pub fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// An advert's targeting as rows of a description list: whom and when it is shown to, and the
/// time zone of its days and hours.
/// Whether the advert's clicks carry a click id, for a `dl`.
pub fn conversion_row(conversion_tracking: bool) -> Markup {
    html! {
        dt { "Conversion tracking" }
        dd #conversion-tracking {
            @if conversion_tracking {
                "On: each click's target URL gets a signed rk_click id to report conversions with"
            } @else {
                "Off"
            }
        }
    }
}

pub fn targeting_rows(targeting: &Targeting) -> Markup {
    let join = |items: Vec<&str>| items.join(", ");
    html! {
        dt { "Shown to" }
        dd #targeting {
            @if targeting.narrows() {
                ul.plain {
                    @if !targeting.devices.is_empty() {
                        li { "Devices: " (join(targeting.devices.iter().map(|d| d.as_str()).collect())) }
                    }
                    @if !targeting.countries.is_empty() {
                        li { "Countries: " (join(targeting.countries.iter().map(|c| c.as_str()).collect())) }
                    }
                    @if !targeting.days.is_empty() {
                        li { "Days: " (join(targeting.days.iter().map(|d| d.label()).collect())) }
                    }
                    @if !targeting.hours.is_empty() {
                        li {
                            "Hours: "
                            (hour_runs(&targeting.hours)
                                .iter()
                                .map(|(from, to)| format!("{from:02}:00–{:02}:00", to + 1))
                                .collect::<Vec<_>>()
                                .join(", "))
                        }
                    }
                }
            } @else {
                "Everyone, at any time"
            }
        }
        dt { "Time zone" } dd { (targeting.timezone.name()) }
    }
}

/// An advert's delivery limits and their pacing as rows of a description list.
pub fn delivery_rows(advert: &crate::modules::intake::AdvertView) -> Markup {
    let limits: Vec<String> = [
        (advert.max_impressions, "impressions in all"),
        (advert.daily_max_impressions, "impressions a day"),
        (advert.max_clicks, "clicks in all"),
    ]
    .into_iter()
    .filter_map(|(n, what)| n.map(|n| format!("{n} {what}")))
    .collect();
    html! {
        dt { "Limits" }
        dd #limits {
            @if limits.is_empty() { "None" } @else { (limits.join(", ")) }
        }
        dt { "Pacing" }
        dd #pacing { (advert.pacing.as_str()) " – " (advert.pacing.label()) }
    }
}

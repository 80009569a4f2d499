//! The advert form (with each field's error next to it), the page that shows a created advert,
//! and the placements' preview.

use maud::{Markup, html};

use crate::domain::advert::{AdvertText, CallToAction, Pacing, Title};
use crate::domain::creative::MAX_ALTERNATIVES;
use crate::domain::targeting::{Day, Device, Zone, hour_runs};
use crate::domain::{Genre, VariantStatus};
use crate::modules::intake::{AdvertView, RawAdvert, VariantView};
use crate::platform::http::FieldError;

use super::{Head, SignedIn, conversion_row, csrf_field, delivery_rows, layout, targeting_rows};

fn error_for<'a>(errors: &'a [FieldError], field: &str) -> Option<&'a FieldError> {
    errors.iter().find(|e| e.field == field)
}

/// A label, the control, and the field's error bound to it for screen readers.
fn field(errors: &[FieldError], name: &str, label: &str, hint: &str, control: Markup) -> Markup {
    let error = error_for(errors, name);
    html! {
        label for=(name) {
            (label)
            @if !hint.is_empty() { " " span.hint { (hint) } }
        }
        (control)
        @if let Some(e) = error {
            p.field-error id={ (name) "-error" } { (e.message) }
        }
    }
}

fn described_by(errors: &[FieldError], name: &str) -> Option<String> {
    error_for(errors, name).map(|_| format!("{name}-error"))
}

fn invalid(errors: &[FieldError], name: &str) -> Option<&'static str> {
    error_for(errors, name).map(|_| "true")
}

/// The input an error's field is shown beside: the first of a list, and the list as a whole,
/// at the main input.
fn anchor(field: &str) -> &str {
    match field {
        "titles" | "titles[0]" => "title",
        "texts" | "texts[0]" => "text",
        other if other.starts_with("image[") => "image",
        other if other.starts_with("targeting.") => other.split('[').next().unwrap_or(other),
        other => other,
    }
}

/// What was typed for one targeting key: each item of the list it made (`timezone`: its text).
fn typed_targeting(values: &RawAdvert, key: &str) -> Vec<String> {
    let item = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match values.targeting.as_ref().and_then(|t| t.get(key)) {
        Some(serde_json::Value::Array(items)) => items.iter().map(item).collect(),
        Some(other) => vec![item(other)],
        None => Vec::new(),
    }
}

/// Typed hours as the form takes them, consecutive ones as ranges (`9-12, 20`).
fn typed_hours(items: &[String]) -> String {
    let hours: Option<Vec<u8>> = items.iter().map(|h| h.parse().ok()).collect();
    match hours {
        Some(mut hours) if hours.iter().all(|h| *h < 24) => {
            hours.sort_unstable();
            hours.dedup();
            hour_runs(&hours)
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
        _ => items.join(", "),
    }
}

/// The targeting inputs: check boxes for devices and days, text for countries, hours and the
/// time zone. A problem with one value of a list is shown at the list's input, naming the value.
fn targeting_inputs(values: &RawAdvert, errors: &[FieldError]) -> Markup {
    let typed = |key: &str| typed_targeting(values, key);
    let errors: Vec<FieldError> = errors
        .iter()
        .filter_map(|e| {
            let (list, index) = e.field.strip_suffix(']')?.split_once('[')?;
            let key = list.strip_prefix("targeting.")?;
            let value = typed(key).get(index.parse::<usize>().ok()?)?.clone();
            Some(FieldError::new(
                list,
                e.code,
                format!("“{value}” {}", e.message),
            ))
        })
        .chain(errors.iter().cloned())
        .collect();
    let errors = &errors;
    let open =
        values.targeting.is_some() || errors.iter().any(|e| e.field.starts_with("targeting"));
    let checked = |key: &str, value: &str| typed(key).iter().any(|v| v.eq_ignore_ascii_case(value));
    let checks = |key: &str, legend: &str, options: Vec<(&'static str, &'static str)>| {
        let name = format!("targeting.{key}");
        html! {
            fieldset.checks id=(name) aria-describedby=[described_by(errors, &name)] {
                legend { (legend) }
                @for (value, label) in options {
                    label {
                        input type="checkbox" name=(name) value=(value) checked[checked(key, value)] id={ (name) "." (value) };
                        " " (label)
                    }
                }
                @if let Some(e) = error_for(errors, &name) {
                    p.field-error id={ (name) "-error" } { (e.message) }
                }
            }
        }
    };
    let text = |key: &str, label: &str, hint: &str, value: String, list: Option<&str>| {
        let name = format!("targeting.{key}");
        field(
            errors,
            &name,
            label,
            hint,
            html! {
                input id=(name) type="text" name=(name) value=(value) list=[list]
                    aria-invalid=[invalid(errors, &name)] aria-describedby=[described_by(errors, &name)];
            },
        )
    };
    html! {
        details.more open[open] {
            summary { "Who and when (optional)" }
            p.hint {
                "Leave these empty to show the advert to everyone at any time. Viewers whose "
                "device or country is unknown see only adverts that do not ask for one."
            }
            (checks("devices", "Devices", Device::ALL.iter().map(|d| (d.as_str(), d.as_str())).collect()))
            (text("countries", "Countries", "(ISO codes separated by commas, e.g. DE, AT)", typed("countries").join(", "), None))
            (checks("days", "Days", Day::ALL.iter().map(|d| (d.as_str(), d.label())).collect()))
            (text("hours", "Hours", "(0 to 23 and ranges, e.g. 9-17, 20; 22-2 runs past midnight)", typed_hours(&typed("hours")), None))
            (text("timezone", "Time zone", "(of the days and hours, and of the daily cap; UTC when left empty)", typed("timezone").join(""), Some("timezones")))
            datalist #timezones {
                @for name in Zone::names() { option value=(name) {} }
            }
        }
    }
}

/// The delivery limits and their pacing.
fn delivery_inputs(values: &RawAdvert, errors: &[FieldError]) -> Markup {
    const FIELDS: [&str; 4] = [
        "max_impressions",
        "daily_max_impressions",
        "max_clicks",
        "pacing",
    ];
    let open = [
        &values.max_impressions,
        &values.daily_max_impressions,
        &values.max_clicks,
        &values.pacing,
    ]
    .iter()
    .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty()))
        || errors.iter().any(|e| FIELDS.contains(&e.field.as_str()));
    let number = |name: &str, label: &str, hint: &str, value: &Option<String>| {
        field(
            errors,
            name,
            label,
            hint,
            html! {
                input id=(name) type="number" name=(name) min="1" step="1" value=(value.clone().unwrap_or_default())
                    aria-invalid=[invalid(errors, name)] aria-describedby=[described_by(errors, name)];
            },
        )
    };
    // Nothing chosen yet: the first option (asap, the default) shows without being marked.
    let chosen = values.pacing.as_deref().and_then(|p| Pacing::parse(p).ok());
    html! {
        details.more open[open] {
            summary { "Delivery limits (optional)" }
            p.hint { "Leave these empty to serve the advert without limits." }
            (number("max_impressions", "Impressions in all", "(at most)", &values.max_impressions))
            (number("daily_max_impressions", "Impressions a day", "(at most, per day of the time zone above)", &values.daily_max_impressions))
            (number("max_clicks", "Clicks in all", "(at most)", &values.max_clicks))
            (field(errors, "pacing", "Pacing", "(even: the impression limits are spread over the active hours, so a burst of traffic gets only what is due; with a start and an end, the limit in all over the whole flight)", html! {
                select #pacing name="pacing"
                    aria-invalid=[invalid(errors, "pacing")] aria-describedby=[described_by(errors, "pacing")] {
                    @for p in Pacing::ALL {
                        option value=(p.as_str()) selected[chosen == Some(p)] { (p.as_str()) " – " (p.label()) }
                    }
                }
            }))
        }
    }
}

/// What was typed in the title (or text) inputs: the first, then the others, from either form
/// the submission took (`titles[0]` is the main input's).
fn typed(one: &Option<String>, many: &Option<Vec<String>>) -> Vec<String> {
    match many {
        Some(list) => list.clone(),
        None => one.iter().cloned().collect(),
    }
}

/// The optional inputs for a responsive advert's other titles or texts: `name` parts the
/// reader adds to the list after the main input's, with ids and errors `{name}[1]` and on.
fn more_inputs(errors: &[FieldError], name: &str, typed: &[String], textarea: bool) -> Markup {
    let max = if textarea {
        AdvertText::MAX_CHARS
    } else {
        Title::MAX_CHARS
    };
    html! {
        @for i in 1..MAX_ALTERNATIVES {
            @let id = format!("{name}[{i}]");
            @let value = typed.get(i).cloned().unwrap_or_default();
            (field(errors, &id, &format!("{} {}", if textarea { "Text" } else { "Title" }, i + 1), "(optional)", html! {
                @if textarea {
                    textarea id=(id) name=(name) maxlength=(max)
                        aria-invalid=[invalid(errors, &id)] aria-describedby=[described_by(errors, &id)] { (value) }
                } @else {
                    input id=(id) type="text" name=(name) maxlength=(max) value=(value)
                        aria-invalid=[invalid(errors, &id)] aria-describedby=[described_by(errors, &id)];
                }
            }))
        }
    }
}

/// The advert form, filled with what was submitted and each field's error beside it; signed in to the dashboard, it has no API key field and posts, with the
/// session's CSRF token, to the dashboard.
pub fn form_page(
    values: &RawAdvert,
    errors: &[FieldError],
    notice: Option<&str>,
    signed_in: Option<&SignedIn>,
) -> String {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let titles = typed(&values.title, &values.titles);
    let texts = typed(&values.text, &values.texts);
    // The main inputs also show the errors of the first of a list, or of the list as a whole.
    let main_error = |single: &str, list: &str| -> Vec<FieldError> {
        errors
            .iter()
            .filter(|e| e.field == format!("{list}[0]") || e.field == list)
            .map(|e| FieldError::new(single, e.code, e.message.clone()))
            .chain(errors.iter().cloned())
            .collect()
    };
    let (title_errors, text_errors) = (main_error("title", "titles"), main_error("text", "texts"));
    // The one file input shows the problem of any of its files, naming which.
    let image_errors: Vec<FieldError> = errors
        .iter()
        .filter_map(|e| {
            let index: usize = e
                .field
                .strip_prefix("image[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            let message = format!("image {}: {}", index + 1, e.message);
            Some(FieldError::new("image", e.code, message))
        })
        .chain(errors.iter().cloned())
        .collect();
    let more_open = titles.len() > 1
        || texts.len() > 1
        || errors
            .iter()
            .any(|e| e.field.starts_with("titles[") || e.field.starts_with("texts["));
    let chosen_genre = values.genre.as_deref().and_then(|g| Genre::parse(g).ok());
    let action = if signed_in.is_some() {
        "/dashboard/adverts"
    } else {
        "/adverts"
    };
    layout(
        "Submit an advert",
        signed_in,
        Head::default(),
        html! {
            h1 { "Submit an advert" }
            @if let Some(notice) = notice {
                div.summary role="alert" { p { (notice) } }
            } @else if !errors.is_empty() {
                div.summary role="alert" {
                    p { "Please correct the fields marked below." }
                    ul { @for e in errors { li { a href={ "#" (anchor(&e.field)) } { (e.field) } ": " (e.message) } } }
                }
            }
            form method="post" action=(action) enctype="multipart/form-data" {
                @if let Some(who) = signed_in {
                    (csrf_field(who))
                } @else {
                    (field(errors, "api_key", "API key", "(from your account manager; never shared)", html! {
                        input #api_key type="password" name="api_key" required autocomplete="current-password"
                            aria-invalid=[invalid(errors, "api_key")] aria-describedby=[described_by(errors, "api_key")];
                    }))
                }
                (field(&title_errors, "title", "Title", &format!("(up to {} characters)", Title::MAX_CHARS), html! {
                    input #title type="text" name="title" required maxlength=(Title::MAX_CHARS) value=(titles.first().cloned().unwrap_or_default())
                        aria-invalid=[invalid(&title_errors, "title")] aria-describedby=[described_by(&title_errors, "title")];
                }))
                (field(&text_errors, "text", "Text", &format!("(up to {} characters)", AdvertText::MAX_CHARS), html! {
                    textarea #text name="text" required maxlength=(AdvertText::MAX_CHARS)
                        aria-invalid=[invalid(&text_errors, "text")] aria-describedby=[described_by(&text_errors, "text")] { (texts.first().cloned().unwrap_or_default()) }
                }))
                details.more open[more_open] {
                    summary { "More titles and texts (optional)" }
                    p.hint {
                        "Give up to " (MAX_ALTERNATIVES) " titles and " (MAX_ALTERNATIVES) " texts: every "
                        "combination is shown, and the ones people click more often are shown more."
                    }
                    (more_inputs(errors, "titles", &titles, false))
                    (more_inputs(errors, "texts", &texts, true))
                }
                (field(errors, "genre", "Genre", "", html! {
                    select #genre name="genre" required
                        aria-invalid=[invalid(errors, "genre")] aria-describedby=[described_by(errors, "genre")] {
                        option value="" { "Choose a genre" }
                        @for g in Genre::ALL {
                            option value=(g.as_str()) selected[chosen_genre == Some(g)] { (g.label_en()) " / " (g.label_ru()) }
                        }
                    }
                }))
                (field(errors, "target_url", "Target URL", "(where the tracked link leads; http or https)", html! {
                    input #target_url type="url" name="target_url" required value=(value(&values.target_url))
                        placeholder="https://example.com/offer"
                        aria-invalid=[invalid(errors, "target_url")] aria-describedby=[described_by(errors, "target_url")];
                }))
                (field(errors, "conversion_tracking", "Track conversions", "(adds a signed rk_click id to the target URL on every click, for reporting conversions back; the target URL may also hold {advert_id}, {placement}, {creative_id} and {click_id}, filled in per click)", html! {
                    input #conversion_tracking type="checkbox" name="conversion_tracking" value="on"
                        checked[matches!(values.conversion_tracking.as_deref().map(str::trim), Some("on" | "true" | "1"))]
                        aria-invalid=[invalid(errors, "conversion_tracking")] aria-describedby=[described_by(errors, "conversion_tracking")];
                }))
                (field(errors, "lang", "Language", "(optional two-letter code, e.g. ru or en)", html! {
                    input #lang type="text" name="lang" maxlength="2" value=(value(&values.lang))
                        aria-invalid=[invalid(errors, "lang")] aria-describedby=[described_by(errors, "lang")];
                }))
                (field(errors, "cta", "Call to action", "(optional: the button on banners, e.g. Book now; the usual words of the language when left out)", html! {
                    input #cta type="text" name="cta" maxlength=(CallToAction::MAX_CHARS) value=(value(&values.cta))
                        aria-invalid=[invalid(errors, "cta")] aria-describedby=[described_by(errors, "cta")];
                }))
                (targeting_inputs(values, errors))
                (delivery_inputs(values, errors))
                (field(&image_errors, "image", "Image", "(JPEG, PNG, WebP or GIF, up to 10 MiB; choose up to 3 to let serving learn which wins)", html! {
                    input #image type="file" name="image" required multiple accept="image/jpeg,image/png,image/webp,image/gif"
                        aria-invalid=[invalid(&image_errors, "image")] aria-describedby=[described_by(&image_errors, "image")];
                }))
                button type="submit" { "Submit advert" }
            }
        },
    )
}

/// How often the preview page reloads while a placement is still being prepared.
const PREVIEW_REFRESH_SECS: u32 = 3;

/// The page shown after an advert was accepted: the advert, and every placement as users will
/// see it (usually still being prepared), with a link to the preview page that shows them once
/// ready.
pub fn advert_page(advert: &AdvertView, variants: &[VariantView], preview_path: &str) -> String {
    layout(
        &advert.title,
        None,
        Head::default(),
        html! {
            h1 { "Advert created" }
            p { "Your advert is stored and live. Share its tracked link; every click is counted." }
            @for (i, image) in advert.images.iter().enumerate() {
                img.creative src=(image.image_path) width=(image.width) height=(image.height) alt={ (advert.title) @if i > 0 { " (image " (i + 1) ")" } };
            }
            dl {
                dt { "Title" } dd { (advert.title) }
                dt { "Text" } dd { (advert.text) }
                dt { "Genre" } dd { (advert.genre.label_en()) " / " (advert.genre.label_ru()) }
                dt { "Target URL" } dd { (advert.target_url) }
                dt { "Tracked link" } dd { a href=(advert.tracked_url) { (advert.tracked_url) } }
                (targeting_rows(&advert.targeting))
                (delivery_rows(advert))
                (conversion_row(advert.conversion_tracking))
                dt { "Status" } dd { (advert.status.as_str()) }
                dt { "Cloud copy" } dd { (advert.offload_status.as_str()) }
                dt { "Advert id" } dd { (advert.id) }
            }
            h2 #placements-heading { "Placements" }
            p {
                "What each place on a page will show of this advert, at its real size. They are "
                "prepared in the background within seconds: "
                a #preview-link href=(preview_path) { "see every placement when it is ready" }
                ". Keep that link to yourself: until it expires it shows this advert to whoever "
                "opens it."
            }
            (placement_previews(variants))
            p { a href="/" { "Submit another advert" } }
        },
    )
}

/// `GET /adverts/{id}/preview`: every placement of one advert, for whoever holds the link the
/// form's answer gave. Reloads itself every few seconds while any placement is being prepared.
pub fn preview_page(advert: &AdvertView, variants: &[VariantView]) -> String {
    let pending = variants.iter().any(|v| v.status == VariantStatus::Pending);
    layout(
        &format!("Placements of {}", advert.title),
        None,
        Head {
            refresh_secs: pending.then_some(PREVIEW_REFRESH_SECS),
            ..Head::default()
        },
        html! {
            h1 { "Placements of “" (advert.title) "”" }
            @if pending {
                p.notice role="status" {
                    "Some placements are still being prepared; this page reloads every "
                    (PREVIEW_REFRESH_SECS) " seconds until they are ready."
                }
            } @else {
                p role="status" { "Every placement is ready." }
            }
            (placement_previews(variants))
        },
    )
}

/// The preview page's answer to a link that is wrong, expired, or for an advert that is gone:
/// the same for each, so a link says nothing about adverts it does not open.
pub fn preview_not_found_page() -> String {
    layout(
        "Preview not found",
        None,
        Head::default(),
        html! {
            h1 { "Preview not found" }
            p { "This preview link is not valid, has expired, or its advert was deleted." }
            p { a href="/login" { "Sign in" } " to see your adverts and their placements." }
        },
    )
}

/// The placeholder image of a placement still being prepared: stretched to the placement's size
/// by the `img` element's attributes (the pages' CSP refuses inline styles).
pub const PENDING_IMAGE: &str = "/assets/pending.svg";

/// Every placement's variant at its real size, or why there is none (yet); a pending one as a
/// placeholder of the placement's exact size.
pub fn placement_previews(variants: &[VariantView]) -> Markup {
    html! {
        div.placements {
            @for v in variants {
                section.placement aria-label=(v.placement) {
                    h3 { (v.placement) " " span.hint { (v.width) "×" (v.height) } }
                    @match v.status {
                        VariantStatus::Ready => {
                            @if let Some(path) = &v.image_path {
                                img.variant src=(path) width=(v.width) height=(v.height)
                                    alt={ (v.title.as_deref().unwrap_or_default()) " (" (v.placement) ")" } loading="lazy";
                            }
                            p.variant-title { strong { (v.title.as_deref().unwrap_or_default()) } }
                            @if let Some(text) = v.text.as_deref().filter(|t| !t.is_empty()) {
                                p.variant-text { (text) }
                            }
                            p.hint { (v.bytes / 1000) " KB" }
                            @if v.images.len() > 1 {
                                p.hint {
                                    (v.images.len()) " images here; serving learns which wins. Also:"
                                }
                                @for c in v.images.iter().skip(1) {
                                    img.variant src=(c.image_path) width=(v.width) height=(v.height)
                                        alt={ (c.title) " (" (v.placement) ", image " (c.image_index + 1) ")" } loading="lazy";
                                    p.hint {
                                        @if let Some(creative) = c.creative_id { "Creative " (creative) ", " }
                                        "image " (c.image_index + 1) ", " (c.bytes / 1000) " KB"
                                    }
                                }
                            }
                        }
                        VariantStatus::Unsuitable => {
                            p.unsuitable { "Not shown here: " (v.reason.as_deref().unwrap_or("no good variant can be made")) }
                        }
                        VariantStatus::Pending => {
                            img.variant-pending src=(PENDING_IMAGE) width=(v.width) height=(v.height)
                                alt={ (v.placement) " (" (v.width) "×" (v.height) "): being prepared" };
                            p.hint { "Being prepared…" }
                        }
                    }
                }
            }
        }
    }
}

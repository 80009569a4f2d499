//! The dashboard's pages: sign-in, the customer's adverts, one advert's page. The only markup
//! inserted as is, is the QR code's SVG, which `qrcode` builds from numbers alone.

use maud::{Markup, PreEscaped, html};
use qrcode::QrCode;
use qrcode::render::svg;
use time::OffsetDateTime;

use crate::domain::creative::{CreativeId, CreativeStatus};
use crate::domain::{AdvertId, AdvertStatus, Counts, Granularity};
use crate::modules::intake::{AdvertView, CreativeView, VariantView};
use crate::modules::tracking::{
    Converted, CountryCounts, CreativeCounts, DeviceCounts, PlacementCounts,
};

use super::chart::{self, Bucket};
use super::form::placement_previews;
use super::{
    Head, SignedIn, conversion_row, csrf_field, date, delivery_rows, layout, percent,
    targeting_rows,
};

/// `GET /login`, and the same form with the key's error beside it.
pub fn login_page(error: Option<&str>) -> String {
    layout(
        "Sign in",
        None,
        Head::default(),
        html! {
            h1 { "Sign in" }
            p { "Sign in with your API key to see your adverts, their clicks and impressions." }
            @if let Some(error) = error {
                div.summary role="alert" {
                    p { a href="#api_key" { "API key" } ": " (error) }
                }
            }
            form method="post" action="/login" {
                label for="api_key" {
                    "API key" " " span.hint { "(rk_..., from your account manager)" }
                }
                input #api_key type="password" name="api_key" required autocomplete="current-password"
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[error.map(|_| "api_key-error")];
                @if let Some(error) = error {
                    p.field-error #api_key-error { (error) }
                }
                button type="submit" { "Sign in" }
            }
            p.hint { "The session lasts 12 hours, ends when you sign out, and ends at once if the key is revoked." }
        },
    )
}

/// One advert on the dashboard.
pub struct Row {
    pub id: AdvertId,
    pub title: String,
    pub status: AdvertStatus,
    pub created_at: OffsetDateTime,
    /// `None` when the counters could not answer.
    pub counts: Option<Counts>,
}

/// The pause or resume button of an advert; `return_to` is the page to come back to.
fn status_button(
    signed_in: &SignedIn,
    id: AdvertId,
    status: AdvertStatus,
    return_to: &str,
    title: &str,
) -> Markup {
    // A read-only session gets no buttons: its forms would be refused.
    if !signed_in.customer.may_write() {
        return html! {};
    }
    let (next, label) = match status {
        AdvertStatus::Active => (AdvertStatus::Paused, "Pause"),
        _ => (AdvertStatus::Active, "Resume"),
    };
    html! {
        form.inline method="post" action={ "/dashboard/adverts/" (id) "/status" } {
            (csrf_field(signed_in))
            input type="hidden" name="status" value=(next.as_str());
            input type="hidden" name="return_to" value=(return_to);
            button.secondary type="submit" aria-label={ (label) " " (title) } { (label) }
        }
    }
}

fn status_badge(status: AdvertStatus) -> Markup {
    html! { span class={ "status status-" (status.as_str()) } { (status.as_str()) } }
}

/// `GET /dashboard`.
pub fn dashboard_page(
    signed_in: &SignedIn,
    rows: &[Row],
    older_page: bool,
    next_before: Option<AdvertId>,
) -> String {
    let counts_missing = rows.iter().any(|r| r.counts.is_none());
    layout(
        "Your adverts",
        Some(signed_in),
        Head::default(),
        html! {
            h1 { "Your adverts" }
            @if counts_missing {
                div.summary role="alert" {
                    p { "Clicks and impressions cannot be counted right now; they are shown as — until the counters answer again." }
                }
            }
            @if rows.is_empty() && !older_page {
                p { "You have no adverts yet. " a href="/" { "Submit your first advert" } "." }
            } @else {
                p { a href="/" { "Submit a new advert" } }
                div.table-scroll {
                    table.adverts {
                        caption { "Newest first. Clicks are billable clicks (bots and repeats left out); CTR is clicks per impression." }
                        thead {
                            tr {
                                th scope="col" { "Advert" }
                                th scope="col" { "Status" }
                                th.num scope="col" { "Impressions" }
                                th.num scope="col" { "Clicks" }
                                th.num scope="col" { "CTR" }
                                th scope="col" { span.visually-hidden { "Action" } }
                            }
                        }
                        tbody {
                            @for row in rows {
                                tr data-advert=(row.id) {
                                    th scope="row" {
                                        a href={ "/dashboard/adverts/" (row.id) } { (row.title) }
                                        br;
                                        span.hint { "#" (row.id) ", " (date(row.created_at)) }
                                    }
                                    td { (status_badge(row.status)) }
                                    @match row.counts {
                                        Some(c) => {
                                            td.num.impressions { (c.impressions) }
                                            td.num.clicks { (c.clicks) }
                                            td.num.ctr { (percent(c.ctr())) }
                                        }
                                        None => {
                                            td.num.impressions { "—" }
                                            td.num.clicks { "—" }
                                            td.num.ctr { "—" }
                                        }
                                    }
                                    td { (status_button(signed_in, row.id, row.status, "/dashboard", &row.title)) }
                                }
                            }
                        }
                    }
                }
            }
            @if older_page || next_before.is_some() {
                nav.pages aria-label="Pages" {
                    @if older_page { a href="/dashboard" { "Newest adverts" } }
                    @if let Some(before) = next_before {
                        a href={ "/dashboard?before=" (before) } { "Older adverts" }
                    }
                }
            }
        },
    )
}

/// The QR code of `link` as SVG (dark modules on white with the quiet zone, one unit a module),
/// or `None` if the link cannot be encoded.
pub fn qr_svg(link: &str) -> Option<String> {
    let code = QrCode::new(link.as_bytes()).ok()?;
    let svg = code
        .render::<svg::Color>()
        .quiet_zone(true)
        .module_dimensions(1, 1)
        .dark_color(svg::Color("#000"))
        .light_color(svg::Color("#fff"))
        .build();
    let svg = svg
        .split_once("?>")
        .map(|(_, rest)| rest)
        .unwrap_or(&svg)
        .replacen(
            "<svg ",
            "<svg role=\"img\" aria-labelledby=\"qr-caption\" ",
            1,
        );
    Some(svg)
}

/// What the advert page shows.
pub struct AdvertPage<'a> {
    pub signed_in: &'a SignedIn,
    pub advert: &'a AdvertView,
    pub granularity: Granularity,
    /// All-time totals and the chart's buckets, or why they are missing.
    pub statistics: Result<(&'a Counts, &'a [Bucket]), &'a String>,
    /// Distinct users served (all time, estimated), when the report could be read.
    pub reach: Option<u64>,
    /// All-time conversions and the currencies their values were reported in, when the report
    /// could be read.
    pub conversions: Option<(&'a Converted, &'a [String])>,
    pub qr: Option<&'a str>,
    pub created: bool,
    /// Every placement's variant, in catalogue order.
    pub variants: &'a [VariantView],
    /// All-time counts per placement served (`None`: the generic card), when they could be read.
    pub placement_counts: Option<&'a [PlacementCounts]>,
    /// The advert's creatives, by number.
    pub creatives: &'a [CreativeView],
    /// All-time counts per creative shown, when they could be read.
    pub creative_counts: Option<&'a [CreativeCounts]>,
    /// All-time counts per device and per country of the viewers, when they could be read.
    pub device_counts: Option<&'a [DeviceCounts]>,
    pub country_counts: Option<&'a [CountryCounts]>,
}

/// `GET /dashboard/adverts/{id}`.
pub fn advert_page(page: &AdvertPage<'_>) -> String {
    let advert = page.advert;
    let here = format!("/dashboard/adverts/{}", advert.id);
    let granularity = page.granularity;
    let (period_name, bucket_name, unit) = match granularity {
        Granularity::Hour => ("the last 48 hours", "Hour (UTC)", "hour"),
        Granularity::Day => ("the last 30 days", "Day (UTC)", "day"),
    };
    layout(
        &advert.title,
        Some(page.signed_in),
        Head {
            script: true,
            ..Head::default()
        },
        html! {
            p.breadcrumb { a href="/dashboard" { "Your adverts" } " › #" (advert.id) }
            h1 { (advert.title) }
            @if page.created {
                div.notice role="status" {
                    p { "Your advert is stored and live. Share its tracked link below; every click is counted." }
                }
            }
            // A div, not a p: a form cannot sit inside a paragraph.
            div.status-line {
                "Status: " (status_badge(advert.status)) " "
                (status_button(page.signed_in, advert.id, advert.status, &here, &advert.title))
            }
            div.advert-overview {
                div.images {
                    @for (i, image) in advert.images.iter().enumerate() {
                        img.creative src=(image.image_path) width=(image.width) height=(image.height) alt={ (advert.title) @if i > 0 { " (image " (i + 1) ")" } };
                    }
                }
                dl {
                    @if advert.titles.len() > 1 {
                        dt { "Titles" } dd { ul.plain { @for title in &advert.titles { li { (title) } } } }
                    } @else {
                        dt { "Title" } dd { (advert.title) }
                    }
                    @if advert.texts.len() > 1 {
                        dt { "Texts" } dd { ul.plain { @for text in &advert.texts { li { (text) } } } }
                    } @else {
                        dt { "Text" } dd { (advert.text) }
                    }
                    dt { "Genre" } dd { (advert.genre.label_en()) " / " (advert.genre.label_ru()) }
                    dt { "Target URL" } dd { (advert.target_url) }
                    @if let Some(lang) = &advert.lang { dt { "Language" } dd { (lang) } }
                    (targeting_rows(&advert.targeting))
                    (delivery_rows(advert))
                    (conversion_row(advert.conversion_tracking))
                    dt { "Created" } dd { (date(advert.created_at)) }
                    dt { "Advert id" } dd { (advert.id) }
                }
            }

            h2 #link-heading { "Tracked link" }
            p { "Share this link; each click is counted, then the visitor goes on to the target URL." }
            p.tracked-link {
                code.link #tracked-link { (advert.tracked_url) }
                " "
                button.secondary type="button" hidden data-copy="tracked-link" data-status="copy-status" { "Copy link" }
                " "
                span #copy-status role="status" {}
            }
            @if let Some(qr) = page.qr {
                figure.qr {
                    (PreEscaped(qr))
                    figcaption #qr-caption { "QR code of the tracked link " (advert.tracked_url) }
                }
            }

            h2 #stats-heading { "Clicks and impressions" }
            nav.granularity aria-label="Period" {
                a href={ (here) "?granularity=hour" } aria-current=[(granularity == Granularity::Hour).then_some("page")] { "Hourly, last 48 hours" }
                a href={ (here) "?granularity=day" } aria-current=[(granularity == Granularity::Day).then_some("page")] { "Daily, last 30 days" }
            }
            @match page.statistics {
                Ok((totals, buckets)) => {
                    dl.totals {
                        dt { "Impressions (all time)" } dd #total-impressions { (totals.impressions) }
                        dt { "Clicks (all time)" } dd #total-clicks { (totals.clicks) }
                        dt { "CTR" } dd #total-ctr { (percent(totals.ctr())) }
                        @if let Some((converted, currencies)) = page.conversions.filter(|(c, _)| advert.conversion_tracking || c.conversions > 0) {
                            dt { "Conversions (all time)" } dd #total-conversions { (converted.conversions) }
                            dt { "Conversion value" } dd #total-conversion-value { (format!("{:.2}", converted.conversion_value)) @if !currencies.is_empty() { " " (currencies.join(" + ")) } }
                            dt { "Conversion rate (per click)" } dd #total-cvr { (percent((totals.clicks > 0).then_some(converted.cvr))) }
                        }
                        @if let Some(reach) = page.reach {
                            dt { "Unique reach (all time, estimated ±1 %)" } dd #total-reach { (reach) }
                        }
                        dt { "Bot clicks" } dd { (totals.bot_clicks) }
                        dt { "Repeat clicks" } dd { (totals.duplicate_clicks) }
                        dt { "Suspicious clicks (not billed)" } dd #total-suspicious-clicks { (totals.suspicious_clicks) }
                        dt { "Suspicious impressions (not billed)" } dd #total-suspicious-impressions { (totals.suspicious_impressions) }
                    }
                    figure.chart {
                        (chart::render(buckets, granularity))
                    }
                    @let active: Vec<&Bucket> = buckets.iter().filter(|b| b.has_data()).collect();
                    @if active.is_empty() {
                        p #chart-empty { "No clicks or impressions in " (period_name) "." }
                    } @else {
                        div.table-scroll {
                            table #chart-data {
                                caption { "The chart's numbers: each " (unit) " of " (period_name) " with any click or impression." }
                                thead {
                                    tr {
                                        th scope="col" { (bucket_name) }
                                        th.num scope="col" { "Impressions" }
                                        th.num scope="col" { "Clicks" }
                                        th.num scope="col" { "CTR" }
                                    }
                                }
                                tbody {
                                    @for bucket in &active {
                                        tr data-bucket=(chart::rfc3339(bucket.start)) {
                                            th scope="row" { (chart::bucket_label(bucket.start, granularity)) }
                                            td.num.impressions { (bucket.counts.impressions) }
                                            td.num.clicks { (bucket.counts.clicks) }
                                            td.num.ctr { (percent(bucket.counts.ctr())) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                Err(message) => {
                    div.summary role="alert" { p { "Clicks and impressions cannot be shown right now: " (message) } }
                }
            }
            p.downloads {
                "Download every count as CSV: "
                a href={ (here) "/report.csv?granularity=hour" } download { "hourly" }
                ", "
                a href={ (here) "/report.csv?granularity=day" } download { "daily" }
                "."
            }
            (creatives_table(page))
            (viewer_tables(page))
            h2 #placements-heading { "Placements" }
            p {
                "What each place on a page shows of this advert, at its real size. Placements "
                "are rendered in the background a few seconds after the advert is submitted."
            }
            (placement_counts(page.placement_counts))
            (placement_previews(page.variants))
        },
    )
}

/// The creatives of a responsive advert: words, status, all-time counts and the buttons that
/// pause, pin or resume each.
fn creatives_table(page: &AdvertPage<'_>) -> Markup {
    if page.creatives.len() < 2 {
        return html! {};
    }
    let counts = |id: CreativeId| {
        page.creative_counts
            .into_iter()
            .flatten()
            .find(|c| c.creative_id == Some(id))
            .map(|c| c.counts)
            .unwrap_or_default()
    };
    let advert = page.advert.id;
    let several_images = page.advert.images.len() > 1;
    html! {
        h2 #creatives-heading { "Creatives" }
        p {
            "Every combination of the advert's images, titles and texts is a creative. Each card shows one; "
            "serving tries them all and shows the ones people click more often. Pause a creative to "
            "stop showing it; pin creatives to show only those."
        }
        div.table-scroll {
            table #creatives {
                caption { "All-time counts per creative." }
                thead {
                    tr {
                        th.num scope="col" { "#" }
                        @if several_images { th.num scope="col" { "Image" } }
                        th scope="col" { "Title" }
                        th scope="col" { "Text" }
                        th scope="col" { "Status" }
                        th.num scope="col" { "Impressions" }
                        th.num scope="col" { "Clicks" }
                        th.num scope="col" { "CTR" }
                        th scope="col" { span.visually-hidden { "Change" } }
                    }
                }
                tbody {
                    @for creative in page.creatives {
                        @let shown = counts(creative.creative_id);
                        tr data-creative=(creative.creative_id) {
                            td.num { (creative.creative_id) }
                            @if several_images { td.num { (creative.image_index + 1) } }
                            th scope="row" { (creative.title) }
                            td { (creative.text) }
                            td { span class={ "status status-" (creative.status.as_str()) } { (creative.status.as_str()) } }
                            td.num.impressions { (shown.impressions) }
                            td.num.clicks { (shown.clicks) }
                            td.num.ctr { (percent(shown.ctr())) }
                            td.actions {
                                @for (next, label) in creative_actions(creative.status).into_iter().filter(|_| page.signed_in.customer.may_write()) {
                                    form.inline method="post" action={ "/dashboard/adverts/" (advert) "/creatives/" (creative.creative_id) "/status" } {
                                        (csrf_field(page.signed_in))
                                        input type="hidden" name="status" value=(next.as_str());
                                        button.secondary type="submit" aria-label={ (label) " creative " (creative.creative_id) } { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What a creative's buttons change its status to.
fn creative_actions(status: CreativeStatus) -> Vec<(CreativeStatus, &'static str)> {
    match status {
        CreativeStatus::Active => vec![
            (CreativeStatus::Paused, "Pause"),
            (CreativeStatus::Pinned, "Pin"),
        ],
        CreativeStatus::Paused => vec![(CreativeStatus::Active, "Resume")],
        CreativeStatus::Pinned => vec![(CreativeStatus::Active, "Unpin")],
        CreativeStatus::Retired => Vec::new(),
    }
}

/// All-time impressions and clicks per placement the advert was served for.
/// One row of a table by viewer group: its key (for `data-*`), its label and its counts.
struct GroupRow<'a> {
    key: String,
    label: String,
    counts: &'a Counts,
    converted: &'a Converted,
}

/// All-time counts by the viewers' device and by their country, when any was known.
fn viewer_tables(page: &AdvertPage<'_>) -> Markup {
    let devices: Vec<GroupRow<'_>> = page
        .device_counts
        .into_iter()
        .flatten()
        .map(|d| GroupRow {
            key: d.device.map(|d| d.as_str().to_owned()).unwrap_or_default(),
            label: d.device.map_or("Unknown", |d| d.as_str()).to_owned(),
            counts: &d.counts,
            converted: &d.converted,
        })
        .collect();
    let countries: Vec<GroupRow<'_>> = page
        .country_counts
        .into_iter()
        .flatten()
        .map(|c| GroupRow {
            key: c.country.clone().unwrap_or_default(),
            label: c.country.clone().unwrap_or_else(|| "Unknown".to_owned()),
            counts: &c.counts,
            converted: &c.converted,
        })
        .collect();
    let known = |rows: &[GroupRow<'_>]| rows.iter().any(|r| !r.key.is_empty());
    if !known(&devices) && !known(&countries) {
        return html! {};
    }
    let table = |id: &str, attribute: &str, caption: &str, heading: &str, rows: &[GroupRow<'_>]| {
        html! {
            div.table-scroll {
                table id=(id) {
                    caption { (caption) }
                    thead {
                        tr {
                            th scope="col" { (heading) }
                            th.num scope="col" { "Impressions" }
                            th.num scope="col" { "Clicks" }
                            th.num scope="col" { "CTR" }
                            th.num scope="col" { "Conversions" }
                            th.num scope="col" { "CVR" }
                        }
                    }
                    tbody {
                        @for row in rows {
                            tr data-device=[(attribute == "device").then_some(&row.key)]
                                data-country=[(attribute == "country").then_some(&row.key)] {
                                th scope="row" { (row.label) }
                                td.num.impressions { (row.counts.impressions) }
                                td.num.clicks { (row.counts.clicks) }
                                td.num.ctr { (percent(row.counts.ctr())) }
                                td.num.conversions { (row.converted.conversions) }
                                td.num.cvr { (percent((row.counts.clicks > 0).then_some(row.converted.cvr))) }
                            }
                        }
                    }
                }
            }
        }
    };
    html! {
        h2 #viewers-heading { "Devices and countries" }
        p {
            "Who saw and clicked the advert, as the serve's parameters, the browser's User-Agent "
            "and the country header of the CDN in front told. Unknown: not told."
        }
        (table("device-counts", "device", "All-time counts per device.", "Device", &devices))
        (table("country-counts", "country", "All-time counts per country.", "Country", &countries))
    }
}

fn placement_counts(counts: Option<&[PlacementCounts]>) -> Markup {
    let Some(counts) = counts.filter(|c| c.iter().any(|p| p.placement.is_some())) else {
        return html! {};
    };
    html! {
        div.table-scroll {
            table #placement-counts {
                caption { "All-time counts per placement. The generic card is the advert served without a placement, or its link followed without one." }
                thead {
                    tr {
                        th scope="col" { "Placement" }
                        th.num scope="col" { "Impressions" }
                        th.num scope="col" { "Clicks" }
                        th.num scope="col" { "CTR" }
                    }
                }
                tbody {
                    @for share in counts {
                        tr data-placement=(share.placement.as_deref().unwrap_or_default()) {
                            th scope="row" { (share.placement.as_deref().unwrap_or("Generic card")) }
                            td.num.impressions { (share.counts.impressions) }
                            td.num.clicks { (share.counts.clicks) }
                            td.num.ctr { (percent(share.counts.ctr())) }
                        }
                    }
                }
            }
        }
    }
}

//! The HTML advert form: `GET /` shows it, `POST /adverts` (multipart/form-data, as a browser
//! sends it) answers a page either way.

use reqwest::header::HeaderMap;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{TestApp, png, spawn_app};

const GENRES: [&str; 15] = [
    "automotive",
    "beauty",
    "education",
    "electronics",
    "entertainment",
    "fashion",
    "finance",
    "food",
    "games",
    "health",
    "home",
    "real_estate",
    "sports",
    "travel",
    "other",
];

/// What a browser sends for the form: every field, `lang` left empty, the image as a file.
fn browser_form(key: &str, title: &str, text: &str, genre: &str, target_url: &str) -> Form {
    Form::new()
        .text("api_key", key.to_owned())
        .text("title", title.to_owned())
        .text("text", text.to_owned())
        .text("genre", genre.to_owned())
        .text("target_url", target_url.to_owned())
        .text("lang", "")
        .part(
            "image",
            Part::bytes(png(320, 240))
                .file_name("banner.png")
                .mime_str("image/png")
                .unwrap(),
        )
}

fn valid_form(key: &str) -> Form {
    browser_form(
        key,
        "Summer in Sochi",
        "Seven nights by the sea, flights included.",
        "travel",
        "https://example.com/offers/sochi",
    )
}

/// Posts the form and returns the status, headers and page.
async fn submit(app: &TestApp, form: Form) -> (u16, HeaderMap, String) {
    let response = app.post_form_page(form).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn content_type(headers: &HeaderMap) -> &str {
    headers["content-type"].to_str().unwrap()
}

/// The adverts the API lists for `key`.
async fn stored_adverts(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, list) = app.get_json("/api/v1/adverts", key).await;
    assert_eq!(status, 200);
    list["adverts"].as_array().unwrap().clone()
}

/// Adverts in the database, whoever owns them.
async fn advert_count(app: &TestApp) -> i64 {
    use diesel::{QueryDsl, RunQueryDsl};
    use reklama::platform::db::{DbError, schema::adverts};
    app.handles
        .db
        .run(|conn| {
            adverts::table
                .count()
                .get_result::<i64>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
}

/// The start tag of the element with this id, e.g. `<input id="title" ...>`.
fn tag_with_id<'a>(page: &'a str, id: &str) -> &'a str {
    let marker = format!(" id=\"{id}\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no element with id {id} in {page}"));
    let start = page[..at].rfind('<').unwrap();
    let end = at + page[at..].find('>').unwrap();
    &page[start..=end]
}

/// The text of the error shown next to `field`, or None when the field has no error.
fn field_error(page: &str, field: &str) -> Option<String> {
    let marker = format!("<p class=\"field-error\" id=\"{field}-error\">");
    let at = page.find(&marker)? + marker.len();
    let end = at + page[at..].find("</p>").unwrap();
    Some(page[at..end].to_owned())
}

/// The part of the page between the control of `field` and the next label: where its error goes.
fn beside(page: &str, field: &str) -> String {
    let marker = format!("<label for=\"{field}\">");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no label for {field}"));
    let rest = &page[at + marker.len()..];
    let end = rest
        .find("<label ")
        .or_else(|| rest.find("<button"))
        .unwrap();
    rest[..end].to_owned()
}

fn assert_security_headers(headers: &HeaderMap) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
}

#[tokio::test]
async fn the_form_page_has_every_field_all_genres_and_security_headers() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(content_type(&headers), "text/html; charset=utf-8");
    assert_security_headers(&headers);
    let page = response.text().await.unwrap();

    assert!(
        page.contains(r#"<form method="post" action="/adverts" enctype="multipart/form-data">"#),
        "{page}"
    );
    for field in [
        "api_key",
        "title",
        "text",
        "genre",
        "target_url",
        "lang",
        "image",
    ] {
        assert!(
            page.contains(&format!("<label for=\"{field}\">")),
            "no label for {field}"
        );
        let control = tag_with_id(&page, field);
        assert!(
            control.contains(&format!("name=\"{field}\"")),
            "{field}: {control}"
        );
        // A fresh form shows no errors.
        assert!(!control.contains("aria-invalid"), "{control}");
        assert_eq!(field_error(&page, field), None);
    }
    assert!(tag_with_id(&page, "image").contains(r#"type="file""#));
    assert!(tag_with_id(&page, "api_key").contains(r#"type="password""#));

    assert!(tag_with_id(&page, "genre").starts_with("<select"));
    let select_start = page.find("<select").unwrap();
    let select =
        &page[select_start..select_start + page[select_start..].find("</select>").unwrap()];
    assert_eq!(select.matches("<option").count(), 16, "{select}");
    assert!(select.contains(r#"<option value="">Choose a genre</option>"#));
    for genre in GENRES {
        assert!(
            select.contains(&format!("<option value=\"{genre}\">")),
            "{genre} missing from {select}"
        );
    }
    assert!(select.contains("Real estate / Недвижимость"), "{select}");
    assert!(!select.contains("selected"), "{select}");

    assert!(page.contains(r#"<link rel="stylesheet" href="/assets/reklama.css">"#));
    let css = app
        .client
        .get(app.url("/assets/reklama.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(css.text().await.unwrap().contains(".field-error"));
    app.stop().await;
}

#[tokio::test]
async fn a_valid_form_submission_shows_the_created_advert_and_stores_it() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (status, headers, page) = submit(&app, valid_form(&key)).await;
    assert_eq!(status, 201, "{page}");
    assert_eq!(content_type(&headers), "text/html; charset=utf-8");
    assert_security_headers(&headers);
    assert!(page.contains("<h1>Advert created</h1>"), "{page}");
    assert!(page.contains("<dd>Summer in Sochi</dd>"), "{page}");
    assert!(page.contains("<dd>Seven nights by the sea, flights included.</dd>"));
    assert!(page.contains("<dd>Travel / Путешествия</dd>"), "{page}");
    assert!(page.contains("<dd>https://example.com/offers/sochi</dd>"));

    // The tracked link, both as the link target and its text.
    let prefix = format!("<a href=\"{}/r/", app.address);
    let at = page.find(&prefix).unwrap_or_else(|| panic!("{page}")) + prefix.len();
    let code = &page[at..at + page[at..].find('"').unwrap()];
    assert_eq!(code.len(), 12, "{code}");
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
    let tracked = format!("{}/r/{code}", app.address);
    assert!(page.contains(&format!("<a href=\"{tracked}\">{tracked}</a>")));

    // The creative, served as JPEG.
    let img = img_tag(&page);
    let src_at = img.find("src=\"").unwrap() + 5;
    let src = &img[src_at..src_at + img[src_at..].find('"').unwrap()];
    // Same-origin path, so the page's `img-src 'self'` policy allows it whatever public_url says.
    assert!(src.starts_with("/media/") && src.ends_with(".jpg"), "{src}");
    assert!(img.contains(r#"alt="Summer in Sochi""#), "{img}");
    let image = app.client.get(app.url(src)).send().await.unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/jpeg");
    let bytes = image.bytes().await.unwrap();
    assert_eq!(&bytes[..3], b"\xff\xd8\xff");

    // The API sees the same advert.
    let adverts = stored_adverts(&app, &key).await;
    assert_eq!(adverts.len(), 1);
    assert_eq!(adverts[0]["title"], "Summer in Sochi");
    assert_eq!(adverts[0]["genre"], "travel");
    assert_eq!(adverts[0]["lang"], Value::Null);
    assert_eq!(adverts[0]["tracked_url"], tracked.as_str());
    assert_eq!(adverts[0]["image_url"], app.url(src));
    app.stop().await;
}

/// The `<img ...>` start tag of the created-advert page.
fn img_tag(page: &str) -> &str {
    let start = page
        .find("<img")
        .unwrap_or_else(|| panic!("no img in {page}"));
    &page[start..=start + page[start..].find('>').unwrap()]
}

#[tokio::test]
async fn an_invalid_submission_is_422_with_each_error_beside_its_field_and_values_kept() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let long_title = "T".repeat(91);
    let text = "Seven nights by the sea, flights included.";
    let form = browser_form(&key, &long_title, text, "spaceships", "javascript:alert(1)");
    let (status, headers, page) = submit(&app, form).await;
    assert_eq!(status, 422, "{page}");
    assert_eq!(content_type(&headers), "text/html; charset=utf-8");
    assert_security_headers(&headers);
    assert!(page.contains(r#"<form method="post" action="/adverts""#));
    assert!(page.contains("Please correct the fields marked below."));

    assert_eq!(
        field_error(&page, "title").as_deref(),
        Some("must be at most 90 characters (got 91)")
    );
    let genre_error = field_error(&page, "genre").unwrap();
    assert!(
        genre_error.starts_with("unknown genre &quot;spaceships&quot;; accepted values: "),
        "{genre_error}"
    );
    assert!(genre_error.contains("real_estate"), "{genre_error}");
    assert_eq!(
        field_error(&page, "target_url").as_deref(),
        Some(
            "the link must start with https:// or http://; &quot;javascript:&quot; links are not allowed"
        )
    );
    // Each error sits beside its own field, not somewhere else on the page.
    for field in ["title", "genre", "target_url"] {
        assert!(
            beside(&page, field).contains(&format!("id=\"{field}-error\"")),
            "{field}"
        );
        let control = tag_with_id(&page, field);
        assert!(control.contains(r#"aria-invalid="true""#), "{control}");
        assert!(
            control.contains(&format!("aria-describedby=\"{field}-error\"")),
            "{control}"
        );
    }
    for field in ["api_key", "text", "lang", "image"] {
        assert_eq!(field_error(&page, field), None, "{field}");
        assert!(
            !tag_with_id(&page, field).contains("aria-invalid"),
            "{field}"
        );
    }

    // What was typed is kept (the key is a password and is not echoed back).
    assert!(
        tag_with_id(&page, "title").contains(&format!("value=\"{long_title}\"")),
        "{}",
        tag_with_id(&page, "title")
    );
    assert!(page.contains(&format!("{}{text}</textarea>", tag_with_id(&page, "text"))));
    assert!(tag_with_id(&page, "target_url").contains(r#"value="javascript:alert(1)""#));
    assert!(!tag_with_id(&page, "api_key").contains("value="));
    assert!(!page.contains(&key));

    assert!(stored_adverts(&app, &key).await.is_empty());
    assert_eq!(advert_count(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_form_keeps_a_valid_genre_selected_when_other_fields_fail() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let form = browser_form(&key, "   ", "Text", "Путешествия", "https://example.com/");
    let (status, _, page) = submit(&app, form).await;
    assert_eq!(status, 422, "{page}");
    assert_eq!(
        field_error(&page, "title").as_deref(),
        Some("must not be empty")
    );
    assert!(
        page.contains(r#"<option value="travel" selected>"#),
        "{page}"
    );
    assert_eq!(page.matches(" selected").count(), 1);
    assert!(stored_adverts(&app, &key).await.is_empty());
    assert_eq!(advert_count(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_or_revoked_key_is_401_with_the_error_beside_api_key() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let mut forged = key.clone();
    forged.pop();
    forged.push(if key.ends_with('a') { 'b' } else { 'a' });
    for wrong in [forged.as_str(), "not-a-key", ""] {
        let (status, headers, page) = submit(&app, valid_form(wrong)).await;
        assert_eq!(status, 401, "{wrong:?}: {page}");
        assert_eq!(content_type(&headers), "text/html; charset=utf-8");
        assert_security_headers(&headers);
        assert_eq!(
            field_error(&page, "api_key").as_deref(),
            Some("this API key is unknown or revoked"),
            "{wrong:?}"
        );
        assert!(beside(&page, "api_key").contains(r#"id="api_key-error""#));
        assert!(tag_with_id(&page, "api_key").contains(r#"aria-invalid="true""#));
        // The other fields are valid, so they carry no error, and keep their values.
        assert_eq!(field_error(&page, "title"), None);
        assert!(tag_with_id(&page, "title").contains(r#"value="Summer in Sochi""#));
    }
    assert!(stored_adverts(&app, &key).await.is_empty());
    assert_eq!(advert_count(&app).await, 0);

    assert_eq!(app.handles.customers.revoke("Acme").await.unwrap(), 1);
    let (status, _, page) = submit(&app, valid_form(&key)).await;
    assert_eq!(status, 401, "{page}");
    assert_eq!(
        field_error(&page, "api_key").as_deref(),
        Some("this API key is unknown or revoked")
    );
    assert_eq!(advert_count(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_key_with_invalid_fields_reports_the_key_and_every_field() {
    let app = spawn_app().await;
    let form = browser_form(
        "not-a-key",
        "",
        "Text",
        "spaceships",
        "https://example.com/",
    );
    let (status, _, page) = submit(&app, form).await;
    assert_eq!(status, 401, "{page}");
    assert!(field_error(&page, "api_key").is_some());
    assert!(field_error(&page, "title").is_some());
    assert!(field_error(&page, "genre").is_some());
    assert_eq!(field_error(&page, "text"), None);
    assert_eq!(advert_count(&app).await, 0);
    app.stop().await;
}

const XSS_TITLE: &str = "<script>alert(1)</script>";
const XSS_TEXT: &str = "Nice offer\"><img src=x onerror=alert(1)>";

fn assert_nothing_raw(page: &str) {
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(!page.contains("\"><img"), "{page}");
    assert!(!page.contains("<svg"), "{page}");
}

#[tokio::test]
async fn submitted_markup_is_shown_escaped_on_the_advert_page_and_the_form() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let form = browser_form(
        &key,
        XSS_TITLE,
        XSS_TEXT,
        "games",
        "https://example.com/?q=<b>&x=\"y\"",
    );
    let (status, _, page) = submit(&app, form).await;
    assert_eq!(status, 201, "{page}");
    assert_nothing_raw(&page);
    assert!(
        page.contains("<dd>&lt;script&gt;alert(1)&lt;/script&gt;</dd>"),
        "{page}"
    );
    assert!(
        page.contains("<title>&lt;script&gt;alert(1)&lt;/script&gt; · reklama</title>"),
        "{page}"
    );
    assert!(
        page.contains(r#"alt="&lt;script&gt;alert(1)&lt;/script&gt;""#),
        "{page}"
    );
    assert!(
        page.contains("<dd>Nice offer&quot;&gt;&lt;img src=x onerror=alert(1)&gt;</dd>"),
        "{page}"
    );
    // Stored as typed: escaping is the page's business.
    let adverts = stored_adverts(&app, &key).await;
    assert_eq!(adverts[0]["title"], XSS_TITLE);
    assert_eq!(adverts[0]["text"], XSS_TEXT);

    // The re-rendered form escapes the values it keeps, and the genre echoed in its error.
    let form = browser_form(
        &key,
        XSS_TITLE,
        XSS_TEXT,
        "\"><svg onload=alert(1)>",
        "https://example.com/",
    );
    let (status, _, page) = submit(&app, form).await;
    assert_eq!(status, 422, "{page}");
    assert_nothing_raw(&page);
    assert!(
        tag_with_id(&page, "title").contains(r#"value="&lt;script&gt;alert(1)&lt;/script&gt;""#),
        "{page}"
    );
    assert!(
        page.contains("Nice offer&quot;&gt;&lt;img src=x onerror=alert(1)&gt;</textarea>"),
        "{page}"
    );
    assert!(
        field_error(&page, "genre")
            .unwrap()
            .contains("&quot;&gt;&lt;svg onload=alert(1)&gt;"),
        "{page}"
    );
    assert_eq!(stored_adverts(&app, &key).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_non_multipart_post_is_a_4xx_page_with_a_readable_notice() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let response = app
        .client
        .post(app.url("/adverts"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "api_key={key}&title=Hello&text=World&genre=travel&target_url=https%3A%2F%2Fexample.com%2F"
        ))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let page = response.text().await.unwrap();
    assert_eq!(status, 400, "{page}");
    assert_eq!(content_type(&headers), "text/html; charset=utf-8");
    assert_security_headers(&headers);
    let start = page
        .find(r#"<div class="summary" role="alert"><p>"#)
        .unwrap_or_else(|| panic!("no notice in {page}"));
    let notice = &page[start..start + page[start..].find("</p>").unwrap()];
    assert!(notice.contains("multipart"), "{notice}");
    // The form is shown again so the customer can retry.
    assert!(page.contains(r#"enctype="multipart/form-data""#));
    assert!(stored_adverts(&app, &key).await.is_empty());
    assert_eq!(advert_count(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_image_over_10_mib_is_413_with_the_error_beside_image() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let form = Form::new()
        .text("api_key", key.clone())
        .text("title", "Big")
        .text("text", "Too big an image")
        .text("genre", "travel")
        .text("target_url", "https://example.com/")
        .text("lang", "")
        .part(
            "image",
            Part::bytes(vec![0u8; 10 * 1024 * 1024 + 1])
                .file_name("huge.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let (status, headers, page) = submit(&app, form).await;
    assert_eq!(status, 413, "{page}");
    assert_eq!(content_type(&headers), "text/html; charset=utf-8");
    assert_security_headers(&headers);
    assert_eq!(
        field_error(&page, "image").as_deref(),
        Some("must be at most 10485760 bytes")
    );
    assert!(beside(&page, "image").contains(r#"id="image-error""#));
    assert!(tag_with_id(&page, "image").contains(r#"aria-invalid="true""#));
    assert!(stored_adverts(&app, &key).await.is_empty());
    assert_eq!(advert_count(&app).await, 0);

    // Exactly 10 MiB is not refused for its size (it is refused as not being an image).
    let form = Form::new()
        .text("api_key", key.clone())
        .text("title", "Big")
        .text("text", "Exactly the limit")
        .text("genre", "travel")
        .text("target_url", "https://example.com/")
        .part(
            "image",
            Part::bytes(vec![0u8; 10 * 1024 * 1024])
                .file_name("limit.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let (status, _, page) = submit(&app, form).await;
    assert_eq!(status, 415, "{page}");
    assert!(field_error(&page, "image").is_some());
    app.stop().await;
}

#[tokio::test]
async fn an_image_over_10_mib_keeps_the_values_typed_before_it() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let form = Form::new()
        .text("api_key", key.clone())
        .text("title", "Big")
        .text("text", "Too big an image")
        .text("genre", "travel")
        .text("target_url", "https://example.com/")
        .part(
            "image",
            Part::bytes(vec![0u8; 10 * 1024 * 1024 + 1])
                .file_name("huge.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let (status, _, page) = submit(&app, form).await;
    assert_eq!(status, 413, "{page}");
    assert!(
        tag_with_id(&page, "title").contains(r#"value="Big""#),
        "{page}"
    );
    assert!(page.contains(">Too big an image</textarea>"), "{page}");
    assert!(
        page.contains(r#"<option value="travel" selected>"#),
        "{page}"
    );
    assert!(tag_with_id(&page, "target_url").contains(r#"value="https://example.com/""#));
    app.stop().await;
}

/// The `href` of the element with this id.
fn href_of(page: &str, id: &str) -> String {
    let tag = tag_with_id(page, id);
    let at = tag.find("href=\"").unwrap_or_else(|| panic!("{tag}")) + 6;
    tag[at..at + tag[at..].find('"').unwrap()].to_owned()
}

async fn get_page(app: &TestApp, path: &str) -> (u16, HeaderMap, String) {
    let response = app.client.get(app.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn the_answer_previews_every_placement_and_links_a_preview_only_its_token_opens() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (status, _, page) = submit(&app, valid_form(&key)).await;
    assert_eq!(status, 201, "{page}");
    // One preview per placement of the catalogue, each at the placement's real size (a
    // placeholder while it is being prepared).
    assert_eq!(
        page.matches("<section class=\"placement\"").count(),
        7,
        "{page}"
    );
    for (width, height) in [(300, 250), (336, 280), (728, 90), (300, 600), (1200, 628)] {
        assert!(
            page.contains(&format!("{width}×{height}")),
            "{width}×{height} missing from {page}"
        );
    }
    let placeholder = page
        .split("<img class=\"variant-pending\"")
        .nth(1)
        .map(|rest| &rest[..rest.find('>').unwrap()])
        .unwrap_or_else(|| panic!("no placeholder in {page}"));
    assert!(
        placeholder.contains(r#"width="300" height="250""#),
        "{placeholder}"
    );
    assert!(
        placeholder.contains("src=\"/assets/pending.svg\""),
        "{placeholder}"
    );
    let svg = app
        .client
        .get(app.url("/assets/pending.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");

    let link = href_of(&page, "preview-link");
    let (path, token) = link.split_once("?t=").unwrap_or_else(|| panic!("{link}"));
    let id: i64 = path
        .strip_prefix("/adverts/")
        .and_then(|rest| rest.strip_suffix("/preview"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{link}"));

    // The link shows the placements, reloading itself until none is pending.
    let (status, headers, preview) = get_page(&app, &link).await;
    assert_eq!(status, 200, "{preview}");
    assert_security_headers(&headers);
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert_eq!(preview.matches("<section class=\"placement\"").count(), 7);
    assert!(preview.contains("Summer in Sochi"));
    let ready = crate::helpers::eventually(
        std::time::Duration::from_secs(30),
        "every placement prepared",
        || async {
            let (_, _, preview) = get_page(&app, &link).await;
            (!preview.contains("variant-pending")).then_some(preview)
        },
    )
    .await;
    assert!(!ready.contains("http-equiv=\"refresh\""), "{ready}");
    assert!(ready.contains("<img class=\"variant\""), "{ready}");

    // Without its token, with a forged one, or for another advert: the same 404 page.
    let other = app.create_advert(&key).await["id"].as_i64().unwrap();
    let mut forged = token.to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let mut answers = Vec::new();
    for path in [
        format!("/adverts/{id}/preview"),
        format!("/adverts/{id}/preview?t="),
        format!("/adverts/{id}/preview?t={forged}"),
        format!("/adverts/{other}/preview?t={token}"),
        format!("/adverts/{}/preview?t={token}", other + 1000),
        format!("/adverts/x/preview?t={token}"),
    ] {
        let (status, headers, page) = get_page(&app, &path).await;
        assert_eq!(status, 404, "{path}: {page}");
        assert_security_headers(&headers);
        assert!(!page.contains("Summer in Sochi"), "{path}: {page}");
        answers.push(page);
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "the 404 pages differ"
    );
    // A deleted advert's preview is gone too.
    let deleted = app
        .client
        .delete(app.url(&format!("/api/v1/adverts/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(get_page(&app, &link).await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn the_form_takes_more_titles_and_texts_and_a_call_to_action() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    // A browser sends every optional input, blank or not.
    let form = valid_form(&key)
        .text("titles", "Sochi for less")
        .text("titles", "")
        .text("titles", "Seven nights, one price")
        .text("titles", "")
        .text("texts", "")
        .text("cta", "Book now");
    let (status, _, page) = submit(&app, form).await;
    assert_eq!(status, 201, "{page}");
    let stored = stored_adverts(&app, &key).await;
    assert_eq!(
        stored[0]["titles"],
        json!([
            "Summer in Sochi",
            "Sochi for less",
            "Seven nights, one price"
        ])
    );
    assert_eq!(stored[0]["texts"].as_array().unwrap().len(), 1);
    assert_eq!(stored[0]["cta"], "Book now");

    // A bad extra title: the form again, open, with the error beside that input and every value
    // kept.
    let form = valid_form(&key)
        .text("titles", "Fine")
        .text("titles", "x".repeat(91))
        .text("cta", "Book now");
    let (status, _, page) = submit(&app, form).await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("<details class=\"more\" open>"), "{page}");
    assert!(field_error(&page, "titles[2]").is_some(), "{page}");
    assert!(field_error(&page, "title").is_none());
    assert!(tag_with_id(&page, "titles[1]").contains(r#"value="Fine""#));
    assert!(tag_with_id(&page, "cta").contains(r#"value="Book now""#));
    assert!(
        page.contains(r##"<a href="#titles[2]">titles[2]</a>"##),
        "{page}"
    );
    let (status, _, page) = submit(&app, valid_form(&key).text("cta", "x".repeat(25))).await;
    assert_eq!(status, 422);
    assert!(field_error(&page, "cta").is_some(), "{page}");
    assert!(!page.contains("<details class=\"more\" open>"));
    app.stop().await;
}

use serde_json::{Value, json};

use crate::helpers::{advert_json, field_codes_in_order, file_part, png, spawn_app};

#[tokio::test]
async fn a_json_advert_is_created_with_its_links_and_creative() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let response = app.post_advert(&key, &advert_json(&png(1200, 800))).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let advert: Value = response.json().await.unwrap();
    let id = advert["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v1/adverts/{id}"));
    assert_eq!(advert["title"], "Summer in Sochi");
    assert_eq!(advert["text"], "Seven nights by the sea, flights included.");
    assert_eq!(advert["genre"], "travel");
    assert_eq!(
        advert["target_url"],
        "https://example.com/offers/sochi?utm_source=reklama"
    );
    assert_eq!(advert["status"], "active");
    assert_eq!(advert["weight"], 1);
    assert_eq!(
        (
            advert["image_width"].as_u64(),
            advert["image_height"].as_u64()
        ),
        (Some(600), Some(400))
    );
    let tracked = advert["tracked_url"].as_str().unwrap();
    let code = tracked
        .strip_prefix(&format!("{}/r/", app.address))
        .unwrap();
    assert_eq!(code.len(), 12);
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(advert["created_at"].as_str().unwrap().ends_with('Z'));

    // The creative is served at image_url, with a strong ETag and an immutable cache policy.
    let image_url = advert["image_url"].as_str().unwrap();
    let image = app.client.get(image_url).send().await.unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/jpeg");
    assert_eq!(
        image.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let etag = image.headers()["etag"].to_str().unwrap().to_owned();
    let bytes = image.bytes().await.unwrap();
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (600, 400));
    let again = app
        .client
        .get(image_url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    app.stop().await;
}

#[tokio::test]
async fn a_multipart_advert_is_created_from_a_file_part() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let form = reqwest::multipart::Form::new()
        .text("title", "Новые кроссовки")
        .text("text", "Скидка 30% до конца недели")
        .text("genre", "Обувь")
        .text("target_url", "https://shop.example.ru/sneakers")
        .text("lang", "RU")
        .part("image", file_part(png(640, 640), "shoe.png", "image/png"));
    let response = app.post_advert_form(&key, form).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    assert_eq!(advert["genre"], "fashion");
    assert_eq!(advert["lang"], "ru");
    assert_eq!(advert["title"], "Новые кроссовки");
    app.stop().await;
}

#[tokio::test]
async fn genre_synonyms_and_russian_names_are_accepted() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    for (input, canonical) in [
        ("cars", "automotive"),
        ("авто", "automotive"),
        ("Автомобили", "automotive"),
        (" Путешествия ", "travel"),
        ("Real Estate", "real_estate"),
    ] {
        let mut body = advert_json(&png(100, 100));
        body["genre"] = json!(input);
        let response = app.post_advert(&key, &body).await;
        assert_eq!(response.status(), 201, "{input}");
        let advert: Value = response.json().await.unwrap();
        assert_eq!(advert["genre"], canonical, "{input}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_genre_is_422_listing_the_accepted_values() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let mut body = advert_json(&png(100, 100));
    body["genre"] = json!("spaceships");
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    let field = &error["error"]["fields"][0];
    assert_eq!(field["field"], "genre");
    assert_eq!(field["code"], "unknown_genre");
    let allowed: Vec<&str> = field["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for genre in [
        "automotive",
        "education",
        "electronics",
        "fashion",
        "finance",
        "food",
        "games",
        "health",
        "real_estate",
        "sports",
        "travel",
        "other",
    ] {
        assert!(allowed.contains(&genre), "{genre} missing from {allowed:?}");
    }
    app.stop().await;
}

/// Sends one invalid variation and returns the field errors.
async fn field_errors(
    app: &crate::helpers::TestApp,
    key: &str,
    body: Value,
) -> (u16, Vec<(String, String)>) {
    let response = app.post_advert(key, &body).await;
    let status = response.status().as_u16();
    let error: Value = response.json().await.unwrap();
    (status, field_codes_in_order(&error))
}

#[tokio::test]
async fn each_field_rule_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let image = png(100, 100);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("title", json!("x".repeat(91)), "too_long"),
        ("title", json!("   "), "required"),
        ("text", json!("y".repeat(501)), "too_long"),
        ("text", json!(""), "required"),
        ("lang", json!("russian"), "invalid"),
        ("weight", json!(0), "out_of_range"),
        ("max_clicks", json!("lots"), "out_of_range"),
        ("starts_at", json!("tomorrow"), "invalid_time"),
        ("title", json!(42), "invalid_type"),
        ("colour", json!("red"), "unknown_field"),
    ];
    for (field, value, code) in cases {
        let mut body = advert_json(&image);
        body[field] = value.clone();
        let (status, fields) = field_errors(&app, &key, body).await;
        assert_eq!(status, 422, "{field}={value}");
        assert_eq!(
            fields,
            vec![(field.to_owned(), code.to_owned())],
            "{field}={value}"
        );
    }
    // Every missing field is reported at once.
    let (status, fields) = field_errors(&app, &key, json!({})).await;
    assert_eq!(status, 422);
    let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, ["title", "text", "genre", "target_url", "image"]);
    // ends_at must follow starts_at.
    let mut body = advert_json(&image);
    body["starts_at"] = json!("2027-01-02T00:00:00Z");
    body["ends_at"] = json!("2027-01-01T00:00:00Z");
    let (status, fields) = field_errors(&app, &key, body).await;
    assert_eq!(
        (status, fields),
        (422, vec![("ends_at".into(), "before_start".into())])
    );
    app.stop().await;
}

#[tokio::test]
async fn target_url_tricks_are_refused_on_the_raw_text() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let image = png(64, 64);
    for (url, code) in [
        ("javascript:alert(1)", "scheme"),
        ("java\tscript:alert(1)", "control_character"),
        ("data:text/html,<b>x</b>", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("//evil.example/x", "relative"),
        ("/\\evil.example", "backslash"),
        ("/relative/path", "relative"),
        (
            "https://example.com/\r\nSet-Cookie: a=b",
            "control_character",
        ),
        (" https://example.com", "whitespace"),
        ("https://good.example@evil.example/", "userinfo"),
        ("ftp://example.com/file", "scheme"),
    ] {
        let mut body = advert_json(&image);
        body["target_url"] = json!(url);
        let (status, fields) = field_errors(&app, &key, body).await;
        assert_eq!(status, 422, "{url:?}");
        assert_eq!(
            fields,
            vec![("target_url".to_owned(), code.to_owned())],
            "{url:?}"
        );
    }
    let long = format!("https://example.com/{}", "a".repeat(2048));
    let mut body = advert_json(&image);
    body["target_url"] = json!(long);
    let (_, fields) = field_errors(&app, &key, body).await;
    assert_eq!(
        fields,
        vec![("target_url".to_owned(), "too_long".to_owned())]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_stored_target_url_is_byte_for_byte_the_submitted_one() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let raw = "HTTPS://Example.COM/Path/%7Euser?q=a+b&x=%2F#Frag";
    let mut body = advert_json(&png(64, 64));
    body["target_url"] = json!(raw);
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    assert_eq!(advert["target_url"], raw);
    app.stop().await;
}

#[tokio::test]
async fn a_missing_wrong_or_revoked_key_is_401() {
    let app = spawn_app().await;
    let body = advert_json(&png(64, 64));
    let anonymous = app
        .client
        .post(app.url("/api/v1/adverts"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let key = app.customer_key("Acme").await;
    let mut forged = key.clone();
    forged.pop();
    forged.push(if key.ends_with('a') { 'b' } else { 'a' });
    assert_eq!(app.post_advert(&forged, &body).await.status(), 401);
    assert_eq!(app.post_advert("not-a-key", &body).await.status(), 401);
    assert_eq!(app.post_advert(&key, &body).await.status(), 201);
    assert_eq!(app.handles.customers.revoke("Acme").await.unwrap(), 1);
    let revoked = app.post_advert(&key, &body).await;
    assert_eq!(revoked.status(), 401);
    let error: Value = revoked.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");
    app.stop().await;
}

/// A valid PNG whose header claims 50000×50000 pixels (a decompression bomb).
fn png_bomb() -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[tokio::test]
async fn bad_images_are_refused_with_a_4xx_naming_the_image() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    // A decompression bomb: refused from its header.
    let response = app.post_advert(&key, &advert_json(&png_bomb())).await;
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["fields"][0]["field"], "image");
    assert_eq!(error["error"]["fields"][0]["code"], "dimensions_too_large");
    // Not an image at all.
    let response = app
        .post_advert(&key, &advert_json(b"just some text, not an image"))
        .await;
    assert_eq!(response.status(), 415);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["fields"][0]["field"], "image");
    // A truncated PNG.
    let whole = png(300, 300);
    let response = app
        .post_advert(&key, &advert_json(&whole[..whole.len() / 2]))
        .await;
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["fields"][0]["code"], "corrupt");
    // Over 10 MiB as a multipart file: 413.
    let big = vec![0u8; 11 * 1024 * 1024];
    let form = reqwest::multipart::Form::new().text("title", "t").part(
        "image",
        reqwest::multipart::Part::bytes(big).file_name("big.png"),
    );
    let response = app.post_advert_form(&key, form).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["fields"][0]["field"], "image");
    app.stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_4xx_never_5xx() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let send = |body: Vec<u8>, content_type: &'static str| {
        app.client
            .post(app.url("/api/v1/adverts"))
            .bearer_auth(&key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        send(b"{not json".to_vec(), "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        send(b"[1,2]".to_vec(), "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(
        send(nested.into_bytes(), "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        send(vec![0xff, 0xfe, 0x00], "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        send(b"title=x".to_vec(), "text/plain")
            .await
            .unwrap()
            .status(),
        415
    );
    let huge = vec![b' '; 15 * 1024 * 1024];
    assert_eq!(send(huge, "application/json").await.unwrap().status(), 413);
    app.stop().await;
}

#[tokio::test]
async fn customers_see_only_their_own_adverts() {
    let app = spawn_app().await;
    let alice = app.customer_key("Alice").await;
    let bob = app.customer_key("Bob").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.create_advert(&alice).await["id"].as_i64().unwrap());
    }
    let bobs = app.create_advert(&bob).await["id"].as_i64().unwrap();

    let (status, advert) = app
        .get_json(&format!("/api/v1/adverts/{}", ids[0]), &alice)
        .await;
    assert_eq!((status, advert["id"].as_i64()), (200, Some(ids[0])));
    let (status, _) = app
        .get_json(&format!("/api/v1/adverts/{bobs}"), &alice)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .get_json(&format!("/api/v1/adverts/{}", ids[0]), &bob)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.get_json("/api/v1/adverts/999999", &alice).await;
    assert_eq!(status, 404);
    let (status, _) = app.get_json("/api/v1/adverts/abc", &alice).await;
    assert_eq!(status, 404);

    // Newest first, paged with `before`.
    let (status, page) = app.get_json("/api/v1/adverts?limit=2", &alice).await;
    assert_eq!(status, 200);
    let first: Vec<i64> = page["adverts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(first, vec![ids[2], ids[1]]);
    let next = page["next_before"].as_i64().unwrap();
    let (_, page) = app
        .get_json(&format!("/api/v1/adverts?limit=2&before={next}"), &alice)
        .await;
    let second: Vec<i64> = page["adverts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(second, vec![ids[0]]);
    assert!(page.get("next_before").is_none());
    let (_, page) = app.get_json("/api/v1/adverts", &bob).await;
    assert_eq!(page["adverts"].as_array().unwrap().len(), 1);
    app.stop().await;
}

/// Image bytes are JPEG, PNG, WebP or GIF: already compressed. On PostgreSQL they are stored out
/// of line without TOAST's compression, which found nothing to take and cost the most CPU of
/// intake on the database's side; what is stored still reads back whole.
#[tokio::test]
async fn image_columns_skip_compression_on_postgres_and_read_back_whole() {
    use diesel::sql_types::Text;
    use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};

    #[derive(QueryableByName)]
    struct Original {
        #[diesel(sql_type = diesel::sql_types::Binary)]
        bytes: Vec<u8>,
    }
    #[derive(QueryableByName)]
    struct Storage {
        #[diesel(sql_type = Text)]
        column: String,
        #[diesel(sql_type = Text)]
        storage: String,
    }

    let env = crate::helpers::TestEnv::new();
    if !env.database_url.starts_with("postgres") {
        // SQLite stores values as they are given.
        return;
    }
    let app = crate::helpers::spawn_app_with(env.clone(), None, |_| {}).await;
    // The offload job drops the staged original once the clone is in the cloud store. A file
    // where the store's directory was makes every upload fail, so the original stays staged.
    let cloud = env.cloud_dir();
    std::fs::remove_dir_all(&cloud).unwrap();
    std::fs::write(&cloud, b"not a directory").unwrap();
    let key = app.customer_key("Acme").await;
    let image = png(640, 480);
    let response = app.post_advert(&key, &advert_json(&image)).await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();

    let mut conn = PgConnection::establish(&env.database_url).unwrap();
    let mut columns: Vec<(String, String)> = diesel::sql_query(
        "SELECT c.relname || '.' || a.attname AS column, a.attstorage::text AS storage \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         WHERE c.relname IN ('creatives', 'advert_originals', 'advert_images', 'advert_variants') \
           AND c.relkind = 'r' AND a.atttypid = 'bytea'::regtype AND NOT a.attisdropped",
    )
    .load::<Storage>(&mut conn)
    .unwrap()
    .into_iter()
    .map(|s| (s.column, s.storage))
    .collect();
    columns.sort();
    assert_eq!(
        columns,
        [
            "advert_images.bytes",
            "advert_images.original",
            "advert_originals.bytes",
            "advert_variants.bytes",
            "creatives.bytes",
        ]
        .map(|c| (c.to_owned(), "e".to_owned())),
        "every image column is EXTERNAL (out of line, uncompressed)"
    );

    let stored: Vec<Original> = diesel::sql_query(format!(
        "SELECT bytes FROM advert_originals WHERE advert_id = {id}"
    ))
    .load(&mut conn)
    .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].bytes, image,
        "the original reads back byte for byte"
    );
    app.stop().await;
}

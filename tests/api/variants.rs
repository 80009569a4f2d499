//! Placement variants ("AutoGen creatives"), end to end: rendered after intake in the worker
//! pool, listed for the owner, served by placement.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestEnv, advert_json, empty_redis, eventually, file_part, random_suffix, redis_conn,
    spawn_app, spawn_app_with,
};
use reklama::domain::placement::Layout;

/// The standard catalogue with every placement a crop (the picture alone), as frontends that set
/// their own text configure it.
async fn spawn_crop_only_app() -> TestApp {
    spawn_app_with(TestEnv::new(), None, |s| {
        for p in &mut s.serving.placements {
            p.layout = Layout::Crop;
        }
    })
    .await
}

/// A photograph-like JPEG: smooth gradients with a detailed patch.
pub fn photo(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        if (width / 2..width / 2 + 80).contains(&x) && (height / 3..height / 3 + 80).contains(&y) {
            if (x / 3 + y / 3) % 2 == 0 {
                image::Rgb([230, 40, 40])
            } else {
                image::Rgb([20, 160, 60])
            }
        } else {
            image::Rgb([(x * 200 / width) as u8, (y * 200 / height) as u8, 140])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

async fn variants(app: &TestApp, key: &str, id: i64) -> Vec<Value> {
    let (status, body) = app
        .get_json(&format!("/api/v1/adverts/{id}/variants"), key)
        .await;
    assert_eq!(status, 200, "{body}");
    body["variants"].as_array().unwrap().clone()
}

pub async fn rendered(app: &TestApp, key: &str, id: i64) -> Vec<Value> {
    rendered_within(app, key, id, Duration::from_secs(30)).await
}

/// As [`rendered`], with room for a large upload's decoding, or several images' variants, on a
/// busy machine.
pub async fn rendered_within(app: &TestApp, key: &str, id: i64, limit: Duration) -> Vec<Value> {
    eventually(limit, "variants rendered", || async {
        let list = variants(app, key, id).await;
        list.iter()
            .all(|v| v["status"] != "pending")
            .then_some(list)
    })
    .await
}

pub async fn create(app: &TestApp, key: &str, title: &str, image: &[u8]) -> i64 {
    let mut body = advert_json(image);
    body["title"] = json!(title);
    let response = app.post_advert(key, &body).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn every_placement_gets_an_exact_size_variant_within_its_budget_or_a_reason() {
    let app = spawn_crop_only_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(
        &app,
        &key,
        "Summer in Sochi: seven nights by the sea",
        &photo(1200, 800),
    )
    .await;
    let list = rendered(&app, &key, id).await;
    let names: Vec<&str> = list
        .iter()
        .map(|v| v["placement"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "medium_rectangle",
            "large_rectangle",
            "leaderboard",
            "half_page",
            "mobile_banner",
            "square",
            "social_card"
        ]
    );
    for v in &list {
        let name = v["placement"].as_str().unwrap();
        match v["status"].as_str().unwrap() {
            "ready" => {
                let url = v["image_url"].as_str().unwrap();
                let response = app.client.get(url).send().await.unwrap();
                assert_eq!(response.status(), 200, "{name}");
                let mime = response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert!(
                    mime == "image/webp" || mime == "image/jpeg",
                    "{name}: {mime}"
                );
                let bytes = response.bytes().await.unwrap();
                assert!(bytes.len() <= 150_000, "{name}: {} bytes", bytes.len());
                assert_eq!(bytes.len() as u64, v["bytes"].as_u64().unwrap());
                let decoded = image::load_from_memory(&bytes).unwrap();
                assert_eq!(
                    (u64::from(decoded.width()), u64::from(decoded.height())),
                    (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap()),
                    "{name}"
                );
            }
            "unsuitable" => assert!(!v["reason"].as_str().unwrap().is_empty(), "{name}"),
            other => panic!("{name}: {other}"),
        }
    }
    let by = |name: &str| {
        list.iter()
            .find(|v| v["placement"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by("medium_rectangle")["status"], "ready");
    assert_eq!(
        (
            by("medium_rectangle")["width"].as_u64(),
            by("medium_rectangle")["height"].as_u64()
        ),
        (Some(300), Some(250))
    );
    // A 3:2 photo squeezed into an 8:1 leaderboard would lose most of it.
    assert_eq!(by("leaderboard")["status"], "unsuitable");
    assert!(
        by("leaderboard")["reason"]
            .as_str()
            .unwrap()
            .contains("keep only")
    );
    // Titles are cut to the placement's limit at a word, with an ellipsis.
    let title = by("medium_rectangle")["title"].as_str().unwrap().to_owned();
    assert_eq!(title, "Summer in Sochi: seven nights…");
    app.stop().await;
}

/// Every instance reads a placement card it has to load from Redis (in the batches new users'
/// reads go in) before the database: a card changed there is what each shows after its next
/// load (a reload at half the card's life).
#[tokio::test]
async fn instances_load_a_placement_card_from_redis_before_the_database() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = crate::serving::two_instances(&env, &prefix, |s| {
        s.serving.card_cache_ttl_secs = 2;
        for p in &mut s.serving.placements {
            p.layout = Layout::Crop;
        }
    })
    .await;
    let key = a.customer_key("Acme").await;
    let id = create(&a, &key, "Summer in Sochi", &photo(1200, 800)).await;
    rendered(&a, &key, id).await;
    let first_card = |app, user: String| async move {
        let query = format!("user_id={user}&placement=medium_rectangle");
        let (status, body) = TestApp::serve(app, &query).await;
        assert_eq!(status, 200);
        body["adverts"].as_array().unwrap().first().cloned()
    };
    // Both instances know the variant (their change polls are past it).
    for (app, name) in [(&a, "A"), (&b, "B")] {
        let card = eventually(Duration::from_secs(5), name, || {
            first_card(app, "u1".into())
        })
        .await;
        assert_eq!(card["advert_id"].as_i64(), Some(id));
        assert_eq!(card["title"], "Summer in Sochi");
    }
    // The card in Redis, marked: only a read of it can show the mark.
    let card_key = format!("{prefix}card:{id}:medium_rectangle");
    let mut conn = redis_conn().await;
    let held: Option<String> = redis::cmd("GET")
        .arg(&card_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut card: Value = serde_json::from_str(&held.expect("the card in Redis")).unwrap();
    card["creatives"][0]["title"] = json!("Read from Redis");
    let _: () = redis::cmd("SET")
        .arg(&card_key)
        .arg(card.to_string())
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
    for (app, name) in [(&a, "A"), (&b, "B")] {
        eventually(Duration::from_secs(10), name, || async {
            // A user of its own each time, under any frequency cap.
            let card = first_card(app, random_suffix()).await?;
            (card["title"] == "Read from Redis").then_some(())
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn serving_by_placement_returns_that_variant_and_skips_adverts_without_one() {
    let app = spawn_crop_only_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "Summer in Sochi", &photo(1200, 800)).await;
    rendered(&app, &key, id).await;
    // Every instance picks variants up with its change poll; wait for this one's.
    let card = eventually(Duration::from_secs(5), "variant served", || async {
        let (status, body) = app.serve("user_id=u1&placement=medium_rectangle").await;
        assert_eq!(status, 200);
        body["adverts"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(card["advert_id"].as_i64(), Some(id));
    assert_eq!(card["placement"], "medium_rectangle");
    assert_eq!(
        (card["width"].as_u64(), card["height"].as_u64()),
        (Some(300), Some(250))
    );
    assert_eq!(
        card["layout"], "crop",
        "the frontend sets the words beside it"
    );
    let image_url = card["image_url"].as_str().unwrap();
    assert!(
        image_url.contains(&format!("/media/{id}/medium_rectangle/")),
        "{image_url}"
    );
    let decoded = image::load_from_memory(
        &app.client
            .get(image_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!((decoded.width(), decoded.height()), (300, 250));
    // The same placement by size.
    let (_, by_size) = app.serve("user_id=u2&size=300x250").await;
    assert_eq!(by_size["adverts"][0]["placement"], "medium_rectangle");
    // Unsuitable for the leaderboard: not eligible there.
    let (_, none) = app.serve("user_id=u3&placement=leaderboard").await;
    assert_eq!(none["adverts"], json!([]));
    // Without a placement, the plain card as before.
    let (_, plain) = app.serve("user_id=u4").await;
    assert!(plain["adverts"][0].get("placement").is_none());
    assert!(plain["adverts"][0].get("layout").is_none());
    // Unknown placements are refused, listing the catalogue.
    let (status, error) = app.serve("user_id=u5&placement=skyscraper").await;
    assert_eq!(status, 422);
    assert_eq!(error["error"]["fields"][0]["field"], "placement");
    assert_eq!(
        error["error"]["fields"][0]["allowed"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let (status, _) = app.serve("user_id=u5&size=1x1").await;
    assert_eq!(status, 422);
    app.stop().await;
}

#[tokio::test]
async fn a_small_image_is_unsuitable_for_large_placements_and_never_served_there() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "Tiny", &photo(320, 240)).await;
    let list = rendered(&app, &key, id).await;
    let social = list
        .iter()
        .find(|v| v["placement"] == "social_card")
        .unwrap();
    assert_eq!(social["status"], "unsuitable");
    assert!(
        social["reason"].as_str().unwrap().contains("too small"),
        "{social}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, body) = app.serve("user_id=u1&placement=social_card").await;
    assert_eq!(body["adverts"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn variants_are_the_owners_only_and_a_rebuild_renders_them_again() {
    let app = spawn_app().await;
    let alice = app.customer_key("Alice").await;
    let bob = app.customer_key("Bob").await;
    let id = create(&app, &alice, "Summer in Sochi", &photo(800, 600)).await;
    rendered(&app, &alice, id).await;
    let (status, _) = app
        .get_json(&format!("/api/v1/adverts/{id}/variants"), &bob)
        .await;
    assert_eq!(status, 404);
    let before = app
        .handles
        .jobs
        .stats()
        .succeeded
        .load(std::sync::atomic::Ordering::SeqCst);
    let queued = reklama::modules::intake::queue_variants_rebuild(&app.handles.db, 3)
        .await
        .unwrap();
    assert_eq!(queued, 1);
    app.handles.jobs.enqueuer().waker.wake();
    eventually(Duration::from_secs(30), "rebuild job done", || async {
        (app.handles
            .jobs
            .stats()
            .succeeded
            .load(std::sync::atomic::Ordering::SeqCst)
            > before)
            .then_some(())
    })
    .await;
    assert!(
        rendered(&app, &alice, id)
            .await
            .iter()
            .any(|v| v["status"] == "ready")
    );
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_advert_page_previews_every_placement_at_its_real_size() {
    let app = spawn_crop_only_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "Summer in Sochi", &photo(1200, 800)).await;
    rendered(&app, &key, id).await;
    let html = app
        .dashboard_page(&key, &format!("/dashboard/adverts/{id}"))
        .await;
    let preview = html
        .split("<img class=\"variant\"")
        .nth(1)
        .map(|rest| &rest[..rest.find('>').unwrap()])
        .unwrap_or_else(|| panic!("no preview in {html}"));
    assert!(
        preview.contains(&format!("src=\"/media/{id}/medium_rectangle/")),
        "{preview}"
    );
    assert!(
        preview.contains("width=\"300\"") && preview.contains("height=\"250\""),
        "{preview}"
    );
    assert_eq!(
        html.matches("<img class=\"variant\"").count(),
        5,
        "five placements are ready"
    );
    assert!(
        html.contains("Not shown here: fitting 728×90 would keep only"),
        "the leaderboard says why"
    );
    app.stop().await;
}

fn by_name(list: &[Value], name: &str) -> Value {
    list.iter()
        .find(|v| v["placement"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list:?}"))
        .clone()
}

/// A portrait picture in blues, unlike `photo`'s warm landscape.
fn blue_portrait(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        if (x / 4 + y / 4) % 2 == 0 && (height / 2..height / 2 + 60).contains(&y) {
            image::Rgb([250, 250, 250])
        } else {
            image::Rgb([10, (y * 120 / height) as u8, 200])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Mean (red, blue) of an image's pixels.
fn red_and_blue(bytes: &[u8]) -> (u64, u64) {
    let rgb = image::load_from_memory(bytes).unwrap().to_rgb8();
    let n = u64::from(rgb.width() * rgb.height());
    let (r, b) = rgb.pixels().fold((0u64, 0u64), |(r, b), p| {
        (r + u64::from(p.0[0]), b + u64::from(p.0[2]))
    });
    (r / n, b / n)
}

#[tokio::test]
async fn a_new_image_replaces_the_creative_and_renders_every_variant_again() {
    let app = spawn_crop_only_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "Summer in Sochi", &photo(900, 600)).await;
    let before = rendered(&app, &key, id).await;
    let old_variant = by_name(&before, "medium_rectangle");
    assert_eq!(old_variant["status"], "ready");
    let old_variant_url = old_variant["image_url"].as_str().unwrap().to_owned();
    let (_, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    let old_image_url = advert["image_url"].as_str().unwrap().to_owned();
    // Both old images are in this instance's memory before the change.
    for url in [&old_image_url, &old_variant_url] {
        assert_eq!(app.client.get(url).send().await.unwrap().status(), 200);
    }

    let upload = blue_portrait(400, 600);
    let (status, changed) = app
        .patch_advert(
            &key,
            id,
            &json!({ "image_base64": crate::helpers::b64(&upload) }),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    // The creative fits 600×600: a 400×600 portrait stays as it is.
    assert_eq!(
        (
            changed["image_width"].as_u64(),
            changed["image_height"].as_u64()
        ),
        (Some(400), Some(600))
    );
    let new_image_url = changed["image_url"].as_str().unwrap().to_owned();
    assert_ne!(new_image_url, old_image_url);
    assert_eq!(changed["title"], "Summer in Sochi");
    assert_eq!(changed["offload_status"], "pending");
    // Straight after the change: every variant waits for the new image, and the old images are
    // gone (their URLs name content the advert no longer has).
    let pending = variants(&app, &key, id).await;
    assert!(
        pending.iter().all(|v| v["status"] == "pending"),
        "{pending:?}"
    );
    for url in [&old_image_url, &old_variant_url] {
        assert_eq!(
            app.client.get(url).send().await.unwrap().status(),
            404,
            "{url}"
        );
    }
    let creative = app.client.get(&new_image_url).send().await.unwrap();
    assert_eq!(creative.status(), 200);
    let (red, blue) = red_and_blue(&creative.bytes().await.unwrap());
    assert!(
        blue > red + 100,
        "the new creative is the blue picture: {red} {blue}"
    );
    // No placement serves the old picture meanwhile.
    let (_, served) = app.serve("user_id=u1&placement=medium_rectangle").await;
    assert!(
        served["adverts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|card| card["image_url"] != old_variant_url.as_str()),
        "{served}"
    );

    // Then the variants of the new image: another hash, and the crop of a portrait picture.
    let after = rendered(&app, &key, id).await;
    let new_variant = by_name(&after, "medium_rectangle");
    assert_eq!(new_variant["status"], "ready", "{after:?}");
    let new_variant_url = new_variant["image_url"].as_str().unwrap();
    assert_ne!(new_variant_url, old_variant_url);
    let bytes = app
        .client
        .get(new_variant_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (300, 250));
    let (red, blue) = red_and_blue(&bytes);
    assert!(
        blue > red + 100,
        "the variant shows the new picture: {red} {blue}"
    );
    // A 2:3 portrait suits the half page (1:2), and no banner.
    assert_eq!(by_name(&after, "half_page")["status"], "ready");
    assert_eq!(by_name(&after, "leaderboard")["status"], "unsuitable");
    let card = eventually(Duration::from_secs(5), "new variant served", || async {
        let (_, body) = app.serve("user_id=u2&placement=medium_rectangle").await;
        body["adverts"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(card["image_url"], new_variant_url);

    // The cloud copy follows: the new original beside a clone that names the new creative.
    let cloud = app.env.cloud_dir().join("adverts");
    let clone = eventually(Duration::from_secs(20), "cloud copy updated", || async {
        let json = std::fs::read(cloud.join(format!("{id}.json"))).ok()?;
        let clone: Value = serde_json::from_slice(&json).ok()?;
        (clone["creative"]["source_width"] == 400 && clone["offload_status"] == "done")
            .then_some(clone)
    })
    .await;
    assert_eq!(clone["creative"]["source_mime"], "image/png");
    assert_eq!(
        std::fs::read(cloud.join(format!("{id}.png"))).unwrap(),
        upload
    );
    let (_, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    assert_eq!(advert["offload_status"], "done");
    app.stop().await;
}

#[tokio::test]
async fn a_new_title_renders_new_short_titles_and_serving_follows() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "Summer in Sochi", &photo(900, 600)).await;
    let before = rendered(&app, &key, id).await;
    assert_eq!(
        by_name(&before, "medium_rectangle")["title"],
        "Summer in Sochi"
    );
    eventually(Duration::from_secs(5), "variant served", || async {
        let (_, body) = app.serve("user_id=u1&placement=medium_rectangle").await;
        (body["adverts"][0]["title"] == "Summer in Sochi").then_some(())
    })
    .await;

    let title = "Winter in Sochi: ski passes, a spa and flights included";
    let (status, changed) = app.patch_advert(&key, id, &json!({ "title": title })).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["title"], title);
    // At once: the plain card has the new title, and no placement serves the old one.
    let (_, plain) = app.serve("user_id=u2").await;
    assert_eq!(plain["adverts"][0]["title"], title);
    let (_, placed) = app.serve("user_id=u3&placement=medium_rectangle").await;
    assert!(
        placed["adverts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|card| card["title"] != "Summer in Sochi"),
        "{placed}"
    );
    assert!(
        variants(&app, &key, id)
            .await
            .iter()
            .all(|v| v["status"] == "pending")
    );

    let after = rendered(&app, &key, id).await;
    let short = by_name(&after, "medium_rectangle")["title"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        short.starts_with("Winter in Sochi: ski")
            && short.ends_with('…')
            && short.chars().count() <= 30,
        "{short}"
    );
    // The image did not change, so neither did the variant's picture.
    assert_eq!(
        by_name(&after, "medium_rectangle")["image_url"],
        by_name(&before, "medium_rectangle")["image_url"]
    );
    let card = eventually(Duration::from_secs(5), "new title served", || async {
        let (_, body) = app.serve("user_id=u4&placement=medium_rectangle").await;
        body["adverts"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(card["title"], short.as_str());
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_new_image_or_title_is_refused_naming_the_field_and_changes_nothing() {
    let app = crate::helpers::spawn_app_with(crate::helpers::TestEnv::new(), None, |s| {
        s.server.max_body_bytes = 200_000;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "Summer in Sochi", &photo(300, 200)).await;
    let (_, created) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    let mut truncated = blue_portrait(40, 60);
    truncated.truncate(truncated.len() / 2);
    for (body, field, status) in [
        (
            json!({ "title": "x".repeat(91), "text": "New words" }),
            "title",
            422,
        ),
        (
            json!({ "image_base64": crate::helpers::b64(&truncated) }),
            "image",
            422,
        ),
        (json!({ "image_base64": "%%%" }), "image_base64", 422),
        (
            json!({ "image_base64": crate::helpers::b64(b"GIF87a") }),
            "image",
            422,
        ),
        (
            json!({ "image_base64": crate::helpers::b64(b"plain text, not an image") }),
            "image",
            415,
        ),
    ] {
        let (got, error) = app.patch_advert(&key, id, &body).await;
        assert_eq!(got, status, "{error}");
        assert_eq!(error["error"]["fields"][0]["field"], field, "{error}");
    }
    // Past the body limit, and not JSON: clear 4xx answers in the error format.
    let big = json!({ "image_base64": "A".repeat(300_000) });
    let (status, error) = app.patch_advert(&key, id, &big).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/adverts/{id}")))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "malformed_body");
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/adverts/{id}")))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("title=New")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    // Another customer's advert is not found, with or without an image to process.
    let other = app.customer_key("Globex").await;
    for body in [
        json!({ "title": "Mine now" }),
        json!({ "image_base64": crate::helpers::b64(&blue_portrait(40, 60)) }),
    ] {
        let (status, error) = app.patch_advert(&other, id, &body).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
    }
    let (_, after) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    for field in ["title", "text", "image_url", "image_width", "updated_at"] {
        assert_eq!(after[field], created[field], "{field}");
    }
    app.stop().await;
}

/// Something like a photograph as a JPEG: sky, sea and sand with a gentle texture, and a sun.
fn photo_like(width: u32, height: u32) -> Vec<u8> {
    let (cx, cy, r) = (width / 3, height / 3, width.min(height) / 8);
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        // A coarse texture: detail without the megabytes sensor noise costs a JPEG.
        let noise = ((x / 16 * 7 + y / 16 * 13) % 8) as u8;
        let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
        let base = if dx * dx + dy * dy < r * r {
            [250, 200, 60]
        } else if y < height / 2 {
            [100, 150 + (y * 80 / height) as u8, 230]
        } else if y < height * 3 / 4 {
            [30, 90, 160]
        } else {
            [220, 200, 150]
        };
        image::Rgb(base.map(|c| c.saturating_add(noise)))
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

async fn download(app: &TestApp, url: &str) -> image::RgbImage {
    let response = app.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    image::load_from_memory(&response.bytes().await.unwrap())
        .unwrap()
        .to_rgb8()
}

/// WCAG contrast of two sRGB colours.
fn contrast(a: image::Rgb<u8>, b: image::Rgb<u8>) -> f64 {
    let lum = |c: image::Rgb<u8>| {
        let lin = |v: u8| {
            let v = f64::from(v) / 255.0;
            if v <= 0.04045 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c.0[0]) + 0.7152 * lin(c.0[1]) + 0.0722 * lin(c.0[2])
    };
    let (x, y) = (lum(a), lum(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

/// In the right half of a wide composed creative (the panel): the panel's colour (the most common
/// pixel) and how many pixels contrast with it at least 4.5:1.
fn panel_contrast(img: &image::RgbImage) -> (usize, f64) {
    let mut counts = std::collections::HashMap::new();
    let (w, h) = img.dimensions();
    for y in 0..h {
        for x in w * 11 / 20..w {
            *counts.entry(img.get_pixel(x, y).0).or_insert(0u32) += 1;
        }
    }
    let panel = image::Rgb(counts.into_iter().max_by_key(|(_, n)| *n).unwrap().0);
    let mut readable = 0;
    let mut best = 1.0_f64;
    for y in 0..h {
        for x in w * 11 / 20..w {
            let c = contrast(*img.get_pixel(x, y), panel);
            best = best.max(c);
            readable += usize::from(c >= 4.5);
        }
    }
    (readable, best)
}

#[tokio::test]
async fn a_landscape_and_a_portrait_photo_fill_all_seven_placements() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    for (w, h) in [(4000u32, 2250u32), (2250, 4000)] {
        let id = create(&app, &key, "Summer in Sochi", &photo_like(w, h)).await;
        let list = rendered_within(&app, &key, id, Duration::from_secs(180)).await;
        assert_eq!(list.len(), 7);
        for v in &list {
            let name = v["placement"].as_str().unwrap();
            assert_eq!(v["status"], "ready", "{w}×{h} {name}: {v}");
            let expected = if ["leaderboard", "half_page", "mobile_banner"].contains(&name) {
                "composed"
            } else {
                "crop"
            };
            assert_eq!(v["layout"], expected, "{name}");
            let crop = &v["crop"];
            let (cx, cy, cw, ch) = (
                crop["x"].as_u64().unwrap(),
                crop["y"].as_u64().unwrap(),
                crop["width"].as_u64().unwrap(),
                crop["height"].as_u64().unwrap(),
            );
            // In the uploaded image's pixels.
            assert!(cw > 0 && ch > 0, "{name}: {crop}");
            assert!(
                cx + cw <= u64::from(w) && cy + ch <= u64::from(h),
                "{name}: {crop}"
            );
            let url = v["image_url"].as_str().unwrap();
            let response = app.client.get(url).send().await.unwrap();
            let mime = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(mime == "image/webp" || mime == "image/jpeg", "{mime}");
            let bytes = response.bytes().await.unwrap();
            assert!(bytes.len() <= 150_000, "{name}: {} bytes", bytes.len());
            let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
            assert_eq!(
                (u64::from(img.width()), u64::from(img.height())),
                (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap()),
                "{name}"
            );
            if name == "leaderboard" || name == "mobile_banner" {
                let (readable, best) = panel_contrast(&img);
                assert!(
                    readable >= 20 && best >= 4.5,
                    "{name}: {readable} px, best {best:.2}"
                );
            }
        }
        // The social card (1.91:1) is wider than either photo: its crop is the full width.
        let social = by_name(&list, "social_card");
        assert_eq!(social["crop"]["width"].as_u64(), Some(u64::from(w)));
        assert_eq!(social["crop"]["x"].as_u64(), Some(0));
        // Served for the leaderboard, the card says its image holds the words.
        let card = eventually(Duration::from_secs(5), "leaderboard served", || async {
            let (_, body) = app
                .serve(&format!("user_id=lb-{w}&placement=leaderboard&count=10"))
                .await;
            body["adverts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["advert_id"].as_i64() == Some(id))
                .cloned()
        })
        .await;
        assert_eq!(card["layout"], "composed");
    }
    app.stop().await;
}

/// A calm ground with one detailed square.
fn square_scene(width: u32, height: u32, at: (u32, u32), side: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        if (at.0..at.0 + side).contains(&x) && (at.1..at.1 + side).contains(&y) {
            if (x / 4 + y / 4) % 2 == 0 {
                image::Rgb([220, 30, 40])
            } else {
                image::Rgb([30, 200, 60])
            }
        } else {
            let shade = 120 + (y * 40 / height) as u8;
            image::Rgb([shade, shade, shade + 8])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn every_ready_variant_shows_the_one_detailed_square_of_the_image() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let side = 160u64;
    // Near the right edge at mid-height (where a leaderboard crop used to find a bare strip),
    // and in the top-left corner.
    for at in [(1400u32, 220u32), (30, 20)] {
        let id = create(&app, &key, "Square", &square_scene(1600, 600, at, 160)).await;
        let list = rendered(&app, &key, id).await;
        for v in &list {
            let name = v["placement"].as_str().unwrap();
            assert_eq!(v["status"], "ready", "{name}: {v}");
            let c = &v["crop"];
            let (x, y, w, h) = (
                c["x"].as_u64().unwrap(),
                c["y"].as_u64().unwrap(),
                c["width"].as_u64().unwrap(),
                c["height"].as_u64().unwrap(),
            );
            let (sx, sy) = (u64::from(at.0), u64::from(at.1));
            let ow = (x + w).min(sx + side).saturating_sub(x.max(sx));
            let oh = (y + h).min(sy + side).saturating_sub(y.max(sy));
            assert!(
                ow * oh * 10 >= side * side * 8,
                "{name} shows {c} of the square at {at:?}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_call_to_action_is_stored_checked_changed_and_rendered() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let mut body = advert_json(&photo(1200, 800));
    body["cta"] = json!("  Book now ");
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    assert_eq!(advert["cta"], "Book now");
    let id = advert["id"].as_i64().unwrap();
    let (_, read) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    assert_eq!(read["cta"], "Book now");
    let before = rendered(&app, &key, id).await;

    // Checked like a title: too long, or on two lines, is a 422 naming the field.
    body["cta"] = json!("x".repeat(25));
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["fields"][0]["field"], "cta");
    assert_eq!(error["error"]["fields"][0]["code"], "too_long");
    let (status, error) = app
        .patch_advert(&key, id, &json!({"cta": "two\nlines"}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(error["error"]["fields"][0]["field"], "cta");
    assert_eq!(error["error"]["fields"][0]["code"], "control_character");

    // A new call to action renders the composed creatives again; the crops keep their pictures.
    let (status, changed) = app
        .patch_advert(&key, id, &json!({"cta": "Забронировать"}))
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["cta"], "Забронировать");
    let after = rendered(&app, &key, id).await;
    assert_ne!(
        by_name(&after, "leaderboard")["image_url"],
        by_name(&before, "leaderboard")["image_url"]
    );
    assert_eq!(
        by_name(&after, "medium_rectangle")["image_url"],
        by_name(&before, "medium_rectangle")["image_url"]
    );
    // `null` goes back to the language's default.
    let (status, cleared) = app.patch_advert(&key, id, &json!({"cta": null})).await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["cta"], Value::Null);

    // Multipart takes it as a text part.
    let form = reqwest::multipart::Form::new()
        .text("title", "Летний тур")
        .text("text", "Семь ночей у моря")
        .text("genre", "travel")
        .text("target_url", "https://example.com/tour")
        .text("cta", "Купить тур")
        .part(
            "image",
            file_part(photo(600, 400), "tour.jpg", "image/jpeg"),
        );
    let response = app.post_advert_form(&key, form).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    assert_eq!(advert["cta"], "Купить тур");
    let id = advert["id"].as_i64().unwrap();
    let list = rendered(&app, &key, id).await;
    let banner = download(
        &app,
        by_name(&list, "leaderboard")["image_url"].as_str().unwrap(),
    )
    .await;
    assert_eq!(banner.dimensions(), (728, 90));
    app.stop().await;
}

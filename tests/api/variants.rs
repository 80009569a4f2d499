//! Placement variants ("AutoGen creatives"), end to end: rendered after intake in the worker
//! pool, listed for the owner, served by placement.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, advert_json, eventually, spawn_app};

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
    eventually(Duration::from_secs(30), "variants rendered", || async {
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
    let app = spawn_app().await;
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

#[tokio::test]
async fn serving_by_placement_returns_that_variant_and_skips_adverts_without_one() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "Summer in Sochi", &photo(1200, 800)).await;
    rendered(&app, &key, id).await;
    // Every instance picks variants up with its change poll; wait for this one's.
    let card = eventually(Duration::from_secs(5), "variant served", || async {
        let (status, body) = serve(&app, "user_id=u1&placement=medium_rectangle").await;
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
    let (_, by_size) = serve(&app, "user_id=u2&size=300x250").await;
    assert_eq!(by_size["adverts"][0]["placement"], "medium_rectangle");
    // Unsuitable for the leaderboard: not eligible there.
    let (_, none) = serve(&app, "user_id=u3&placement=leaderboard").await;
    assert_eq!(none["adverts"], json!([]));
    // Without a placement, the plain card as before.
    let (_, plain) = serve(&app, "user_id=u4").await;
    assert!(plain["adverts"][0].get("placement").is_none());
    // Unknown placements are refused, listing the catalogue.
    let (status, error) = serve(&app, "user_id=u5&placement=skyscraper").await;
    assert_eq!(status, 422);
    assert_eq!(error["error"]["fields"][0]["field"], "placement");
    assert_eq!(
        error["error"]["fields"][0]["allowed"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let (status, _) = serve(&app, "user_id=u5&size=1x1").await;
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
    let (_, body) = serve(&app, "user_id=u1&placement=social_card").await;
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
    app.handles.jobs.waker().wake();
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

async fn serve(app: &TestApp, query: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(&format!("/api/v1/serve?{query}")))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_dashboard_advert_page_previews_every_placement_at_its_real_size() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "Summer in Sochi", &photo(1200, 800)).await;
    rendered(&app, &key, id).await;
    let login = app
        .client
        .post(app.url("/login"))
        .form(&[("api_key", key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = app
        .client
        .get(app.url(&format!("/dashboard/adverts/{id}")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
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

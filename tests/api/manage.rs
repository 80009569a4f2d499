//! Managing adverts: PATCH (status, weight, schedule, caps; content changes are in
//! variants.rs, with what they do to placements) and the soft DELETE.

use diesel::prelude::*;
use reklama::platform::db::DbError;
use reklama::platform::db::schema::adverts;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{BROWSER, TestApp, field_codes, pairs, spawn_app};

async fn patch_raw(app: &TestApp, key: &str, id: i64, content_type: &str, body: &str) -> u16 {
    app.client
        .patch(app.url(&format!("/api/v1/adverts/{id}")))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn get(app: &TestApp, key: &str, id: i64) -> (u16, Value) {
    app.get_json(&format!("/api/v1/adverts/{id}"), key).await
}

/// What management changes, plus `updated_at`. (The offload job changes `offload_status` on its
/// own schedule, so whole adverts are not compared.)
fn managed(advert: &Value) -> Value {
    let fields = [
        "id",
        "title",
        "text",
        "image_url",
        "status",
        "weight",
        "starts_at",
        "ends_at",
        "max_impressions",
        "max_clicks",
        "daily_max_impressions",
        "updated_at",
    ];
    assert!(advert["id"].is_i64(), "not an advert: {advert}");
    fields
        .iter()
        .map(|f| ((*f).to_owned(), advert[*f].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn updated_at(advert: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(advert["updated_at"].as_str().unwrap(), &Rfc3339).unwrap()
}

/// The tracked link's path on this instance.
fn link_path(app: &TestApp, advert: &Value) -> String {
    advert["tracked_url"]
        .as_str()
        .unwrap()
        .strip_prefix(&app.address)
        .unwrap()
        .to_owned()
}

/// The row as stored, whatever its status: (status, updated_at in ms).
async fn stored_row(app: &TestApp, id: i64) -> (String, i64) {
    app.handles
        .db
        .run(move |conn| {
            adverts::table
                .find(id)
                .select((adverts::status, adverts::updated_at))
                .first::<(String, i64)>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
}

async fn new_advert(app: &TestApp, key: &str) -> (i64, Value) {
    let advert = app.create_advert(key).await;
    (advert["id"].as_i64().unwrap(), advert)
}

#[tokio::test]
async fn pausing_and_resuming_show_in_get_and_move_updated_at_forward() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, created) = new_advert(&app, &key).await;

    let (status, paused) = app
        .patch_advert(&key, id, &json!({ "status": "paused" }))
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "paused");
    assert!(updated_at(&paused) > updated_at(&created));
    let (status, shown) = get(&app, &key, id).await;
    assert_eq!(status, 200);
    assert_eq!(managed(&shown), managed(&paused));

    let (status, resumed) = app
        .patch_advert(&key, id, &json!({ "status": "active" }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(resumed["status"], "active");
    assert!(updated_at(&resumed) > updated_at(&paused));
    assert_eq!(get(&app, &key, id).await.1["status"], "active");
    app.stop().await;
}

#[tokio::test]
async fn a_paused_advert_link_is_gone_at_once_and_redirects_again_right_after_resume() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, advert) = new_advert(&app, &key).await;
    let path = link_path(&app, &advert);
    // Clicked while active, so the link is in this instance's cache.
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);

    assert_eq!(
        app.patch_advert(&key, id, &json!({ "status": "paused" }))
            .await
            .0,
        200
    );
    assert_eq!(app.click(&path, BROWSER).await.status(), 410);

    assert_eq!(
        app.patch_advert(&key, id, &json!({ "status": "active" }))
            .await
            .0,
        200
    );
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    app.stop().await;
}

#[tokio::test]
async fn weight_schedule_and_caps_are_set_and_cleared_with_null() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, _) = new_advert(&app, &key).await;

    let (status, set) = app
        .patch_advert(
            &key,
            id,
            &json!({
                "weight": 250,
                "starts_at": "2027-01-01T00:00:00Z",
                "ends_at": "2027-02-01T12:30:00+03:00",
                "max_impressions": 100000,
                "max_clicks": "500",
                "daily_max_impressions": 2000,
            }),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let (_, shown) = get(&app, &key, id).await;
    assert_eq!(managed(&shown), managed(&set));
    assert_eq!(shown["weight"], 250);
    assert_eq!(shown["starts_at"], "2027-01-01T00:00:00Z");
    assert_eq!(shown["ends_at"], "2027-02-01T09:30:00Z");
    assert_eq!(shown["max_impressions"], 100000);
    assert_eq!(shown["max_clicks"], 500);
    assert_eq!(shown["daily_max_impressions"], 2000);
    assert_eq!(shown["status"], "active");

    // A patch touches only the fields it names.
    let (status, one) = app
        .patch_advert(&key, id, &json!({ "max_clicks": 7 }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["max_clicks"], 7);
    assert_eq!(one["max_impressions"], 100000);
    assert_eq!(one["weight"], 250);

    let (status, cleared) = app
        .patch_advert(
            &key,
            id,
            &json!({
                "starts_at": null,
                "ends_at": null,
                "max_impressions": null,
                "max_clicks": null,
                "daily_max_impressions": null,
            }),
        )
        .await;
    assert_eq!(status, 200, "{cleared}");
    let (_, shown) = get(&app, &key, id).await;
    assert_eq!(managed(&shown), managed(&cleared));
    for field in [
        "starts_at",
        "ends_at",
        "max_impressions",
        "max_clicks",
        "daily_max_impressions",
    ] {
        assert_eq!(shown[field], Value::Null, "{field}");
    }
    assert_eq!(shown["weight"], 250);
    app.stop().await;
}

#[tokio::test]
async fn an_empty_patch_changes_nothing_and_answers_the_advert() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, created) = new_advert(&app, &key).await;
    let (status, same) = app.patch_advert(&key, id, &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(managed(&same), managed(&created));
    assert_eq!(managed(&get(&app, &key, id).await.1), managed(&created));
    app.stop().await;
}

#[tokio::test]
async fn status_may_only_be_set_to_active_or_paused() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, _) = new_advert(&app, &key).await;
    for (value, code) in [
        (json!("deleted"), "invalid"),
        (json!("archived"), "invalid"),
        (json!(""), "invalid"),
        (json!(null), "invalid_type"),
        (json!(1), "invalid_type"),
    ] {
        let (status, error) = app
            .patch_advert(&key, id, &json!({ "status": value }))
            .await;
        assert_eq!(status, 422, "{value}");
        assert_eq!(field_codes(&error), pairs(&[("status", code)]), "{value}");
    }
    let (_, error) = app
        .patch_advert(&key, id, &json!({ "status": "archived" }))
        .await;
    assert_eq!(
        error["error"]["fields"][0]["allowed"],
        json!(["active", "paused"])
    );
    assert_eq!(get(&app, &key, id).await.1["status"], "active");
    app.stop().await;
}

#[tokio::test]
async fn weight_must_be_a_whole_number_from_1_to_1000() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, _) = new_advert(&app, &key).await;
    for (value, code) in [
        (json!(0), "out_of_range"),
        (json!(1001), "out_of_range"),
        (json!(-5), "out_of_range"),
        (json!(2.5), "out_of_range"),
        (json!(null), "invalid_type"),
        (json!(true), "invalid_type"),
    ] {
        let (status, error) = app
            .patch_advert(&key, id, &json!({ "weight": value }))
            .await;
        assert_eq!(status, 422, "{value}");
        assert_eq!(field_codes(&error), pairs(&[("weight", code)]), "{value}");
    }
    for weight in [1, 1000] {
        let (status, advert) = app
            .patch_advert(&key, id, &json!({ "weight": weight }))
            .await;
        assert_eq!((status, advert["weight"].as_u64()), (200, Some(weight)));
    }
    app.stop().await;
}

#[tokio::test]
async fn ends_at_must_follow_starts_at_including_the_stored_one() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, _) = new_advert(&app, &key).await;
    let (status, scheduled) = app
        .patch_advert(
            &key,
            id,
            &json!({ "starts_at": "2027-03-01T00:00:00Z", "ends_at": "2027-04-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(status, 200);
    let before_start = pairs(&[("ends_at", "before_start")]);

    // ends_at before (or at) the stored starts_at.
    for ends_at in ["2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"] {
        let (status, error) = app
            .patch_advert(&key, id, &json!({ "ends_at": ends_at }))
            .await;
        assert_eq!((status, field_codes(&error)), (422, before_start.clone()));
    }
    // starts_at moved past the stored ends_at: reported on ends_at.
    let (status, error) = app
        .patch_advert(
            &key,
            id,
            &json!({ "starts_at": "2027-05-01T00:00:00Z", "weight": 3 }),
        )
        .await;
    assert_eq!((status, field_codes(&error)), (422, before_start.clone()));
    // Both in the patch, inconsistent together.
    let (status, error) = app
        .patch_advert(
            &key,
            id,
            &json!({ "starts_at": "2027-06-02T00:00:00Z", "ends_at": "2027-06-01T00:00:00Z" }),
        )
        .await;
    assert_eq!((status, field_codes(&error)), (422, before_start));
    // A refused change leaves everything as it was, updated_at and the other fields included.
    assert_eq!(managed(&get(&app, &key, id).await.1), managed(&scheduled));

    // Consistent with the stored values: fine; clearing starts_at lifts the constraint.
    let (status, _) = app
        .patch_advert(&key, id, &json!({ "ends_at": "2027-03-02T00:00:00Z" }))
        .await;
    assert_eq!(status, 200);
    let (status, advert) = app
        .patch_advert(
            &key,
            id,
            &json!({ "starts_at": null, "ends_at": "2027-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(status, 200, "{advert}");
    assert_eq!(advert["starts_at"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn unknown_fields_and_wrong_types_are_422_naming_the_field() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, created) = new_advert(&app, &key).await;
    for (body, field, code) in [
        (json!({ "colour": "red" }), "colour", "unknown_field"),
        (json!({ "genre": "food" }), "genre", "unknown_field"),
        (json!({ "title": "" }), "title", "required"),
        (
            json!({ "title": "two\nlines" }),
            "title",
            "control_character",
        ),
        (json!({ "text": "x".repeat(501) }), "text", "too_long"),
        (json!({ "title": null }), "title", "invalid_type"),
        (json!({ "image_base64": 5 }), "image_base64", "invalid_type"),
        (
            json!({ "image_base64": "not base64!" }),
            "image_base64",
            "invalid_base64",
        ),
        (json!({ "id": 5 }), "id", "unknown_field"),
        (json!({ "max_clicks": [1] }), "max_clicks", "invalid_type"),
        (
            json!({ "starts_at": 1_700_000_000 }),
            "starts_at",
            "invalid_type",
        ),
        (
            json!({ "starts_at": "tomorrow" }),
            "starts_at",
            "invalid_time",
        ),
        (
            json!({ "daily_max_impressions": 0 }),
            "daily_max_impressions",
            "out_of_range",
        ),
    ] {
        let (status, error) = app.patch_advert(&key, id, &body).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(error["error"]["code"], "validation_failed");
        assert_eq!(field_codes(&error), pairs(&[(field, code)]), "{body}");
    }
    assert_eq!(managed(&get(&app, &key, id).await.1), managed(&created));
    app.stop().await;
}

#[tokio::test]
async fn several_bad_fields_are_reported_together_and_nothing_changes() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, created) = new_advert(&app, &key).await;
    let (status, error) = app
        .patch_advert(
            &key,
            id,
            &json!({
                "status": "archived",
                "weight": 0,
                "starts_at": "soon",
                "max_clicks": true,
                "colour": "red",
                "max_impressions": 10,
            }),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        field_codes(&error),
        pairs(&[
            ("status", "invalid"),
            ("weight", "out_of_range"),
            ("starts_at", "invalid_time"),
            ("max_clicks", "invalid_type"),
            ("colour", "unknown_field"),
        ])
    );
    assert_eq!(error["error"]["message"], "5 fields are invalid");
    assert_eq!(managed(&get(&app, &key, id).await.1), managed(&created));
    app.stop().await;
}

#[tokio::test]
async fn only_a_json_object_body_is_read() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, created) = new_advert(&app, &key).await;
    let body = r#"{"status":"paused"}"#;
    assert_eq!(patch_raw(&app, &key, id, "text/plain", body).await, 415);
    assert_eq!(
        patch_raw(
            &app,
            &key,
            id,
            "application/x-www-form-urlencoded",
            "status=paused"
        )
        .await,
        415
    );
    assert_eq!(
        patch_raw(&app, &key, id, "application/json", "{not json").await,
        400
    );
    assert_eq!(patch_raw(&app, &key, id, "application/json", "").await, 400);
    assert_eq!(
        patch_raw(&app, &key, id, "application/json", "[1]").await,
        400
    );
    assert_eq!(
        patch_raw(&app, &key, id, "application/json", "null").await,
        400
    );
    // A body far larger than a small change is still read (a change may carry a new image);
    // past `server.max_body_bytes` it is 413 (tests/api/hostile.rs).
    let large = format!(r#"{{"colour":"{}"}}"#, "x".repeat(64 * 1024));
    assert_eq!(
        patch_raw(&app, &key, id, "application/json", &large).await,
        422
    );
    assert_eq!(managed(&get(&app, &key, id).await.1), managed(&created));
    assert_eq!(
        patch_raw(&app, &key, id, "application/json; charset=utf-8", body).await,
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn another_customers_advert_can_be_neither_patched_nor_deleted() {
    let app = spawn_app().await;
    let alice = app.customer_key("Alice").await;
    let bob = app.customer_key("Bob").await;
    let (id, created) = new_advert(&app, &alice).await;

    let (status, error) = app
        .patch_advert(&bob, id, &json!({ "status": "paused" }))
        .await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], "not_found");
    assert_eq!(app.patch_advert(&bob, id, &json!({})).await.0, 404);
    assert_eq!(app.delete_advert(&bob, id).await, 404);
    assert_eq!(managed(&get(&app, &alice, id).await.1), managed(&created));
    assert_eq!(stored_row(&app, id).await.0, "active");

    // Unknown ids, and ids that are not numbers, are 404 too; without a key, 401.
    assert_eq!(
        app.patch_advert(&alice, 999_999, &json!({ "weight": 2 }))
            .await
            .0,
        404
    );
    assert_eq!(app.delete_advert(&alice, 999_999).await, 404);
    let response = app
        .client
        .delete(app.url("/api/v1/adverts/abc"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/adverts/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(managed(&get(&app, &alice, id).await.1), managed(&created));
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_advert_leaves_the_api_but_keeps_its_row_link_and_report() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (kept, _) = new_advert(&app, &key).await;
    let (id, advert) = new_advert(&app, &key).await;
    let path = link_path(&app, &advert);
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    let (_, before) = stored_row(&app, id).await;

    assert_eq!(app.delete_advert(&key, id).await, 204);

    let (status, error) = get(&app, &key, id).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (404, &json!("not_found"))
    );
    let (_, list) = app.get_json("/api/v1/adverts", &key).await;
    let ids: Vec<i64> = list["adverts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![kept]);
    assert_eq!(
        app.patch_advert(&key, id, &json!({ "status": "active" }))
            .await
            .0,
        404
    );
    assert_eq!(app.patch_advert(&key, id, &json!({})).await.0, 404);
    assert_eq!(app.delete_advert(&key, id).await, 404);

    // The link was cached while active: it is gone at once.
    assert_eq!(app.click(&path, BROWSER).await.status(), 410);
    let (status, after) = stored_row(&app, id).await;
    assert_eq!(status, "deleted");
    assert!(after > before, "{after} > {before}");

    // The history stays: the report still answers, with the click made before the delete.
    let (status, report) = app
        .get_json(&format!("/api/v1/adverts/{id}/report"), &key)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["clicks"].as_u64(), Some(1));
    app.stop().await;
}

#[tokio::test]
async fn updated_at_advances_on_every_patch_and_delete() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let (id, created) = new_advert(&app, &key).await;
    let mut last = updated_at(&created);
    let mut last_ms = stored_row(&app, id).await.1;
    // Back to back, well within one millisecond of each other at times.
    for body in [
        json!({ "weight": 2 }),
        json!({ "weight": 2 }),
        json!({ "status": "paused" }),
        json!({ "max_clicks": 10 }),
        json!({ "max_clicks": null }),
        json!({ "starts_at": "2027-01-01T00:00:00Z" }),
        json!({ "status": "active" }),
    ] {
        let (status, advert) = app.patch_advert(&key, id, &body).await;
        assert_eq!(status, 200, "{body}");
        assert!(updated_at(&advert) > last, "{body}");
        last = updated_at(&advert);
        let stored = stored_row(&app, id).await.1;
        assert!(stored > last_ms, "{body}");
        last_ms = stored;
    }
    assert_eq!(app.delete_advert(&key, id).await, 204);
    assert!(stored_row(&app, id).await.1 > last_ms);
    app.stop().await;
}

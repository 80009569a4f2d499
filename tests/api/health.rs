use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_answers_ok_once_the_server_is_up() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_get_the_json_error_format() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], 404);
    assert_eq!(body["error"]["code"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn graceful_stop_finishes_within_the_exit_deadline() {
    let app = spawn_app().await;
    let started = std::time::Instant::now();
    app.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn readyz_reports_each_backend_and_fails_when_one_is_down() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "up");
    assert_eq!(body["checks"]["cloud"], "up");
    assert_eq!(body["checks"]["redis"], "disabled");
    app.stop().await;

    // A Redis that does not answer makes the instance unready, and says which backend.
    let app = crate::helpers::spawn_app_with(crate::helpers::TestEnv::new(), None, |s| {
        s.redis.url = "redis://127.0.0.1:1".into();
    })
    .await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["redis"], "down");
    assert_eq!(body["checks"]["database"], "up");
    app.stop().await;
}

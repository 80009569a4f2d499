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
async fn readyz_reports_each_backend_and_stays_ready_when_one_is_down() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "up");
    assert_eq!(body["checks"]["cloud"], "up");
    assert_eq!(body["checks"]["redis"], "disabled");
    app.stop().await;

    // A Redis that does not answer is reported, but the instance still takes traffic: it counts
    // clicks in its journal and serves from memory meanwhile.
    let app = crate::helpers::spawn_app_with(crate::helpers::TestEnv::new(), None, |s| {
        s.redis.url = "redis://127.0.0.1:1".into();
    })
    .await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["redis"], "down");
    assert_eq!(body["checks"]["database"], "up");
    let key = app.customer_key("Acme").await;
    let advert = app.create_advert(&key).await;
    let answer = app
        .client
        .get(advert["tracked_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 302, "a degraded instance still redirects");
    app.stop().await;
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reklama::domain::Advert;
use reklama::platform::cloud::{CloudError, CloudSettings, CloudStore, ObjectCloud};
use serde_json::Value;

use crate::helpers::{
    TestEnv, advert_json, eventually, png, random_suffix, spawn_app, spawn_app_with,
};

/// A real local store behind a switch: fails the first `failures` writes (or all while `down`).
pub(crate) struct FlakyStore {
    inner: ObjectCloud,
    failures_left: AtomicU32,
    writes: AtomicU32,
}

impl FlakyStore {
    pub(crate) fn new(dir: &std::path::Path, failures: u32) -> Arc<Self> {
        Arc::new(Self {
            inner: ObjectCloud::from_settings(&local_settings(dir)).unwrap(),
            failures_left: AtomicU32::new(failures),
            writes: AtomicU32::new(0),
        })
    }
}

fn local_settings(dir: &std::path::Path) -> CloudSettings {
    CloudSettings {
        url: dir.display().to_string(),
        s3_endpoint: String::new(),
        s3_region: "us-east-1".into(),
        s3_access_key_id: String::new(),
        s3_secret_access_key: String::new(),
        s3_allow_http: false,
        // The deadlines as configured by default.
        ..reklama::main_app::Settings::load_with(None, Vec::new())
            .unwrap()
            .cloud
    }
}

#[async_trait]
impl CloudStore for FlakyStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), CloudError> {
        let left = self.failures_left.load(Ordering::SeqCst);
        if left > 0 {
            self.failures_left.store(left - 1, Ordering::SeqCst);
            return Err(CloudError::Backend("injected outage".into()));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, bytes).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, CloudError> {
        self.inner.get(key).await
    }

    fn describe(&self) -> String {
        "flaky test store".into()
    }
}

async fn offload_status(app: &crate::helpers::TestApp, key: &str, id: i64) -> String {
    let (_, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), key).await;
    advert["offload_status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_for_status(app: &crate::helpers::TestApp, key: &str, id: i64, want: &str) {
    eventually(Duration::from_secs(20), want, || async {
        (offload_status(app, key, id).await == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_advert_is_cloned_to_the_local_cloud_directory() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let original = png(900, 700);
    let response = app.post_advert(&key, &advert_json(&original)).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["offload_status"], "pending");
    let id = created["id"].as_i64().unwrap();
    wait_for_status(&app, &key, id, "done").await;

    let dir = app.env.cloud_dir();
    let stored_original = std::fs::read(dir.join(format!("adverts/{id}.png"))).unwrap();
    assert_eq!(
        stored_original, original,
        "the original is archived unchanged"
    );
    let clone: Advert =
        serde_json::from_slice(&std::fs::read(dir.join(format!("adverts/{id}.json"))).unwrap())
            .unwrap();
    assert_eq!(clone.id.0, id);
    assert_eq!(clone.title.as_str(), "Summer in Sochi");
    assert_eq!(
        clone.target_url.as_str(),
        created["target_url"].as_str().unwrap()
    );
    // The clone is lossless: it survives another serde round trip unchanged.
    let again: Advert = serde_json::from_str(&serde_json::to_string(&clone).unwrap()).unwrap();
    assert_eq!(again, clone);
    app.stop().await;
}

#[tokio::test]
async fn a_store_that_fails_twice_is_retried_until_the_clone_lands() {
    let env = TestEnv::new();
    let store = FlakyStore::new(&env.cloud_dir(), 2);
    let app = spawn_app_with(env, Some(store.clone()), |_| {}).await;
    let key = app.customer_key("Acme").await;
    let id = app.create_advert(&key).await["id"].as_i64().unwrap();
    wait_for_status(&app, &key, id, "done").await;
    assert_eq!(
        store.writes.load(Ordering::SeqCst),
        2,
        "original + clone written once each"
    );
    // The placement variants job of the same advert runs beside it and never touches the store.
    // A worker counts a success just after it deletes the job, so the queue can look drained a
    // moment before the count moves: wait for both.
    let depth = eventually(Duration::from_secs(30), "queue drained", || async {
        let depth = app.handles.jobs.depth().await.ok()?;
        let succeeded = app.handles.jobs.stats().succeeded.load(Ordering::SeqCst);
        (depth.queued + depth.running == 0 && succeeded >= 2).then_some(depth)
    })
    .await;
    assert_eq!(depth.dead, 0);
    assert_eq!(app.handles.jobs.stats().retried.load(Ordering::SeqCst), 2);
    assert_eq!(app.handles.jobs.stats().succeeded.load(Ordering::SeqCst), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_job_that_keeps_failing_is_dead_lettered_and_visible() {
    let env = TestEnv::new();
    let store = FlakyStore::new(&env.cloud_dir(), u32::MAX);
    let app = spawn_app_with(env, Some(store), |s| s.jobs.max_attempts = 3).await;
    let key = app.customer_key("Acme").await;
    let id = app.create_advert(&key).await["id"].as_i64().unwrap();
    wait_for_status(&app, &key, id, "failed").await;
    assert_eq!(app.handles.jobs.stats().dead.load(Ordering::SeqCst), 1);
    assert_eq!(app.handles.jobs.stats().retried.load(Ordering::SeqCst), 2);
    let depth = app.handles.jobs.depth().await.unwrap();
    assert_eq!(depth.dead, 1);
    // Operators see it in the metrics too.
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("reklama_jobs_dead_lettered_total 1"),
        "{text}"
    );
    assert!(text.contains("reklama_jobs{status=\"dead\"} 1"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn a_queued_job_survives_a_restart() {
    let env = TestEnv::new();
    // First life: the store is down and retries are far apart, so the job stays queued.
    let down = FlakyStore::new(&env.cloud_dir(), u32::MAX);
    let app = spawn_app_with(env, Some(down), |s| {
        s.jobs.backoff_base_ms = 600_000;
        s.jobs.backoff_max_secs = 600;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let id = app.create_advert(&key).await["id"].as_i64().unwrap();
    eventually(Duration::from_secs(10), "first failed attempt", || async {
        (app.handles.jobs.stats().retried.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    let env = app.stop().await;
    assert!(!env.cloud_dir().join(format!("adverts/{id}.json")).exists());

    // Second life: same database, a working store and normal backoff. The job was scheduled
    // far in the future, so move it forward the way an operator would after an outage.
    let app = spawn_app_with(env, None, |_| {}).await;
    {
        use diesel::prelude::*;
        use reklama::platform::db::{DbError, schema::jobs};
        app.handles
            .db
            .run(|conn| {
                diesel::update(jobs::table)
                    .set(jobs::run_at.eq(0i64))
                    .execute(conn)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
    }
    wait_for_status(&app, &key, id, "done").await;
    assert!(
        app.env
            .cloud_dir()
            .join(format!("adverts/{id}.json"))
            .exists()
    );
    app.stop().await;
}

#[tokio::test]
async fn adverts_are_cloned_to_an_s3_compatible_store() {
    let Ok(endpoint) = std::env::var("REKLAMA_TEST_S3_ENDPOINT") else {
        panic!(
            "REKLAMA_TEST_S3_ENDPOINT must point at an S3-compatible server (see scripts/start-services)"
        );
    };
    let bucket = format!("reklama-{}", random_suffix());
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.cloud.url = format!("s3://{bucket}/adverts-archive");
        s.cloud.s3_endpoint = endpoint.clone();
        s.cloud.s3_allow_http = true;
        s.cloud.s3_access_key_id = "test".into();
        s.cloud.s3_secret_access_key = "test".into();
    })
    .await;
    let key = app.customer_key("Acme").await;
    let original = png(320, 200);
    let response = app.post_advert(&key, &advert_json(&original)).await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    wait_for_status(&app, &key, id, "done").await;
    let stored = app
        .handles
        .cloud
        .get(&format!("adverts/{id}.png"))
        .await
        .unwrap();
    assert_eq!(stored, original);
    let clone: Advert = serde_json::from_slice(
        &app.handles
            .cloud
            .get(&format!("adverts/{id}.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(clone.id.0, id);
    // The prefix is honoured: seen from the bucket's root, the object lives under it.
    let root = ObjectCloud::from_settings(&CloudSettings {
        url: format!("s3://{bucket}"),
        s3_endpoint: endpoint.clone(),
        s3_allow_http: true,
        s3_access_key_id: "test".into(),
        s3_secret_access_key: "test".into(),
        ..local_settings(std::path::Path::new("unused"))
    })
    .unwrap();
    assert_eq!(
        root.get(&format!("adverts-archive/adverts/{id}.png"))
            .await
            .unwrap(),
        original
    );
    app.stop().await;
}

#[tokio::test]
async fn the_cloud_clone_follows_changes_to_the_advert() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = app.create_advert(&key).await["id"].as_i64().unwrap();
    wait_for_status(&app, &key, id, "done").await;
    let clone_status = |app: &crate::helpers::TestApp| {
        let path = app.env.cloud_dir().join(format!("adverts/{id}.json"));
        async move {
            let bytes = std::fs::read(path).ok()?;
            let clone: Advert = serde_json::from_slice(&bytes).ok()?;
            Some((clone.status.as_str().to_owned(), clone.weight))
        }
    };
    assert_eq!(clone_status(&app).await, Some(("active".into(), 1)));
    let patched = app
        .client
        .patch(app.url(&format!("/api/v1/adverts/{id}")))
        .bearer_auth(&key)
        .json(&serde_json::json!({"status": "paused", "weight": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    eventually(Duration::from_secs(10), "clone shows the patch", || async {
        (clone_status(&app).await == Some(("paused".into(), 7))).then_some(())
    })
    .await;
    let deleted = app
        .client
        .delete(app.url(&format!("/api/v1/adverts/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    eventually(
        Duration::from_secs(10),
        "clone shows the deletion",
        || async { (clone_status(&app).await == Some(("deleted".into(), 7))).then_some(()) },
    )
    .await;
    app.stop().await;
}

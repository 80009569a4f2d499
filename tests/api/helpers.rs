//! Test harness: each test gets its own database (a SQLite file in a temp dir, or a fresh
//! PostgreSQL database dropped afterwards), its own cloud directory, and a real server on a
//! loopback port. `REKLAMA_TEST_DATABASE=postgres` switches the backend.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use reklama::main_app::{Application, Handles, Overrides, Settings, Stopper};
use reklama::platform::cloud::CloudStore;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// What a test owns outside the process: a directory and a database. Shared by the app
/// instances of one test (restarts, several instances); cleaned up when the last one goes.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pg: Option<(String, String)>,
}

impl TestEnv {
    pub fn new() -> Arc<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = std::env::var("REKLAMA_TEST_DATABASE").unwrap_or_else(|_| "sqlite".into());
        let (database_url, pg) = match backend.as_str() {
            "postgres" => {
                let server = std::env::var("REKLAMA_TEST_PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
                let name = format!("reklama_test_{}", random_suffix());
                let mut admin = PgConnection::establish(&format!("{server}/postgres"))
                    .expect("connect to PostgreSQL as admin");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .expect("create test database");
                (format!("{server}/{name}"), Some((server, name)))
            }
            _ => (
                format!("sqlite://{}", dir.path().join("reklama.db").display()),
                None,
            ),
        };
        Arc::new(Self {
            dir,
            database_url,
            pg,
        })
    }

    pub fn cloud_dir(&self) -> PathBuf {
        self.dir.path().join("cloud")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.pg
            && let Ok(mut admin) = PgConnection::establish(&format!("{server}/postgres"))
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin);
        }
    }
}

pub fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..12)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:{port}` of `server.admin_listen`, when the test set it.
    pub admin_address: Option<String>,
    pub client: reqwest::Client,
    pub handles: Handles,
    pub stopper: Stopper,
    pub env: Arc<TestEnv>,
    running: JoinHandle<anyhow::Result<()>>,
}

/// Settings for a test: the embedded shape, pointed at the test's own files, with fast retries.
pub fn test_settings(env: &TestEnv, port: u16) -> Settings {
    let mut s = Settings::load_with(None, Vec::new()).expect("default settings");
    s.server.listen = format!("127.0.0.1:{port}");
    s.server.public_url = format!("http://127.0.0.1:{port}");
    s.server.workers = 2;
    s.server.shutdown_timeout_secs = 5;
    s.database.url = env.database_url.clone();
    s.database.pool_size = 4;
    s.cloud.url = env.cloud_dir().display().to_string();
    s.tracking.journal_dir = env.dir.path().join("journal").display().to_string();
    s.jobs.workers = 2;
    s.jobs.backoff_base_ms = 50;
    s.jobs.backoff_max_secs = 1;
    s.jobs.poll_interval_ms = 100;
    // Every test clicks from one loopback address, most of them far more than a person would:
    // the invalid-traffic thresholds are set by the tests about them (invalid_traffic.rs).
    s.tracking.max_billable_clicks_per_address_per_hour = 0;
    s.tracking.max_billable_clicks_per_user_per_hour = 0;
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestEnv::new(), None, |_| {}).await
}

pub async fn spawn_app_with(
    env: Arc<TestEnv>,
    cloud: Option<Arc<dyn CloudStore>>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local addr").port();
    let mut settings = test_settings(&env, port);
    tweak(&mut settings);
    let app = Application::build_with(
        settings,
        Overrides {
            cloud,
            listener: Some(listener),
        },
    )
    .await
    .expect("application builds");
    let handles = app.handles();
    let stopper = app.stopper();
    let admin_address = app
        .admin_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let running = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        admin_address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        handles,
        stopper,
        env,
        running,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Graceful stop; returns once the application has fully shut down.
    pub async fn stop(self) -> Arc<TestEnv> {
        self.stopper.stop().await;
        tokio::time::timeout(Duration::from_secs(15), self.running)
            .await
            .expect("application stops in time")
            .expect("run task")
            .expect("clean shutdown");
        self.env
    }

    /// A new customer's API key.
    pub async fn customer_key(&self, name: &str) -> String {
        self.handles
            .customers
            .create(name)
            .await
            .expect("create customer")
            .key
    }

    pub async fn post_advert(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/adverts"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// `POST /api/v1/adverts` with a multipart form, as `key`.
    pub async fn post_advert_form(
        &self,
        key: &str,
        form: reqwest::multipart::Form,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/adverts"))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .expect("request")
    }

    /// `POST /adverts`: the HTML advert form, as a browser sends it (the key is a field).
    pub async fn post_form_page(&self, form: reqwest::multipart::Form) -> reqwest::Response {
        self.client
            .post(self.url("/adverts"))
            .multipart(form)
            .send()
            .await
            .expect("request")
    }

    /// Creates a valid advert and returns its JSON.
    pub async fn create_advert(&self, key: &str) -> Value {
        let response = self.post_advert(key, &advert_json(&png(800, 600))).await;
        assert_eq!(response.status(), 201);
        response.json().await.expect("json")
    }

    pub async fn get_json(&self, path: &str, key: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs `path` and reads the body as text, whatever the status.
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text body")
    }

    /// An advert (a small PNG) pointing at `target`: its id and the path of its tracked link.
    pub async fn advert_with_link(&self, key: &str, target: &str) -> (i64, String) {
        let mut body = advert_json(&png(64, 64));
        body["target_url"] = json!(target);
        let response = self.post_advert(key, &body).await;
        assert_eq!(response.status(), 201);
        let advert: Value = response.json().await.unwrap();
        let tracked = advert["tracked_url"].as_str().unwrap();
        let path = tracked.strip_prefix(&self.address).unwrap().to_owned();
        (advert["id"].as_i64().unwrap(), path)
    }

    /// GETs a tracked-link `path` on this instance as `user_agent`.
    pub async fn click(&self, path: &str, user_agent: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("user-agent", user_agent)
            .send()
            .await
            .unwrap()
    }

    /// Follows a (full) click URL the way a person's browser does.
    pub async fn follow(&self, click_url: &str) -> reqwest::Response {
        self.client
            .get(click_url)
            .header("user-agent", BROWSER)
            .send()
            .await
            .unwrap()
    }

    /// An advert's report; asserts 200.
    pub async fn report(&self, key: &str, id: i64) -> Value {
        let (status, body) = self
            .get_json(&format!("/api/v1/adverts/{id}/report"), key)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// An advert's report with `query` (such as `by=placement`); asserts 200.
    pub async fn report_with_query(&self, key: &str, id: i64, query: &str) -> Value {
        let (status, body) = self
            .get_json(&format!("/api/v1/adverts/{id}/report?{query}"), key)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A decision: `GET /api/v1/serve?{query}`, its status and JSON (Null if none).
    pub async fn serve(&self, query: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(&format!("/api/v1/serve?{query}")))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The cards of a successful decision; asserts 200.
    pub async fn cards(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.serve(query).await;
        assert_eq!(status, 200, "{query}: {body}");
        body["adverts"].as_array().unwrap().clone()
    }

    /// `PATCH /api/v1/adverts/{id}`: the status and JSON (Null if none).
    pub async fn patch_advert(&self, key: &str, id: i64, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .patch(self.url(&format!("/api/v1/adverts/{id}")))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `DELETE /api/v1/adverts/{id}`: the status.
    pub async fn delete_advert(&self, key: &str, id: i64) -> u16 {
        self.client
            .delete(self.url(&format!("/api/v1/adverts/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// A desktop browser's User-Agent: its clicks count as people's.
pub const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// Settings where nothing reaches the database unless a test asks for it.
pub fn manual_flush(s: &mut Settings) {
    s.tracking.flush_interval_secs = 3600;
    s.tracking.flush_threshold = 1_000_000_000;
}

/// The Redis the tests share (`REKLAMA_TEST_REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("REKLAMA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Every key matching `pattern` (SCAN to the end: other tests' keys share the database).
pub async fn keys_matching(pattern: &str) -> Vec<String> {
    let mut conn = redis_conn().await;
    let (mut cursor, mut found) = (0u64, Vec::new());
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// Empties this test's part of Redis (its key prefix), as FLUSHDB would empty a whole Redis,
/// without touching the keys of tests running beside it.
pub async fn empty_redis(prefix: &str) {
    let keys = keys_matching(&format!("{prefix}*")).await;
    if !keys.is_empty() {
        let mut conn = redis_conn().await;
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// A connection to the tests' Redis.
pub async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The `(field, code)` pairs of a 422, sorted.
pub fn field_codes(body: &Value) -> Vec<(String, String)> {
    let mut fields = field_codes_in_order(body);
    fields.sort();
    fields
}

/// The `(field, code)` pairs of a 422, in the order the answer lists them.
pub fn field_codes_in_order(body: &Value) -> Vec<(String, String)> {
    body["error"]["fields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_owned(),
                f["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `expected` as sorted `(field, code)` pairs, to compare with [`field_codes`].
pub fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = expected
        .iter()
        .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
        .collect();
    pairs.sort();
    pairs
}

/// Polls `check` until it returns Some, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A PNG with some structure (a gradient), so compression has real work to do.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A valid JSON advert with the given image.
pub fn advert_json(image: &[u8]) -> Value {
    json!({
        "title": "Summer in Sochi",
        "text": "Seven nights by the sea, flights included.",
        "genre": "travel",
        "target_url": "https://example.com/offers/sochi?utm_source=reklama",
        "image_base64": b64(image),
    })
}

impl TestApp {
    /// Waits for a sync round with Redis that started after this call: everything this
    /// instance counted before is pushed, and the shared totals it holds are read back since.
    pub async fn synced(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.handles.serving.sync_stats();
        let (rounds, failures) = (stats.rounds.load(Relaxed), stats.failures.load(Relaxed));
        // The round in progress may have started before the call; the one after it did not.
        eventually(
            Duration::from_secs(10),
            "a sync round with Redis",
            || async { (stats.rounds.load(Relaxed) >= rounds + 2).then_some(()) },
        )
        .await;
        assert_eq!(
            stats.failures.load(Relaxed),
            failures,
            "a sync round failed"
        );
    }

    /// Signs in to the dashboard with `key` and returns the HTML of the signed-in page at `path`.
    pub async fn dashboard_page(&self, key: &str, path: &str) -> String {
        let login = self
            .client
            .post(self.url("/login"))
            .form(&[("api_key", key)])
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 303, "sign-in");
        let cookie = login.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let page = self
            .client
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{path}");
        page.text().await.unwrap()
    }
}

/// One sample of the Prometheus text format: its labels and its value.
type Sample = (std::collections::BTreeMap<String, String>, f64);

/// Every sample of the metric `name`.
fn metric_samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            (metric == name).then_some(())?;
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// The value of the one sample of `name` whose labels include all of `want`.
pub fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = metric_samples(text, name)
        .into_iter()
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .collect();
    assert!(matching.len() <= 1, "{name} {want:?} matches {matching:?}");
    matching.first().copied()
}

/// A file part of a multipart form.
pub fn file_part(bytes: Vec<u8>, file_name: &str, mime: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes)
        .file_name(file_name.to_owned())
        .mime_str(mime)
        .expect("a valid MIME type")
}

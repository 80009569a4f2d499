//! End to end in a real browser: Debian's Chromium driven through ChromeDriver (WebDriver, with
//! fantoccini). A customer signs in with the API key, submits an advert with an image file
//! through the form, follows the tracked link (to this app's own `/healthz`, so no other host is
//! touched), and sees the click on the advert's chart. Every step is checked at a phone's width
//! (375 px) and a desktop's (1280 px): no page-wide sideways scroll, no number broken over lines,
//! the sign-out button beside the name; a screenshot of each goes to
//! `$CARGO_TARGET_DIR/e2e/<backend>/` (or `target/e2e/<backend>/`).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`apt-get install -y
//! --no-install-recommends chromium chromium-driver`; `.ci/run` installs them). Without them the
//! test fails and says so, unless `REKLAMA_E2E=skip`. `REKLAMA_CHROMIUM` and
//! `REKLAMA_CHROMEDRIVER` point at other binaries.

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::helpers::{TestApp, png, spawn_app};

/// A desktop browser's user agent: HeadlessChrome's own would be counted as a bot.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/156.0.0.0 Safari/537.36";
const WIDTH: u32 = 1100;
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

fn binary(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Where the screenshots go: `$CARGO_TARGET_DIR/e2e/<backend>` or `target/e2e/<backend>`.
fn screenshot_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let backend = std::env::var("REKLAMA_TEST_DATABASE").unwrap_or_else(|_| "sqlite".into());
    let dir = base.join("e2e").join(backend);
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// ChromeDriver on a loopback port, ended (by its own process id) when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(path: &Path, log: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(log).expect("driver log");
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(response) = client.get(&status).send().await
                && response.status().is_success()
            {
                return driver;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "chromedriver did not answer on {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser, with the page helpers the journey uses.
struct Browser {
    client: Client,
    shots: PathBuf,
    step: u32,
}

impl Browser {
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(STEP_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    /// Waits until the element's text is `expected` (across a navigation: a page that is being
    /// replaced may answer for the old document first).
    async fn wait_for_text(&self, css: &str, expected: &str) {
        let started = Instant::now();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
                && text == expected
            {
                return;
            }
            assert!(
                started.elapsed() < STEP_TIMEOUT,
                "waited for {css} to say {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Waits until the browser is at a URL whose path (and query) satisfies `check`.
    async fn wait_for_path(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let url = self.client.current_url().await.expect("current url");
            let path = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            if check(&path) {
                return path;
            }
            assert!(
                started.elapsed() < STEP_TIMEOUT,
                "waited for {what}, still at {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page at a phone's width (375 px) and a desktop's (1280 px): at each, the layout is
    /// checked (see [`LAYOUT_CHECK`]) and a screenshot of the whole page taken (the window is
    /// made as tall as the page first). The window goes back to its usual size afterwards.
    async fn screenshot(&mut self, name: &str) {
        self.step += 1;
        for width in [375, 1280] {
            self.client
                .set_window_size(width, 900)
                .await
                .expect("resize");
            let height = self
                .client
                .execute(
                    "const main = document.querySelector('main') || document.body; \
                     return Math.ceil(main.getBoundingClientRect().bottom + window.scrollY + 32);",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_u64())
                .unwrap_or(900);
            let height = u32::try_from(height).unwrap_or(900).clamp(480, 6000);
            self.client
                .set_window_size(width, height + 120)
                .await
                .expect("resize");
            let problems = self
                .client
                .execute(LAYOUT_CHECK, vec![])
                .await
                .expect("layout check");
            assert_eq!(
                problems,
                json!([]),
                "{name} at {width} px: {problems}, at {}",
                self.client.current_url().await.expect("url")
            );
            let png = self.client.screenshot().await.expect("screenshot");
            let path = self
                .shots
                .join(format!("{:02}-{name}-{width}.png", self.step));
            std::fs::write(&path, png).expect("write screenshot");
            eprintln!("screenshot: {}", path.display());
        }
        self.client
            .set_window_size(WIDTH, 900)
            .await
            .expect("resize");
    }
}

/// What makes a page unusable at the window's width, as a list of problems (empty: none): the
/// page scrolls sideways (a wide table or placement must scroll inside its own box), a number
/// or a count is broken over lines, the sign-out button wraps away from the name, or a
/// placement's preview is not drawn at its real size (so not in its aspect ratio).
const LAYOUT_CHECK: &str = "\
    const problems = []; \
    const page = document.documentElement; \
    if (page.scrollWidth > window.innerWidth + 1) { \
        const wide = [...document.body.querySelectorAll('*')] \
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1) \
            .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '')); \
        problems.push('the page scrolls sideways: ' + page.scrollWidth + ' > ' + window.innerWidth \
            + ' (' + wide.slice(0, 6).join(', ') + ')'); \
    } \
    const lines = (el) => { \
        const range = document.createRange(); range.selectNodeContents(el); \
        return new Set([...range.getClientRects()].filter(r => r.width > 0) \
            .map(r => Math.round(r.top))).size; \
    }; \
    for (const el of document.querySelectorAll('.num, dl.totals dd')) { \
        if (lines(el) > 1) { problems.push('broken over lines: ' + el.textContent.trim()); } \
    } \
    const who = document.querySelector('nav.site .who'); \
    const out = document.querySelector('nav.site form[action=\"/logout\"] button'); \
    if (who && out) { \
        const a = who.getBoundingClientRect(), b = out.getBoundingClientRect(); \
        if (a.bottom < b.top || b.bottom < a.top) { problems.push('sign-out wraps under the name'); } \
    } \
    for (const img of document.querySelectorAll('img.variant, img.variant-pending')) { \
        const w = Number(img.getAttribute('width')), h = Number(img.getAttribute('height')); \
        if (img.clientWidth !== w || img.clientHeight !== h) { \
            problems.push('preview ' + w + 'x' + h + ' drawn at ' + img.clientWidth + 'x' + img.clientHeight); \
        } \
        if (img.classList.contains('variant') && img.complete && img.naturalWidth !== w) { \
            problems.push('preview ' + w + 'x' + h + ' is an image ' + img.naturalWidth + ' wide'); \
        } \
    } \
    return problems;";

#[tokio::test]
async fn a_customer_signs_in_submits_an_advert_follows_its_link_and_sees_the_click() {
    if std::env::var("REKLAMA_E2E").as_deref() == Ok("skip") {
        eprintln!("e2e skipped: REKLAMA_E2E=skip");
        return;
    }
    let chromium = binary("REKLAMA_CHROMIUM", "/usr/bin/chromium");
    let chromedriver = binary("REKLAMA_CHROMEDRIVER", "/usr/bin/chromedriver");
    for path in [&chromium, &chromedriver] {
        assert!(
            path.exists(),
            "the browser test needs {}: install Chromium and its driver with `apt-get install -y \
             --no-install-recommends chromium chromium-driver` (bash .ci/run does), or set \
             REKLAMA_E2E=skip to leave this test out",
            path.display()
        );
    }

    let app = spawn_app().await;
    let key = app.customer_key("Browser Travel").await;
    let work = tempfile::tempdir().expect("temp dir");
    let driver = Driver::start(&chromedriver, &work.path().join("chromedriver.log")).await;
    let profile = work.path().join("profile");
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                format!("--window-size={WIDTH},900"),
                format!("--user-agent={USER_AGENT}"),
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let capabilities = match capabilities {
        Value::Object(map) => map,
        _ => unreachable!(),
    };
    let client = match ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
    {
        Ok(client) => client,
        Err(e) => {
            let log =
                std::fs::read_to_string(work.path().join("chromedriver.log")).unwrap_or_default();
            panic!("chromium did not start through chromedriver: {e}\n{log}");
        }
    };
    let mut browser = Browser {
        client: client.clone(),
        shots: screenshot_dir(),
        step: 0,
    };
    let image = work.path().join("banner.png");
    std::fs::write(&image, png(640, 400)).expect("write the image");

    let journey = AssertUnwindSafe(journey(&mut browser, &app, &key, &image))
        .catch_unwind()
        .await;
    let _ = client.close().await;
    drop(driver);
    app.stop().await;
    if let Err(panic) = journey {
        std::panic::resume_unwind(panic);
    }
}

async fn journey(browser: &mut Browser, app: &TestApp, key: &str, image: &Path) {
    // 1. Sign in with the API key.
    browser.goto(&app.url("/dashboard")).await;
    browser
        .wait_for_path("the sign-in page", |p| p == "/login")
        .await;
    browser.screenshot("sign-in").await;
    browser
        .find("#api_key")
        .await
        .send_keys(key)
        .await
        .expect("type the key");
    browser
        .find(r#"form[action="/login"] button[type="submit"]"#)
        .await
        .click()
        .await
        .expect("sign in");
    browser
        .wait_for_path("the dashboard", |p| p == "/dashboard")
        .await;
    assert!(
        browser
            .text("nav.site")
            .await
            .contains("Signed in as Browser Travel")
    );
    browser.screenshot("dashboard-empty").await;

    // 2. Submit an advert with an image file through the form; signed in, it asks for no key.
    browser
        .find(r#"nav.site a[href="/"]"#)
        .await
        .click()
        .await
        .expect("to the form");
    browser.wait_for_path("the form", |p| p == "/").await;
    assert!(
        browser.client.find(Locator::Css("#api_key")).await.is_err(),
        "signed in, the form has no key field"
    );
    let target = app.url("/healthz");
    browser
        .find("#title")
        .await
        .send_keys("Autumn in Kazan")
        .await
        .expect("title");
    browser
        .find("#text")
        .await
        .send_keys("Three nights in the old town, breakfast included.")
        .await
        .expect("text");
    browser
        .find("#genre")
        .await
        .select_by_value("travel")
        .await
        .expect("genre");
    browser
        .find("#target_url")
        .await
        .send_keys(&target)
        .await
        .expect("target");
    browser
        .find("#image")
        .await
        .send_keys(&image.display().to_string())
        .await
        .expect("choose the image file");
    browser.screenshot("form-filled").await;
    browser
        .find(r#"form[action="/dashboard/adverts"] button[type="submit"]"#)
        .await
        .click()
        .await
        .expect("submit");
    let created = browser
        .wait_for_path("the new advert's page", |p| {
            p.starts_with("/dashboard/adverts/") && p.ends_with("?created=1")
        })
        .await;
    let advert_path = created.trim_end_matches("?created=1").to_owned();
    assert!(browser.text(".notice").await.contains("stored and live"));
    assert_eq!(browser.text("h1").await, "Autumn in Kazan");
    browser.find("img.creative").await;
    let loaded = browser
        .client
        .execute(
            "const img = document.querySelector('img.creative'); \
             return img.complete && img.naturalWidth;",
            vec![],
        )
        .await
        .expect("image state");
    assert_eq!(
        loaded,
        json!(600),
        "the creative is shown, fitted into 600 px"
    );
    let tracked = browser.text("#tracked-link").await;
    assert!(tracked.starts_with(&app.url("/r/")), "{tracked}");
    assert!(
        browser
            .find("figure.qr svg")
            .await
            .is_displayed()
            .await
            .expect("qr")
    );
    // The script runs under the page's policy: it reveals the copy button, which answers.
    let copy = browser.find(r#"button[data-copy="tracked-link"]"#).await;
    assert!(
        copy.is_displayed().await.expect("copy button"),
        "the script did not run"
    );
    copy.click().await.expect("copy");
    let started = Instant::now();
    while browser.text("#copy-status").await.is_empty() {
        assert!(
            started.elapsed() < STEP_TIMEOUT,
            "the copy button did not answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        browser.text("#chart-empty").await,
        "No clicks or impressions in the last 48 hours."
    );
    browser.screenshot("advert-created").await;

    // 3. A frontend shows the advert three times; then follow the tracked link, which leads to
    //    the target (here this app's own /healthz).
    for user in 0..3 {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/serve?user_id=e2e-{user}&genres=travel")))
            .send()
            .await
            .expect("serve");
        assert_eq!(response.status(), 200);
    }
    browser.goto(&tracked).await;
    browser
        .wait_for_path("the target", |p| p == "/healthz")
        .await;
    assert!(browser.text("body").await.contains("ok"));
    browser.screenshot("target").await;

    // 4. The advert's page shows the click on the chart and in its table.
    browser.goto(&app.url(&advert_path)).await;
    let row = "#chart-data tbody tr";
    assert_eq!(browser.text(&format!("{row} td.clicks")).await, "1");
    assert_eq!(browser.text(&format!("{row} td.impressions")).await, "3");
    assert_eq!(browser.text(&format!("{row} td.ctr")).await, "33.33 %");
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css(row))
            .await
            .expect("rows")
            .len(),
        1
    );
    assert_eq!(browser.text("#total-clicks").await, "1");
    let point = browser.find("svg.chart g.point").await;
    assert_eq!(
        point.attr("data-clicks").await.expect("attr").as_deref(),
        Some("1")
    );
    browser.screenshot("advert-with-click").await;
    browser
        .goto(&app.url(&format!("{advert_path}?granularity=day")))
        .await;
    assert_eq!(browser.text("#chart-data tbody tr td.clicks").await, "1");
    browser.screenshot("advert-daily").await;

    // 5. The dashboard lists it with the click; pause it there.
    browser.goto(&app.url("/dashboard")).await;
    assert_eq!(browser.text("table.adverts tbody td.clicks").await, "1");
    browser
        .find("table.adverts tbody form button")
        .await
        .click()
        .await
        .expect("pause");
    // The same URL before and after: wait for the new page's word.
    browser
        .wait_for_text("table.adverts tbody .status", "paused")
        .await;
    browser.screenshot("dashboard-paused").await;
    let (status, advert) = app
        .get_json(
            &format!("/api/v1{}", advert_path.trim_start_matches("/dashboard")),
            key,
        )
        .await;
    assert_eq!((status, advert["status"].as_str()), (200, Some("paused")));

    // 6. A responsive advert (three titles, two texts): its page lists six creatives, and one is
    //    paused there; every placement's preview is at its real size once rendered.
    let mut body = crate::helpers::advert_json(&crate::helpers::png(1200, 800));
    body.as_object_mut().expect("object").remove("title");
    body.as_object_mut().expect("object").remove("text");
    body["titles"] = json!([
        "Autumn in Kazan",
        "Kazan: three nights from 99 EUR",
        "Старый город Казани ждёт вас"
    ]);
    body["texts"] = json!([
        "Three nights in the old town, breakfast included.",
        "A walk along the Kremlin walls and the Kaban lake."
    ]);
    let response = app.post_advert(key, &body).await;
    assert_eq!(response.status(), 201);
    let responsive: serde_json::Value = response.json().await.expect("advert");
    let page = app.url(&format!("/dashboard/adverts/{}", responsive["id"]));
    let started = Instant::now();
    loop {
        browser.goto(&page).await;
        let pending = browser
            .client
            .find_all(Locator::Css("img.variant-pending"))
            .await
            .expect("previews")
            .len();
        if pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < STEP_TIMEOUT * 3,
            "{pending} placements still pending"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("#creatives tbody tr"))
            .await
            .expect("creatives")
            .len(),
        6
    );
    browser
        .find(r#"#creatives tr[data-creative="2"] button"#)
        .await
        .click()
        .await
        .expect("pause creative 2");
    browser
        .wait_for_text(r#"#creatives tr[data-creative="2"] .status"#, "paused")
        .await;
    browser.screenshot("creatives").await;

    // 7. Sign out.
    browser
        .find(r#"form[action="/logout"] button"#)
        .await
        .click()
        .await
        .expect("sign out");
    browser
        .wait_for_path("the sign-in page", |p| p == "/login")
        .await;
    browser.goto(&app.url("/dashboard")).await;
    browser
        .wait_for_path("the sign-in page again", |p| p == "/login")
        .await;
}

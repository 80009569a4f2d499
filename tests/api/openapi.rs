//! The OpenAPI document (`/openapi.json`) and the interactive documentation (`/docs`): every
//! endpoint is described, errors point at the one error schema, the schemas match real answers,
//! and the documentation's files all come from the binary.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{TestApp, TestEnv, eventually, spawn_app, spawn_app_with};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every route the application serves, with its methods.
const ENDPOINTS: [(&str, &str); 53] = [
    ("/", "get"),
    ("/adverts", "post"),
    ("/adverts/{id}/preview", "get"),
    ("/api/v1/adverts", "get"),
    ("/api/v1/adverts", "post"),
    ("/api/v1/adverts/{id}", "delete"),
    ("/api/v1/adverts/{id}", "get"),
    ("/api/v1/adverts/{id}", "patch"),
    ("/api/v1/adverts/{id}/creatives", "get"),
    ("/api/v1/adverts/{id}/creatives/{creative_id}", "patch"),
    ("/api/v1/adverts/{id}/full", "get"),
    ("/api/v1/adverts/{id}/variants", "get"),
    ("/api/v1/adverts/{id}/report", "get"),
    ("/api/v1/reports", "get"),
    ("/api/v1/conversions", "post"),
    ("/api/v1/keys", "get"),
    ("/api/v1/keys", "post"),
    ("/api/v1/keys/{id}", "delete"),
    ("/api/v1/webhooks", "get"),
    ("/api/v1/webhooks", "post"),
    ("/api/v1/webhooks/{id}", "get"),
    ("/api/v1/webhooks/{id}", "patch"),
    ("/api/v1/webhooks/{id}", "delete"),
    ("/api/v1/webhooks/{id}/deliveries", "get"),
    ("/api/v1/serve", "get"),
    ("/asyncapi.json", "get"),
    ("/assets/dashboard.js", "get"),
    ("/assets/pending.svg", "get"),
    ("/assets/reklama.css", "get"),
    ("/dashboard", "get"),
    ("/dashboard/adverts", "post"),
    ("/dashboard/adverts/{id}", "get"),
    ("/dashboard/adverts/{id}/report.csv", "get"),
    ("/dashboard/adverts/{id}/status", "post"),
    ("/dashboard/keys", "get"),
    ("/dashboard/keys", "post"),
    ("/dashboard/account", "get"),
    ("/dashboard/account", "post"),
    ("/dashboard/keys/{id}/revoke", "post"),
    (
        "/dashboard/adverts/{id}/creatives/{creative_id}/status",
        "post",
    ),
    ("/docs", "get"),
    ("/docs/{file}", "get"),
    ("/healthz", "get"),
    ("/login", "get"),
    ("/login", "post"),
    ("/logout", "post"),
    ("/media/{advert_id}/{file}", "get"),
    ("/media/{advert_id}/{placement}/{file}", "get"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
    ("/r/{code}", "get"),
    ("/r/{code}", "head"),
    ("/readyz", "get"),
];

/// Error answers that are deliberately not the JSON error format, each documented as such: the
/// HTML form and the dashboard answer pages, the tracked link short text for browsers.
const NOT_THE_ERROR_FORMAT: [(&str, &str, &str); 83] = [
    ("/adverts", "post", "400"),
    ("/adverts", "post", "401"),
    ("/adverts", "post", "403"),
    ("/adverts", "post", "413"),
    ("/adverts", "post", "415"),
    ("/adverts", "post", "422"),
    ("/adverts", "post", "500"),
    ("/adverts", "post", "503"),
    // The form's preview page is for a browser too.
    ("/adverts/{id}/preview", "get", "404"),
    ("/adverts/{id}/preview", "get", "500"),
    ("/adverts/{id}/preview", "get", "503"),
    // The dashboard is for people in a browser: every error is an HTML page (an error page, the
    // sign-in form or the advert form again), never the JSON error format.
    ("/dashboard", "get", "500"),
    ("/dashboard", "get", "503"),
    ("/dashboard/adverts", "post", "400"),
    ("/dashboard/adverts", "post", "403"),
    ("/dashboard/adverts", "post", "413"),
    ("/dashboard/adverts", "post", "415"),
    ("/dashboard/adverts", "post", "422"),
    ("/dashboard/adverts", "post", "500"),
    ("/dashboard/adverts", "post", "503"),
    ("/dashboard/adverts/{id}", "get", "400"),
    ("/dashboard/adverts/{id}", "get", "404"),
    ("/dashboard/adverts/{id}", "get", "500"),
    ("/dashboard/adverts/{id}", "get", "503"),
    ("/dashboard/adverts/{id}/report.csv", "get", "404"),
    ("/dashboard/adverts/{id}/report.csv", "get", "500"),
    ("/dashboard/adverts/{id}/report.csv", "get", "503"),
    ("/dashboard/adverts/{id}/status", "post", "400"),
    ("/dashboard/adverts/{id}/status", "post", "403"),
    ("/dashboard/adverts/{id}/status", "post", "404"),
    ("/dashboard/adverts/{id}/status", "post", "413"),
    ("/dashboard/adverts/{id}/status", "post", "500"),
    ("/dashboard/adverts/{id}/status", "post", "503"),
    (
        "/dashboard/adverts/{id}/creatives/{creative_id}/status",
        "post",
        "400",
    ),
    (
        "/dashboard/adverts/{id}/creatives/{creative_id}/status",
        "post",
        "403",
    ),
    (
        "/dashboard/adverts/{id}/creatives/{creative_id}/status",
        "post",
        "404",
    ),
    (
        "/dashboard/adverts/{id}/creatives/{creative_id}/status",
        "post",
        "409",
    ),
    (
        "/dashboard/adverts/{id}/creatives/{creative_id}/status",
        "post",
        "413",
    ),
    (
        "/dashboard/adverts/{id}/creatives/{creative_id}/status",
        "post",
        "500",
    ),
    (
        "/dashboard/adverts/{id}/creatives/{creative_id}/status",
        "post",
        "503",
    ),
    ("/dashboard/account", "get", "500"),
    ("/dashboard/account", "get", "503"),
    ("/dashboard/account", "post", "400"),
    ("/dashboard/account", "post", "403"),
    ("/dashboard/account", "post", "413"),
    ("/dashboard/account", "post", "422"),
    ("/dashboard/account", "post", "500"),
    ("/dashboard/account", "post", "503"),
    ("/dashboard/keys", "get", "500"),
    ("/dashboard/keys", "get", "503"),
    ("/dashboard/keys", "post", "400"),
    ("/dashboard/keys", "post", "403"),
    ("/dashboard/keys", "post", "409"),
    ("/dashboard/keys", "post", "413"),
    ("/dashboard/keys", "post", "422"),
    ("/dashboard/keys", "post", "500"),
    ("/dashboard/keys", "post", "503"),
    ("/dashboard/keys/{id}/revoke", "post", "400"),
    ("/dashboard/keys/{id}/revoke", "post", "403"),
    ("/dashboard/keys/{id}/revoke", "post", "404"),
    ("/dashboard/keys/{id}/revoke", "post", "409"),
    ("/dashboard/keys/{id}/revoke", "post", "413"),
    ("/dashboard/keys/{id}/revoke", "post", "500"),
    ("/dashboard/keys/{id}/revoke", "post", "503"),
    ("/login", "get", "500"),
    ("/login", "get", "503"),
    ("/login", "post", "400"),
    ("/login", "post", "401"),
    ("/login", "post", "403"),
    ("/login", "post", "413"),
    ("/login", "post", "500"),
    ("/login", "post", "503"),
    ("/logout", "post", "400"),
    ("/logout", "post", "403"),
    ("/logout", "post", "413"),
    ("/logout", "post", "500"),
    ("/logout", "post", "503"),
    ("/r/{code}", "get", "404"),
    ("/r/{code}", "get", "410"),
    ("/r/{code}", "get", "503"),
    ("/r/{code}", "head", "404"),
    ("/r/{code}", "head", "410"),
    ("/r/{code}", "head", "503"),
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.unwrap()
}

/// Every (path, method, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                found.push((path.clone(), method.to_owned(), op));
            }
        }
    }
    found
}

/// Follows a local `$ref` (`#/components/...`), or returns the value itself.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            resolve(doc, doc.pointer(pointer).expect("the reference resolves"))
        }
        None => value,
    }
}

/// A component schema, with the parts of an `allOf` (a flattened struct) merged into one object.
fn schema(doc: &Value, name: &str) -> Value {
    let found = doc["components"]["schemas"][name].clone();
    let Some(parts) = found["allOf"].as_array() else {
        return found;
    };
    let mut merged = serde_json::json!({ "type": "object", "properties": {}, "required": [] });
    for part in parts {
        let part = resolve(doc, part);
        for (key, value) in part["properties"].as_object().into_iter().flatten() {
            merged["properties"][key] = value.clone();
        }
        for required in part["required"].as_array().into_iter().flatten() {
            merged["required"]
                .as_array_mut()
                .unwrap()
                .push(required.clone());
        }
    }
    merged
}

fn property_names(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// A real answer has only documented properties, and every required one.
fn assert_fits(what: &str, value: &Value, schema: &Value) {
    let documented = property_names(schema);
    let present = keys(value);
    assert!(
        present.is_subset(&documented),
        "{what}: undocumented {:?}",
        present.difference(&documented).collect::<Vec<_>>()
    );
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().unwrap();
        assert!(present.contains(name), "{what}: required {name} is missing");
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_describes_every_endpoint() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "reklama");

    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(path, method, _)| (path, method))
        .collect();
    let expected: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(path, method)| ((*path).to_owned(), (*method).to_owned()))
        .collect();
    assert_eq!(documented, expected);

    // Operation ids are unique, and every operation says what it answers.
    let mut ids = BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_owned()),
            "{method} {path}: duplicate id {id}"
        );
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no response"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn customer_endpoints_name_the_bearer_scheme_and_public_ones_do_not() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let (name, bearer) = schemes
        .iter()
        .find(|(_, s)| s["type"] == "http" && s["scheme"] == "bearer")
        .expect("an HTTP bearer scheme");
    assert!(bearer["bearerFormat"].as_str().unwrap().starts_with("rk_"));

    for (path, method, op) in operations(&doc) {
        let secured = op["security"]
            .as_array()
            .is_some_and(|reqs| reqs.iter().any(|r| r.get(name).is_some()));
        let customer = path.starts_with("/api/v1/") && path != "/api/v1/serve";
        assert_eq!(
            secured, customer,
            "{method} {path}: security {}",
            op["security"]
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_serve_operation_documents_its_parameters_and_an_answer() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let serve = &doc["paths"]["/api/v1/serve"]["get"];
    let params: Vec<&Value> = serve["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| resolve(&doc, p))
        .collect();
    let named: BTreeSet<&str> = params
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        named.is_superset(&BTreeSet::from(["count", "genres", "lang", "user_id"])),
        "{named:?}"
    );
    let user_id = params.iter().find(|p| p["name"] == "user_id").unwrap();
    assert_eq!(user_id["required"], true);
    let count = params.iter().find(|p| p["name"] == "count").unwrap();
    assert_eq!(count["schema"]["minimum"], 1);

    // Examples of the main answers: a served card, a created advert, a report, a validation
    // error with its fields.
    let answer = resolve(
        &doc,
        &serve["responses"]["200"]["content"]["application/json"]["schema"],
    );
    assert_eq!(answer["example"]["adverts"].as_array().unwrap().len(), 1);
    assert!(schema(&doc, "AdvertView")["example"]["tracked_url"].is_string());
    let report = &doc["paths"]["/api/v1/adverts/{id}/report"]["get"]["responses"]["200"];
    assert!(report["content"]["application/json"]["example"]["series"].is_array());
    assert!(report["content"]["text/csv"].is_object());
    let invalid = &doc["paths"]["/api/v1/adverts"]["post"]["responses"]["422"]["content"]["application/json"]
        ["example"];
    assert_eq!(invalid["error"]["code"], "validation_failed");
    assert!(!invalid["error"]["fields"].as_array().unwrap().is_empty());

    // Genre is the closed set of 15 canonical names.
    let genre = schema(&doc, "Genre");
    let genres = genre["enum"].as_array().unwrap();
    assert_eq!(genres.len(), 15);
    assert!(genres.contains(&Value::from("real_estate")));
    app.stop().await;
}

#[tokio::test]
async fn every_error_answer_refers_to_the_one_error_schema() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let error = schema(&doc, "Error");
    assert_eq!(property_names(&error), BTreeSet::from(["error".to_owned()]));
    let detail = resolve(&doc, &error["properties"]["error"]);
    assert_eq!(
        property_names(detail),
        BTreeSet::from(["code", "fields", "message", "status"].map(str::to_owned))
    );

    let mut exceptions = BTreeSet::new();
    let mut errors = 0;
    for (path, method, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().unwrap() {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            errors += 1;
            let response = resolve(&doc, response);
            let refers = response["content"]["application/json"]["schema"]["$ref"]
                == "#/components/schemas/Error";
            if !refers {
                exceptions.insert((path.clone(), method.clone(), status.clone()));
            } else {
                // The error format is the only content of an error answer in the format.
                assert_eq!(
                    response["content"].as_object().unwrap().len(),
                    1,
                    "{method} {path} {status}"
                );
            }
        }
    }
    assert!(errors > 50, "only {errors} error answers are documented");
    let expected: BTreeSet<(String, String, String)> = NOT_THE_ERROR_FORMAT
        .iter()
        .map(|(p, m, s)| ((*p).to_owned(), (*m).to_owned(), (*s).to_owned()))
        .collect();
    assert_eq!(exceptions, expected);

    // The statuses the API answers in the error format are all documented somewhere.
    let statuses: BTreeSet<String> = operations(&doc)
        .into_iter()
        .flat_map(|(_, _, op)| op["responses"].as_object().unwrap().keys().cloned())
        .collect();
    for status in [
        "400", "401", "403", "404", "409", "413", "415", "422", "500", "503",
    ] {
        assert!(statuses.contains(status), "{status} is documented nowhere");
    }
    app.stop().await;
}

#[tokio::test]
async fn documented_schemas_match_real_answers() {
    // A webhook on a closed loopback port: its deliveries fail at once, without leaving the host.
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.webhooks.allow_private_targets = true;
    })
    .await;
    let doc = document(&app).await;
    let key = app.customer_key("Acme").await;

    let advert = app.create_advert(&key).await;
    let view = schema(&doc, "AdvertView");
    assert_fits("advert", &advert, &view);
    // Optional fields of an advert are `null`, not left out.
    assert_eq!(keys(&advert), property_names(&view));

    let served: Value = eventually(Duration::from_secs(5), "the advert to be served", || {
        let request = app
            .client
            .get(app.url("/api/v1/serve?user_id=u-1&genres=travel&count=1"))
            .send();
        async move {
            let answer: Value = request.await.ok()?.json().await.ok()?;
            answer["adverts"].as_array()?.first().cloned()
        }
    })
    .await;
    assert_fits("card", &served, &schema(&doc, "Card"));

    let id = advert["id"].as_i64().unwrap();
    let (status, report) = app
        .get_json(&format!("/api/v1/adverts/{id}/report"), &key)
        .await;
    assert_eq!(status, 200);
    assert_fits("report", &report, &schema(&doc, "Report"));
    let (status, split) = app
        .get_json(&format!("/api/v1/adverts/{id}/report?by=placement"), &key)
        .await;
    assert_eq!(status, 200);
    assert_fits("report by placement", &split, &schema(&doc, "Report"));
    assert_fits(
        "placement share",
        &split["placements"][0],
        &schema(&doc, "PlacementCounts"),
    );
    assert_fits(
        "series point by placement",
        &split["series"][0],
        &schema(&doc, "Point"),
    );
    let (status, summary) = app.get_json("/api/v1/reports", &key).await;
    assert_eq!(status, 200);
    assert_fits("summary", &summary, &schema(&doc, "Summary"));
    assert_fits(
        "summary row",
        &summary["adverts"][0],
        &schema(&doc, "SummaryRow"),
    );
    let (status, list) = app.get_json("/api/v1/adverts", &key).await;
    assert_eq!(status, 200);
    assert_fits("advert list", &list, &schema(&doc, "AdvertList"));

    // Keys: the new key, the list and one of its keys, exactly as documented.
    let response = app
        .client
        .post(app.url("/api/v1/keys"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"scope": "read", "name": "docs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let made: Value = response.json().await.unwrap();
    let new_key = schema(&doc, "NewKey");
    assert_fits("new key", &made, &new_key);
    assert_eq!(keys(&made), property_names(&new_key));
    let (status, listed) = app.get_json("/api/v1/keys", &key).await;
    assert_eq!(status, 200);
    assert_fits("key list", &listed, &schema(&doc, "KeyList"));
    let view = schema(&doc, "KeyView");
    assert_fits("key", &listed["keys"][1], &view);
    assert_eq!(keys(&listed["keys"][1]), property_names(&view));
    let scopes = schema(&doc, "Scope");
    assert_eq!(scopes["enum"], serde_json::json!(["read", "write"]));
    let input = property_names(&schema(&doc, "NewKeyInput"));
    assert_eq!(
        input,
        BTreeSet::from(["name".to_owned(), "scope".to_owned()])
    );

    // An error with fields has exactly the documented shape.
    let response = app
        .client
        .get(app.url("/api/v1/serve?count=99"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let error_schema = schema(&doc, "Error");
    let detail = resolve(&doc, &error_schema["properties"]["error"]);
    assert_fits("error", &body, &schema(&doc, "Error"));
    assert_fits("error detail", &body["error"], detail);
    assert!(body["error"]["fields"].is_array());
    assert_fits(
        "field error",
        &body["error"]["fields"][0],
        &schema(&doc, "FieldError"),
    );

    // The documented input fields are the ones the parsers accept.
    let input = property_names(&schema(&doc, "AdvertInput"));
    let sent = keys(&crate::helpers::advert_json(&[]));
    assert!(sent.is_subset(&input));

    // Webhooks: the new one with its secret, the list, one, a change and the deliveries, exactly
    // as documented (optional fields are `null`, not left out).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let response = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"url": target, "events": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let made: Value = response.json().await.unwrap();
    let new_webhook = schema(&doc, "NewWebhook");
    assert_fits("new webhook", &made, &new_webhook);
    assert_eq!(keys(&made), property_names(&new_webhook));
    let hook = made["id"].as_str().unwrap().to_owned();
    let view = schema(&doc, "WebhookView");
    assert!(!property_names(&view).contains("secret"));
    let (status, listed) = app.get_json("/api/v1/webhooks", &key).await;
    assert_eq!(status, 200);
    assert_fits("webhook list", &listed, &schema(&doc, "WebhookList"));
    assert_fits("listed webhook", &listed["webhooks"][0], &view);
    assert_eq!(keys(&listed["webhooks"][0]), property_names(&view));
    let (status, one) = app
        .get_json(&format!("/api/v1/webhooks/{hook}"), &key)
        .await;
    assert_eq!(status, 200);
    assert_fits("webhook", &one, &view);
    assert_eq!(keys(&one), property_names(&view));
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/webhooks/{hook}")))
        .bearer_auth(&key)
        .json(&serde_json::json!({"events": ["advert.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let changed: Value = response.json().await.unwrap();
    assert_fits("changed webhook", &changed, &view);
    assert_eq!(keys(&changed), property_names(&view));
    app.create_advert(&key).await;
    let path = format!("/api/v1/webhooks/{hook}/deliveries");
    let list = eventually(Duration::from_secs(20), "a failed attempt", || async {
        let (status, list) = app.get_json(&path, &key).await;
        assert_eq!(status, 200);
        (list["deliveries"][0]["attempts"].as_i64() >= Some(1)).then_some(list)
    })
    .await;
    assert_fits("delivery list", &list, &schema(&doc, "DeliveryList"));
    let delivery = schema(&doc, "DeliveryView");
    assert_fits("delivery", &list["deliveries"][0], &delivery);
    assert_eq!(keys(&list["deliveries"][0]), property_names(&delivery));
    app.stop().await;
}

/// The `src` and `href` values of a page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for piece in html.split(attribute).skip(1) {
            if let Some((value, _)) = piece.split_once('"') {
                found.push(value.to_owned());
            }
        }
    }
    found
}

#[tokio::test]
async fn the_docs_page_and_every_file_it_uses_come_from_the_binary() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .expect("a script-src directive");
    assert_eq!(script_src, "script-src 'self'");
    assert!(!csp.contains("unsafe-"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script>"), "no inline script");

    let assets = references(&html);
    assert!(
        assets.iter().filter(|a| a.ends_with(".js")).count() >= 2,
        "{assets:?}"
    );
    assert!(assets.iter().any(|a| a.ends_with(".css")), "{assets:?}");
    for asset in &assets {
        assert!(
            asset.starts_with('/') && !asset.starts_with("//"),
            "{asset} is not on this server"
        );
        let response = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty(), "{asset}");
        if asset.ends_with(".js") {
            assert!(kind.contains("javascript"), "{asset}: {kind}");
        } else if asset.ends_with(".css") {
            assert!(kind.starts_with("text/css"), "{asset}: {kind}");
        }
    }

    // The script that starts the UI points it at this server's document.
    let initializer = app.get_text("/docs/swagger-initializer.js").await;
    assert!(initializer.contains("\"/openapi.json\""), "{initializer}");
    assert!(!initializer.contains("petstore"));

    let missing = app
        .client
        .get(app.url("/docs/no-such-file.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    app.stop().await;
}

//! The decision endpoint, end to end.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use diesel::prelude::*;
use futures_util::StreamExt;
use reklama::main_app::Settings;
use reklama::platform::cloud::{CloudError, CloudSettings, CloudStore, ObjectCloud};
use reklama::platform::db::schema::adverts;
use reklama::platform::db::{DbError, now_ms};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::faults::{socket_address, through};
use crate::helpers::{
    TestApp, TestEnv, advert_json, empty_redis, eventually, field_codes, metric, pairs, png,
    random_suffix, redis_conn, redis_url, spawn_app, spawn_app_with,
};
use crate::proxy::Proxy;

/// How long a change may take to reach an instance (the refresh interval is at most 1 s), with
/// room for the requests that look.
const PROPAGATION_LIMIT: Duration = Duration::from_millis(1500);

/// An advert of `genre` with `extra` fields (caps, schedules): its id.
pub(crate) async fn create(app: &TestApp, key: &str, genre: &str, extra: Value) -> i64 {
    let mut body = advert_json(&png(64, 64));
    body["genre"] = json!(genre);
    if let Value::Object(map) = extra {
        for (k, v) in map {
            body[k] = v;
        }
    }
    let response = app.post_advert(key, &body).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

fn ids(body: &Value) -> Vec<i64> {
    body["adverts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["advert_id"].as_i64().unwrap())
        .collect()
}

/// The advert ids of a successful decision, in the order served.
async fn served_ids(app: &TestApp, query: &str) -> Vec<i64> {
    let (status, body) = app.serve(query).await;
    assert_eq!(status, 200, "{query}: {body}");
    ids(&body)
}

/// A user id nobody has used yet: no frequency history, no profile.
fn new_user() -> String {
    format!("user-{}", random_suffix())
}

/// Whether `id` is among everything a brand-new user may see right now.
async fn is_served(app: &TestApp, id: i64) -> bool {
    served_ids(app, &format!("user_id={}&count=10", new_user()))
        .await
        .contains(&id)
}

/// An RFC 3339 time `offset` from now (negative: in the past).
fn from_now(offset: time::Duration) -> String {
    (OffsetDateTime::now_utc() + offset)
        .format(&Rfc3339)
        .unwrap()
}

async fn wait_until_offloaded(app: &TestApp, key: &str, id: i64) {
    eventually(
        Duration::from_secs(10),
        "the clone in the cloud store",
        || async {
            let (_, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), key).await;
            (advert["offload_status"] == "done").then_some(())
        },
    )
    .await;
}

/// Changes an advert's status the way another process would: only in the database, with
/// `updated_at` moved so that change polling notices.
async fn set_status_in_database(app: &TestApp, id: i64, status: &'static str) {
    let updated = app
        .handles
        .db
        .run(move |conn| {
            diesel::update(adverts::table.find(id))
                .set((adverts::status.eq(status), adverts::updated_at.eq(now_ms())))
                .execute(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(updated, 1);
}

/// One of several instances on one environment: its own journal, and, with `redis_prefix`, a
/// shared Redis and a shared token secret (what a real deployment configures).
pub(crate) fn instance(
    env: &TestEnv,
    name: &str,
    redis_prefix: Option<&str>,
) -> impl FnOnce(&mut Settings) + use<> {
    let journal = env.dir.path().join(format!("journal-{name}"));
    let redis_prefix = redis_prefix.map(str::to_owned);
    move |s: &mut Settings| {
        s.tracking.journal_dir = journal.display().to_string();
        if let Some(prefix) = redis_prefix {
            s.redis.url = redis_url();
            s.redis.prefix = prefix;
            s.serving.token_secret = "shared-secret-of-this-deployment".into();
        }
    }
}

/// Instances "a" and "b" sharing Redis under `prefix`, each with `tweak` over [`instance`]'s
/// settings.
pub(crate) async fn two_instances(
    env: &Arc<TestEnv>,
    prefix: &str,
    tweak: impl Fn(&mut Settings),
) -> (TestApp, TestApp) {
    let mut apps = Vec::new();
    for name in ["a", "b"] {
        let shared = instance(env, name, Some(prefix));
        apps.push(
            spawn_app_with(env.clone(), None, |s: &mut Settings| {
                shared(s);
                tweak(s);
            })
            .await,
        );
    }
    let b = apps.pop().expect("two");
    let a = apps.pop().expect("two");
    (a, b)
}

#[tokio::test]
async fn a_card_carries_the_business_part_and_a_signed_click_url() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    let (status, body) = app.serve("user_id=u1&genres=travel").await;
    assert_eq!(status, 200);
    let card = &body["adverts"][0];
    assert_eq!(card["advert_id"].as_i64(), Some(id));
    assert_eq!(card["title"], "Summer in Sochi");
    assert_eq!(card["genre"], "travel");
    assert!(
        card["image_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/media/{id}/", app.address))
    );
    let click = card["click_url"].as_str().unwrap();
    assert!(
        click.starts_with(&format!("{}/r/", app.address)) && click.contains("?t="),
        "{click}"
    );
    assert_eq!(
        card["creative_id"], 1,
        "a single-title advert's one creative"
    );
    let keys: Vec<&String> = card.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Validation

#[tokio::test]
async fn a_request_without_user_id_is_422_naming_the_field() {
    let app = spawn_app().await;
    for query in ["genres=travel", "user_id=", "user_id=%20%20"] {
        let (status, body) = app.serve(query).await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(
            field_codes(&body),
            pairs(&[("user_id", "required")]),
            "{query}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_genre_is_422_listing_the_allowed_genres() {
    let app = spawn_app().await;
    let (status, body) = app.serve("user_id=u1&genres=travel,knitting").await;
    assert_eq!(status, 422);
    assert_eq!(field_codes(&body), pairs(&[("genres", "unknown_genre")]));
    let allowed: Vec<&str> = body["error"]["fields"][0]["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(allowed.len(), 15, "{allowed:?}");
    for genre in ["travel", "food", "sports", "other"] {
        assert!(allowed.contains(&genre), "{genre} in {allowed:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn count_must_be_a_whole_number_from_1_to_10() {
    let app = spawn_app().await;
    for count in ["0", "11", "-1", "two", "1.5"] {
        let (status, body) = app.serve(&format!("user_id=u1&count={count}")).await;
        assert_eq!(status, 422, "count={count}");
        assert_eq!(
            field_codes(&body),
            pairs(&[("count", "out_of_range")]),
            "count={count}"
        );
    }
    for count in ["1", "10"] {
        let (status, _) = app.serve(&format!("user_id=u1&count={count}")).await;
        assert_eq!(status, 200, "count={count}");
    }
    app.stop().await;
}

#[tokio::test]
async fn lang_must_be_a_two_letter_code() {
    let app = spawn_app().await;
    for lang in ["russian", "r", "r1"] {
        let (status, body) = app.serve(&format!("user_id=u1&lang={lang}")).await;
        assert_eq!(status, 422, "lang={lang}");
        let fields = field_codes(&body);
        assert_eq!(fields.len(), 1, "{body}");
        assert_eq!(fields[0].0, "lang");
    }
    assert_eq!(app.serve("user_id=u1&lang=RU").await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn every_problem_of_a_request_is_reported_together() {
    let app = spawn_app().await;
    let (status, body) = app.serve("genres=knitting&lang=russian&count=11").await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["message"], "4 fields are invalid");
    let fields: Vec<String> = field_codes(&body).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["count", "genres", "lang", "user_id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_genre_without_adverts_gives_an_empty_list_that_is_never_cached() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    create(&app, &key, "travel", json!({})).await;
    let response = app
        .client
        .get(app.url("/api/v1/serve?user_id=u1&genres=food"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "adverts": [] })
    );
    let response = app
        .client
        .get(app.url("/api/v1/serve?user_id=u1&genres=travel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Targeting

#[tokio::test]
async fn genres_filter_strictly_and_no_genres_means_any() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let travel = create(&app, &key, "travel", json!({})).await;
    let food = create(&app, &key, "food", json!({})).await;
    let sports = create(&app, &key, "sports", json!({})).await;
    for _ in 0..20 {
        let user = new_user();
        assert_eq!(
            served_ids(&app, &format!("user_id={user}&genres=travel&count=10")).await,
            [travel]
        );
        let mut both =
            served_ids(&app, &format!("user_id={user}&genres=travel,food&count=10")).await;
        both.sort_unstable();
        assert_eq!(both, [travel, food]);
        let one = served_ids(&app, &format!("user_id={}&genres=food,travel", new_user())).await;
        assert!(one == [travel] || one == [food], "{one:?}");
    }
    let mut any = served_ids(&app, &format!("user_id={}&count=10", new_user())).await;
    any.sort_unstable();
    assert_eq!(any, [travel, food, sports]);
    // Over many single draws without genres, every genre turns up.
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        seen.extend(served_ids(&app, &format!("user_id={}", new_user())).await);
    }
    assert_eq!(seen, BTreeSet::from([travel, food, sports]));
    app.stop().await;
}

#[tokio::test]
async fn count_gives_that_many_distinct_adverts_but_never_more_than_are_eligible() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let mut travel = Vec::new();
    for _ in 0..4 {
        travel.push(create(&app, &key, "travel", json!({})).await);
    }
    create(&app, &key, "food", json!({})).await;
    for _ in 0..20 {
        let three = served_ids(
            &app,
            &format!("user_id={}&genres=travel&count=3", new_user()),
        )
        .await;
        assert_eq!(three.len(), 3, "{three:?}");
        let distinct: BTreeSet<i64> = three.iter().copied().collect();
        assert_eq!(distinct.len(), 3, "{three:?}");
        assert!(distinct.iter().all(|id| travel.contains(id)), "{three:?}");
    }
    let mut all = served_ids(
        &app,
        &format!("user_id={}&genres=travel&count=10", new_user()),
    )
    .await;
    all.sort_unstable();
    assert_eq!(all, travel);
    assert_eq!(
        served_ids(&app, &format!("user_id={}&count=10", new_user()))
            .await
            .len(),
        5
    );
    app.stop().await;
}

#[tokio::test]
async fn an_advert_in_a_language_reaches_that_language_and_requests_without_one_only() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let russian = create(&app, &key, "travel", json!({ "lang": "ru" })).await;
    let neutral = create(&app, &key, "travel", json!({})).await;
    let sorted = |mut v: Vec<i64>| {
        v.sort_unstable();
        v
    };
    for _ in 0..5 {
        let ru = served_ids(&app, &format!("user_id={}&lang=ru&count=10", new_user())).await;
        assert_eq!(sorted(ru), sorted(vec![russian, neutral]));
        let none = served_ids(&app, &format!("user_id={}&count=10", new_user())).await;
        assert_eq!(sorted(none), sorted(vec![russian, neutral]));
        let en = served_ids(&app, &format!("user_id={}&lang=en&count=10", new_user())).await;
        assert_eq!(en, [neutral]);
        let de = served_ids(
            &app,
            &format!("user_id={}&lang=de&genres=travel", new_user()),
        )
        .await;
        assert_eq!(de, [neutral]);
    }
    // Upper case is the same language.
    let upper = served_ids(&app, &format!("user_id={}&lang=RU&count=10", new_user())).await;
    assert_eq!(sorted(upper), sorted(vec![russian, neutral]));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Schedule

#[tokio::test]
async fn only_adverts_whose_window_contains_now_are_served() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let hour = time::Duration::hours(1);
    let _future = create(&app, &key, "travel", json!({ "starts_at": from_now(hour) })).await;
    let _past = create(
        &app,
        &key,
        "travel",
        json!({ "starts_at": from_now(-2 * hour), "ends_at": from_now(-hour) }),
    )
    .await;
    let _ended = create(&app, &key, "travel", json!({ "ends_at": from_now(-hour) })).await;
    let current = create(
        &app,
        &key,
        "travel",
        json!({ "starts_at": from_now(-hour), "ends_at": from_now(hour) }),
    )
    .await;
    let open = create(
        &app,
        &key,
        "travel",
        json!({ "starts_at": from_now(-hour) }),
    )
    .await;
    for _ in 0..5 {
        let mut now = served_ids(&app, &format!("user_id={}&count=10", new_user())).await;
        now.sort_unstable();
        assert_eq!(now, [current, open]);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_schedule_starts_and_ends_on_its_own_without_any_change() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let soon = Duration::from_millis(2500);
    let boundary = Instant::now() + soon;
    let at_boundary = from_now(time::Duration::try_from(soon).unwrap());
    let starting = create(&app, &key, "travel", json!({ "starts_at": at_boundary })).await;
    let ending = create(&app, &key, "travel", json!({ "ends_at": at_boundary })).await;
    assert_eq!(
        served_ids(&app, &format!("user_id={}&count=10", new_user())).await,
        [ending]
    );
    assert!(
        Instant::now() < boundary,
        "the first look came too late to see the old state"
    );
    tokio::time::sleep_until((boundary + Duration::from_millis(200)).into()).await;
    assert_eq!(
        served_ids(&app, &format!("user_id={}&count=10", new_user())).await,
        [starting]
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Frequency caps

#[tokio::test]
async fn a_user_sees_one_advert_at_most_three_times_a_day_and_others_still_see_it() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    for n in 1..=3 {
        assert_eq!(
            served_ids(&app, "user_id=alice").await,
            [id],
            "impression {n}"
        );
    }
    for _ in 0..3 {
        let (status, body) = app.serve("user_id=alice").await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({ "adverts": [] }));
    }
    assert_eq!(served_ids(&app, "user_id=bob").await, [id]);
    // A second advert has its own count for the same user.
    let other = create(&app, &key, "food", json!({})).await;
    for _ in 0..3 {
        assert_eq!(served_ids(&app, "user_id=alice&count=10").await, [other]);
    }
    assert_eq!(
        served_ids(&app, "user_id=alice&count=10").await,
        Vec::<i64>::new()
    );
    app.stop().await;
}

#[tokio::test]
async fn the_frequency_cap_follows_the_setting() {
    let app = spawn_app_with(TestEnv::new(), None, |s| s.serving.frequency_cap = 2).await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    assert_eq!(served_ids(&app, "user_id=alice").await, [id]);
    assert_eq!(served_ids(&app, "user_id=alice").await, [id]);
    assert_eq!(served_ids(&app, "user_id=alice").await, Vec::<i64>::new());
    assert_eq!(served_ids(&app, "user_id=bob").await, [id]);
    app.stop().await;
}

#[tokio::test]
async fn instances_sharing_redis_share_the_frequency_cap() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = two_instances(&env, &prefix, |_| {}).await;
    let key = a.customer_key("Acme").await;
    let id = create(&a, &key, "travel", json!({})).await;
    // B learns of the advert at its next catalogue poll (500 ms).
    eventually(PROPAGATION_LIMIT, "B knows the advert", || async {
        is_served(&b, id).await.then_some(())
    })
    .await;
    assert_eq!(served_ids(&a, "user_id=carol").await, [id]);
    assert_eq!(served_ids(&a, "user_id=carol").await, [id]);
    // A pushes its counts at its next sync; B reads a user it has not seen from Redis.
    a.synced().await;
    assert_eq!(
        served_ids(&b, "user_id=carol").await,
        [id],
        "the third impression"
    );
    for _ in 0..3 {
        assert_eq!(served_ids(&b, "user_id=carol").await, Vec::<i64>::new());
    }
    assert_eq!(served_ids(&b, "user_id=dave").await, [id], "another user");
    // B read carol's history once (found) and each new user's (absent: nothing pushed).
    let text = b.get_text("/metrics").await;
    let reads = |kind, result| user_state_reads(&text, kind, result);
    assert_eq!(reads("frequency", "found"), Some(1.0), "{text}");
    assert!(reads("frequency", "absent") >= Some(2.0), "{text}");
    assert_eq!(reads("frequency", "failed"), Some(0.0), "{text}");
    // Requests without genres read the profile too; nobody clicked, so none was found.
    assert_eq!(reads("profiles", "found"), Some(0.0), "{text}");
    assert!(reads("profiles", "absent") >= Some(2.0), "{text}");
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

/// `reklama_user_state_reads_total{kind, result}` in a `/metrics` page.
fn user_state_reads(text: &str, kind: &str, result: &str) -> Option<f64> {
    metric(
        text,
        "reklama_user_state_reads_total",
        &[("kind", kind), ("result", result)],
    )
}

/// B cannot reach Redis when carol first comes to it, so it serves her from what it knows (a
/// third impression, after A's two). Once Redis answers again, B reads her history at her next
/// serve instead of keeping its own: A's two and B's one reach the cap. A, which holds carol,
/// learns of B's impression at its own next push for her (its append answers a length it did
/// not expect): one impression more at most, then A reads her again and holds the cap too.
#[tokio::test]
async fn a_user_whose_history_could_not_be_read_is_read_again_once_redis_answers() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let direct = url::Url::parse(&redis_url()).unwrap();
    let proxy = Proxy::start(socket_address(&direct, 6379)).await;
    let proxied = through(&direct, &proxy);
    let a = spawn_app_with(env.clone(), None, instance(&env, "a", Some(&prefix))).await;
    let b = spawn_app_with(env.clone(), None, {
        let shared = instance(&env, "b", Some(&prefix));
        move |s: &mut Settings| {
            shared(s);
            s.redis.url = proxied;
            s.redis.timeout_ms = 300;
        }
    })
    .await;
    let key = a.customer_key("Acme").await;
    let id = create(&a, &key, "travel", json!({})).await;
    eventually(PROPAGATION_LIMIT, "B knows the advert", || async {
        is_served(&b, id).await.then_some(())
    })
    .await;
    for n in 1..=2 {
        assert_eq!(
            served_ids(&a, "user_id=carol").await,
            [id],
            "impression {n}"
        );
    }
    a.synced().await;
    proxy.set_down(true);
    assert_eq!(
        served_ids(&b, "user_id=carol").await,
        [id],
        "B serves by what it knows"
    );
    proxy.set_down(false);
    let reads = |text: &str, result| user_state_reads(text, "frequency", result).unwrap_or(0.0);
    let text = b.get_text("/metrics").await;
    assert!(reads(&text, "failed") >= 1.0, "{text}");
    // Other users tell when B reads from Redis again (after its quiet period, one deadline).
    let absent = reads(&text, "absent");
    eventually(
        Duration::from_secs(5),
        "B reads from Redis again",
        || async {
            is_served(&b, id).await;
            (reads(&b.get_text("/metrics").await, "absent") > absent).then_some(())
        },
    )
    .await;
    assert_eq!(served_ids(&b, "user_id=carol").await, Vec::<i64>::new());
    b.synced().await;
    assert_eq!(
        served_ids(&a, "user_id=carol").await,
        [id],
        "A has not pushed for carol since B's impression"
    );
    a.synced().await;
    for _ in 0..3 {
        assert_eq!(served_ids(&a, "user_id=carol").await, Vec::<i64>::new());
        assert_eq!(served_ids(&b, "user_id=carol").await, Vec::<i64>::new());
    }
    let text = b.get_text("/metrics").await;
    assert!(reads(&text, "found") >= 1.0, "carol read again: {text}");
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

/// What an instance pushes is, per user, one string of records (advert, window start,
/// impressions) that expires with the frequency window: several users and several adverts each
/// within one push, each count once, each window starting at its first impression.
#[tokio::test]
async fn pushed_frequency_counts_are_one_expiring_string_per_user() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let app = spawn_app_with(env.clone(), None, {
        let shared = instance(&env, "a", Some(&prefix));
        move |s: &mut Settings| {
            shared(s);
            s.serving.frequency_window_secs = 600;
        }
    })
    .await;
    let key = app.customer_key("Acme").await;
    let travel = create(&app, &key, "travel", json!({})).await;
    let food = create(&app, &key, "food", json!({})).await;
    let started = now_ms() / 1000;
    for (query, expected) in [
        ("user_id=erin&genres=travel", travel),
        ("user_id=erin&genres=travel", travel),
        ("user_id=erin&genres=food", food),
        ("user_id=frank&genres=travel", travel),
    ] {
        assert_eq!(
            served_ids(&app, &format!("{query}&count=1")).await,
            [expected],
            "{query}"
        );
    }
    app.synced().await;
    let pushed = now_ms() / 1000 + 1;
    assert!(
        crate::helpers::keys_matching(&format!("{prefix}fc:*"))
            .await
            .is_empty()
    );
    let keys = crate::helpers::keys_matching(&format!("{prefix}fq:*")).await;
    assert_eq!(keys.len(), 2, "one string per user: {keys:?}");
    let mut conn = redis_conn().await;
    let mut users = Vec::new();
    for key in &keys {
        let bytes: Vec<u8> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // A window and a sixteenth: 637.5 s.
        assert!(
            (600..=637).contains(&ttl),
            "{key} expires a window and a sixteenth after the push: TTL {ttl}"
        );
        let mut counts: HashMap<i64, u64> = HashMap::new();
        for (advert, start, count) in frequency_records(&bytes) {
            assert!(
                (started..=pushed).contains(&i64::from(start)),
                "window start {start} between {started} and {pushed}"
            );
            *counts.entry(advert).or_default() += u64::from(count);
        }
        let mut counts: Vec<(i64, u64)> = counts.into_iter().collect();
        counts.sort();
        users.push(counts);
    }
    users.sort();
    let mut erin = vec![(travel, 2), (food, 1)];
    erin.sort();
    let mut expected = vec![erin, vec![(travel, 1)]];
    expected.sort();
    assert_eq!(users, expected);
    app.stop().await;
    empty_redis(&prefix).await;
}

/// A user's frequency string in Redis as (advert, window start in seconds, impressions): whole
/// records of 14 bytes, little-endian.
fn frequency_records(bytes: &[u8]) -> Vec<(i64, u32, u16)> {
    assert_eq!(bytes.len() % 14, 0, "whole records: {bytes:?}");
    bytes
        .chunks_exact(14)
        .map(|r| {
            (
                i64::from_le_bytes(r[..8].try_into().unwrap()),
                u32::from_le_bytes(r[8..12].try_into().unwrap()),
                u16::from_le_bytes(r[12..].try_into().unwrap()),
            )
        })
        .collect()
}

/// A user who keeps coming back keeps their string in Redis alive: a push sets its expiry a
/// window and a sixteenth from then, and the pushes within that sixteenth set none. Once most
/// of the string has expired, a push rewrites it with its live records; a string Redis lost is
/// given its expiry by the push that starts it again; and the cap counts on as before.
#[tokio::test]
async fn a_string_of_mostly_expired_records_is_rewritten_and_its_expiry_kept_a_window_ahead() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = two_instances(&env, &prefix, |s| {
        s.serving.frequency_window_secs = 600;
        s.serving.frequency_cap = 4;
    })
    .await;
    let key = a.customer_key("Acme").await;
    let travel = create(&a, &key, "travel", json!({})).await;
    eventually(PROPAGATION_LIMIT, "B knows the advert", || async {
        is_served(&b, travel).await.then_some(())
    })
    .await;
    // The users B was checked with have strings of their own: gina's is the one A adds.
    b.synced().await;
    let pattern = format!("{prefix}fq:*");
    let strings = || crate::helpers::keys_matching(&pattern);
    let before: BTreeSet<String> = strings().await.into_iter().collect();
    assert_eq!(served_ids(&a, "user_id=gina&count=1").await, [travel]);
    a.synced().await;
    let added: Vec<String> = strings()
        .await
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();
    let [string] = added.as_slice() else {
        panic!("one new string: {added:?}");
    };
    let mut conn = redis_conn().await;
    let read = |conn: &mut redis::aio::MultiplexedConnection| {
        let (string, mut conn) = (string.clone(), conn.clone());
        async move {
            let bytes: Vec<u8> = redis::cmd("GET")
                .arg(&string)
                .query_async(&mut conn)
                .await
                .unwrap();
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&string)
                .query_async(&mut conn)
                .await
                .unwrap();
            (bytes, ttl)
        }
    };
    // A window and a sixteenth, in milliseconds.
    let expiry = 637_500;
    let (live, _) = read(&mut conn).await;
    assert_eq!(live.len(), 14, "one record");
    // 40 records whose windows ended long ago, then the live one; expiring in 30 s.
    let long_ago = u32::try_from(now_ms() / 1000 - 10_000).unwrap();
    let mut held = Vec::new();
    for _ in 0..40 {
        held.extend_from_slice(&travel.to_le_bytes());
        held.extend_from_slice(&long_ago.to_le_bytes());
        held.extend_from_slice(&1u16.to_le_bytes());
    }
    held.extend_from_slice(&live);
    let () = redis::cmd("SET")
        .arg(string)
        .arg(&held)
        .arg("EX")
        .arg(30)
        .query_async(&mut conn)
        .await
        .unwrap();
    // B reads gina's history (one live impression among 41 records) and shows her a second.
    assert_eq!(served_ids(&b, "user_id=gina&count=1").await, [travel]);
    b.synced().await;
    let (bytes, ttl) = read(&mut conn).await;
    let rewritten = frequency_records(&bytes);
    assert_eq!(rewritten.len(), 2, "the live record and B's: {rewritten:?}");
    assert!(
        rewritten
            .iter()
            .all(|&(advert, start, count)| advert == travel && start > long_ago && count == 1),
        "{rewritten:?}"
    );
    assert!(
        (expiry - 10_000..=expiry).contains(&ttl),
        "expires a window and a sixteenth after the push: PTTL {ttl}"
    );
    // A second later, B shows her a third: its own expiry keeps the string a window past this
    // push, so the push appends and leaves the expiry as it was.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (_, before) = read(&mut conn).await;
    assert_eq!(served_ids(&b, "user_id=gina&count=1").await, [travel]);
    b.synced().await;
    let (bytes, ttl) = read(&mut conn).await;
    assert_eq!(frequency_records(&bytes).len(), 3, "appended");
    assert!(
        ttl <= before && ttl >= expiry - 20_000,
        "the expiry set by the rewrite: PTTL {ttl}, {before} before the push"
    );
    // Redis loses the string: the push that starts it again sets its expiry.
    let () = redis::cmd("DEL")
        .arg(string)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(served_ids(&b, "user_id=gina&count=1").await, [travel]);
    b.synced().await;
    let (bytes, ttl) = read(&mut conn).await;
    assert_eq!(frequency_records(&bytes).len(), 1, "begun again");
    assert!(
        (expiry - 10_000..=expiry).contains(&ttl),
        "given an expiry: PTTL {ttl}"
    );
    // Four impressions in the window: the cap holds.
    assert_eq!(
        served_ids(&b, "user_id=gina&count=1").await,
        Vec::<i64>::new()
    );
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

// ---------------------------------------------------------------------------------------------
// Weighted rotation

#[tokio::test]
async fn adverts_rotate_in_proportion_to_their_weights() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let light = create(&app, &key, "travel", json!({ "weight": 1 })).await;
    let heavy = create(&app, &key, "travel", json!({ "weight": 3 })).await;
    let shared = &app;
    let draws: Vec<i64> = futures_util::stream::iter(0..800)
        .map(|i| async move { served_ids(shared, &format!("user_id=rotation-{i}&count=1")).await })
        .buffer_unordered(16)
        .map(|ids| {
            assert_eq!(ids.len(), 1);
            ids[0]
        })
        .collect()
        .await;
    let mut counts: HashMap<i64, u32> = HashMap::new();
    for id in draws {
        *counts.entry(id).or_default() += 1;
    }
    let heavy_share = f64::from(counts[&heavy]) / 800.0;
    // Expected 75 %; 65-85 % is more than six standard deviations (1.5 %) either side.
    assert!((0.65..=0.85).contains(&heavy_share), "{counts:?}");
    assert_eq!(counts[&heavy] + counts[&light], 800, "{counts:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Delivery caps

/// How many of `users` requests (one new user each) were served `id`.
async fn times_served(app: &TestApp, id: i64, users: usize) -> usize {
    let mut n = 0;
    for _ in 0..users {
        if served_ids(app, &format!("user_id={}&count=10", new_user()))
            .await
            .contains(&id)
        {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn max_impressions_stops_an_advert_after_exactly_that_many() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let capped = create(&app, &key, "travel", json!({ "max_impressions": 5 })).await;
    let free = create(&app, &key, "travel", json!({})).await;
    for n in 1..=5 {
        let mut both = served_ids(&app, &format!("user_id={}&count=10", new_user())).await;
        both.sort_unstable();
        assert_eq!(both, [capped, free], "impression {n}");
    }
    for _ in 0..10 {
        assert_eq!(
            served_ids(&app, &format!("user_id={}&count=10", new_user())).await,
            [free]
        );
    }
    assert_eq!(app.report(&key, capped).await["impressions"], 5);
    app.stop().await;
}

#[tokio::test]
async fn daily_max_impressions_stops_an_advert_for_the_day() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let capped = create(&app, &key, "travel", json!({ "daily_max_impressions": 3 })).await;
    assert_eq!(times_served(&app, capped, 12).await, 3);
    app.stop().await;
}

#[tokio::test]
async fn max_clicks_stops_an_advert_once_that_many_clicks_were_followed() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let capped = create(&app, &key, "travel", json!({ "max_clicks": 2 })).await;
    let first = app.cards("user_id=clicker-1").await;
    let second = app.cards("user_id=clicker-2").await;
    assert_eq!(first[0]["advert_id"], capped);
    assert_eq!(second[0]["advert_id"], capped);
    let response = app.follow(first[0]["click_url"].as_str().unwrap()).await;
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "https://example.com/offers/sochi?utm_source=reklama"
    );
    assert_eq!(times_served(&app, capped, 3).await, 3, "one click of two");
    assert_eq!(
        app.follow(second[0]["click_url"].as_str().unwrap())
            .await
            .status(),
        302
    );
    // The click is counted inside the redirect: the very next decision knows it.
    assert_eq!(times_served(&app, capped, 10).await, 0);
    let report = app.report(&key, capped).await;
    assert_eq!(report["clicks"], 2);
    app.stop().await;
}

#[tokio::test]
async fn a_capped_advert_stays_capped_after_an_unrelated_edit() {
    // Counters reach the database only when asked: the production default (5 s) leaves the
    // same gap, only shorter.
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.tracking.flush_interval_secs = 3600;
        s.tracking.flush_threshold = 1_000_000_000;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let capped = create(&app, &key, "travel", json!({ "max_impressions": 5 })).await;
    assert_eq!(times_served(&app, capped, 8).await, 5);
    assert_eq!(
        app.patch_advert(&key, capped, &json!({ "weight": 2 }))
            .await
            .0,
        200
    );
    assert_eq!(
        times_served(&app, capped, 8).await,
        0,
        "served past max_impressions after an edit"
    );
    assert_eq!(app.report(&key, capped).await["impressions"], 5);
    app.stop().await;
}

/// Each user served counts in the per-user state metrics, weighed as `serving.user_state_bytes`
/// counts it: 192 bytes of bookkeeping and room for four adverts of 16 bytes.
#[tokio::test]
async fn users_served_are_counted_in_the_user_state_metrics_by_the_bytes_they_take() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    create(&app, &key, "travel", json!({})).await;
    for n in 0..20 {
        let (status, _) = app.serve(&format!("user_id=state{n}&genres=travel")).await;
        assert_eq!(status, 200);
    }
    let text = app.get_text("/metrics").await;
    let frequency = [("kind", "frequency")];
    assert_eq!(
        metric(&text, "reklama_user_state_users", &frequency),
        Some(20.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "reklama_user_state_bytes", &frequency),
        Some(20.0 * (192.0 + 4.0 * 16.0))
    );
    // No clicks: no profiles.
    let profiles = [("kind", "profiles")];
    assert_eq!(
        metric(&text, "reklama_user_state_users", &profiles),
        Some(0.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn what_each_memory_cache_holds_is_in_the_metrics() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create(&app, &key, "travel", json!({})).await);
    }
    // Every advert served once: its plain card is then in memory.
    let mut cards = std::collections::BTreeMap::new();
    let mut user = 0;
    while cards.len() < ids.len() && user < 300 {
        user += 1;
        let (status, body) = app.serve(&format!("user_id=c{user}&genres=travel")).await;
        assert_eq!(status, 200);
        let card = body["adverts"][0].clone();
        cards.insert(card["advert_id"].as_i64().unwrap(), card);
    }
    assert_eq!(cards.len(), ids.len(), "every advert served");
    // One creative fetched and one tracked link followed.
    let first = &cards[&ids[0]];
    let image = app
        .client
        .get(first["image_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), 200);
    let image_bytes = image.bytes().await.unwrap().len();
    let clicked = app.follow(first["click_url"].as_str().unwrap()).await;
    assert_eq!(clicked.status(), 302);

    let text = app.get_text("/metrics").await;
    let of = |name: &str, cache: &str| metric(&text, name, &[("cache", cache)]);
    assert_eq!(of("reklama_cache_entries", "cards"), Some(3.0), "{text}");
    let card_bytes = of("reklama_cache_bytes", "cards").unwrap();
    assert!(
        (3.0 * 96.0..3.0 * 4096.0).contains(&card_bytes),
        "three cards weigh {card_bytes} bytes"
    );
    assert_eq!(of("reklama_cache_entries", "media"), Some(1.0));
    let media_bytes = of("reklama_cache_bytes", "media").unwrap();
    assert!(
        media_bytes > image_bytes as f64 && media_bytes < image_bytes as f64 + 256.0,
        "the creative of {image_bytes} bytes weighs {media_bytes}"
    );
    assert_eq!(of("reklama_cache_entries", "links"), Some(1.0));
    assert_eq!(of("reklama_cache_entries", "unknown_links"), Some(0.0));
    assert!(of("reklama_cache_entries", "full").is_some(), "{text}");
    // Caches bounded by a count have no weight to show.
    assert_eq!(of("reklama_cache_bytes", "links"), None);
    app.stop().await;
}

#[tokio::test]
async fn instances_sharing_redis_share_max_impressions() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = two_instances(&env, &prefix, |_| {}).await;
    let key = a.customer_key("Acme").await;
    let capped = create(&a, &key, "travel", json!({ "max_impressions": 6 })).await;
    // B serves the advert once it has polled the catalogue and loaded the advert's totals.
    eventually(PROPAGATION_LIMIT, "B serves the advert", || async {
        is_served(&b, capped).await.then_some(())
    })
    .await;
    // B pushes its impression, then A reads the shared total back.
    b.synced().await;
    a.synced().await;
    assert_eq!(times_served(&a, capped, 10).await, 5, "A after B's 1 of 6");
    a.synced().await;
    b.synced().await;
    assert_eq!(times_served(&b, capped, 5).await, 0, "B after A's 5");
    assert_eq!(times_served(&a, capped, 5).await, 0, "A after its own 5");
    let metrics = a.get_text("/metrics").await;
    let rounds = metric(&metrics, "reklama_serving_syncs_total", &[]);
    assert!(rounds >= Some(4.0), "{rounds:?} sync rounds in the metrics");
    assert_eq!(
        metric(&metrics, "reklama_serving_sync_failures_total", &[]),
        Some(0.0)
    );
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn a_cap_cleared_and_set_again_is_judged_against_every_impression_served_meanwhile() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let capped = create(&app, &key, "travel", json!({ "max_impressions": 10 })).await;
    assert_eq!(times_served(&app, capped, 5).await, 5);
    let (status, body) = app
        .patch_advert(&key, capped, &json!({ "max_impressions": null }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(times_served(&app, capped, 20).await, 20, "uncapped");
    let (status, body) = app
        .patch_advert(&key, capped, &json!({ "max_impressions": 10 }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        times_served(&app, capped, 10).await,
        0,
        "25 were served: a cap of 10 is long reached"
    );
    let (status, body) = app
        .patch_advert(&key, capped, &json!({ "max_impressions": 28 }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(times_served(&app, capped, 10).await, 3, "raised to 28");
    assert_eq!(app.report(&key, capped).await["impressions"], 28);
    app.stop().await;
}

#[tokio::test]
async fn an_advert_capped_for_the_first_time_counts_what_it_was_served_before() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let advert = create(&app, &key, "travel", json!({})).await;
    assert_eq!(times_served(&app, advert, 7).await, 7);
    let (status, body) = app
        .patch_advert(&key, advert, &json!({ "max_impressions": 9 }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(times_served(&app, advert, 10).await, 2);
    assert_eq!(app.report(&key, advert).await["impressions"], 9);
    app.stop().await;
}

#[tokio::test]
async fn a_restarted_instance_keeps_every_cap_where_it_was() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let total = create(&app, &key, "travel", json!({ "max_impressions": 6 })).await;
    let daily = create(&app, &key, "food", json!({ "daily_max_impressions": 5 })).await;
    assert_eq!(times_served_in(&app, total, "travel", 4).await, 4);
    assert_eq!(times_served_in(&app, daily, "food", 3).await, 3);
    let env = app.stop().await;
    let app = spawn_app_with(env, None, |_| {}).await;
    assert_eq!(
        times_served_in(&app, total, "travel", 5).await,
        2,
        "max_impressions 6, 4 before"
    );
    assert_eq!(
        times_served_in(&app, daily, "food", 5).await,
        2,
        "5 a day, 3 before"
    );
    app.stop().await;
}

/// How many of `users` brand-new users asking for `genre` were shown `id`.
async fn times_served_in(app: &TestApp, id: i64, genre: &str, users: usize) -> usize {
    let mut n = 0;
    for _ in 0..users {
        let query = format!("user_id={}&genres={genre}&count=10", new_user());
        if served_ids(app, &query).await.contains(&id) {
            n += 1;
        }
    }
    n
}

/// A serve of several cards missing from memory reads them from Redis side by side, in one
/// batch, not one round trip after another.
#[tokio::test]
async fn cards_missing_from_memory_are_read_from_redis_together() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let on_redis = instance(&env, "a", Some(&prefix));
    let app = spawn_app_with(env, None, |s| {
        on_redis(s);
        quiet(s);
        // No card stays in memory; no exchange through Redis while the serves are counted.
        s.serving.card_cache_bytes = 1;
        s.serving.sync_interval_ms = 3_600_000;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create(&app, &key, "travel", json!({})).await);
    }
    ids.sort_unstable();
    let all_four = || async {
        let mut served = served_ids(
            &app,
            &format!("user_id={}&genres=travel&count=4", new_user()),
        )
        .await;
        served.sort_unstable();
        served
    };
    // The first serve loads the cards from the database and leaves them in Redis.
    eventually(PROPAGATION_LIMIT, "the four adverts served", || async {
        (all_four().await == ids).then_some(())
    })
    .await;
    assert_eq!(
        crate::helpers::keys_matching(&format!("{prefix}card:*"))
            .await
            .len(),
        4
    );
    let round_trips = || async {
        let text = app.get_text("/metrics").await;
        metric(&text, "reklama_redis_round_trips_total", &[]).unwrap_or(0.0)
    };
    let before = round_trips().await;
    for _ in 0..5 {
        assert_eq!(all_four().await, ids);
    }
    // Each serve: the new user's history, then the four cards. One after another, the cards
    // alone would be 20 round trips.
    let used = round_trips().await - before;
    assert!(
        used <= 5.0 * 2.0 + 4.0,
        "5 serves of 4 cards took {used} round trips"
    );
    app.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn a_card_in_use_is_refreshed_before_it_expires_so_it_never_misses_memory() {
    let app = spawn_app_with(TestEnv::new(), None, |s| s.serving.card_cache_ttl_secs = 2).await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    assert!(is_served(&app, id).await);
    let misses = |text: &str| {
        metric(
            text,
            "reklama_cache_lookups_total",
            &[("cache", "cards"), ("tier", "memory"), ("result", "miss")],
        )
        .unwrap_or(0.0)
    };
    let before = misses(&app.get_text("/metrics").await);
    // Twice the card's life, served all along.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        assert!(is_served(&app, id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(misses(&app.get_text("/metrics").await), before);
    app.stop().await;
}

/// Waits until `app` serves `advert` (it has polled the catalogue and loaded the advert's
/// totals): one impression.
async fn until_served(app: &TestApp, advert: i64, what: &str) {
    eventually(PROPAGATION_LIMIT, what, || async {
        is_served(app, advert).await.then_some(())
    })
    .await;
}

/// A new advert of `key`'s capped at `max_impressions`.
async fn capped_advert(app: &TestApp, key: &str, max_impressions: u64) -> i64 {
    create(
        app,
        key,
        "travel",
        json!({ "max_impressions": max_impressions }),
    )
    .await
}

/// One instance on a Redis key prefix of its own, and an advert capped at `max_impressions`
/// that it serves (its first impression).
struct OnOne {
    a: TestApp,
    key: String,
    capped: i64,
    prefix: String,
}

async fn capped_on_one_instance(max_impressions: u64) -> OnOne {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let a = spawn_app_with(env.clone(), None, instance(&env, "a", Some(&prefix))).await;
    let key = a.customer_key("Acme").await;
    let capped = capped_advert(&a, &key, max_impressions).await;
    until_served(&a, capped, "A serves the advert").await;
    OnOne {
        a,
        key,
        capped,
        prefix,
    }
}

/// Two instances sharing Redis, and an advert capped at `max_impressions` that B serves (its
/// first impression).
struct Capped {
    a: TestApp,
    b: TestApp,
    key: String,
    capped: i64,
    prefix: String,
}

async fn capped_on_two_instances(max_impressions: u64) -> Capped {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = two_instances(&env, &prefix, |_| {}).await;
    let key = a.customer_key("Acme").await;
    let capped = capped_advert(&a, &key, max_impressions).await;
    until_served(&b, capped, "B serves the advert").await;
    Capped {
        a,
        b,
        key,
        capped,
        prefix,
    }
}

/// Serves `n` brand-new users on `app` at once; how many were shown `id`.
async fn served_at_once(app: &TestApp, id: i64, n: usize) -> usize {
    let requests = (0..n).map(|_| is_served(app, id));
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .filter(|served| *served)
        .count()
}

#[tokio::test]
async fn instances_serving_a_capped_advert_at_once_never_pass_the_cap_and_reach_it() {
    let Capped {
        a,
        b,
        key,
        capped,
        prefix,
    } = capped_on_two_instances(40).await;
    let mut served = 1;
    // Bursts of 60 requests on each instance at once, until neither has anything left to give.
    for burst in 0..10 {
        let (on_a, on_b) = tokio::join!(
            served_at_once(&a, capped, 60),
            served_at_once(&b, capped, 60)
        );
        served += on_a + on_b;
        assert!(
            served <= 40,
            "burst {burst}: {served} served for a cap of 40"
        );
        if served == 40 {
            break;
        }
        a.synced().await;
        b.synced().await;
    }
    assert_eq!(served, 40, "the whole budget is delivered");
    a.synced().await;
    b.synced().await;
    assert_eq!(served_at_once(&a, capped, 20).await, 0);
    assert_eq!(served_at_once(&b, capped, 20).await, 0);
    assert_eq!(a.report(&key, capped).await["impressions"], 40);
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn redis_losing_the_delivery_totals_resets_no_cap() {
    let Capped {
        a,
        b,
        key,
        capped,
        prefix,
    } = capped_on_two_instances(20).await;
    let mut served = 1 + times_served(&a, capped, 7).await + times_served(&b, capped, 7).await;
    assert_eq!(served, 15);
    // The counts are in the database (B's report moves B's buffer out first) and Redis has
    // acknowledged every instance's totals; then Redis loses everything this deployment kept
    // there. (What an instance counted that Redis had not acknowledged yet when it lost its data
    // is counted twice: docs/ARCHITECTURE.md, "Counting guarantees".)
    b.report(&key, capped).await;
    assert_eq!(a.report(&key, capped).await["impressions"], 15);
    a.synced().await;
    b.synced().await;
    empty_redis(&prefix).await;
    // Each instance finds the totals gone at its next round and seeds them from the ledger.
    a.synced().await;
    b.synced().await;
    for _ in 0..6 {
        served += times_served(&a, capped, 11).await + times_served(&b, capped, 11).await;
        assert!(served <= 20, "{served} served for a cap of 20");
        a.synced().await;
        b.synced().await;
    }
    assert_eq!(served, 20);
    assert_eq!(a.report(&key, capped).await["impressions"], 20);
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn a_lease_whose_holder_stopped_renewing_counts_as_delivered_and_a_live_one_is_respected() {
    let OnOne {
        a, capped, prefix, ..
    } = capped_on_one_instance(20).await;
    assert_eq!(times_served(&a, capped, 2).await, 2);
    a.synced().await;
    // Two other instances hold leases: one was killed (its lease expired), one is alive.
    let mut conn = redis_conn().await;
    let now = now_ms();
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}live:{capped}"))
        .arg("l:killed")
        .arg(5)
        .arg("e:killed")
        .arg(now - 1000)
        .arg("l:alive")
        .arg(4)
        .arg("e:alive")
        .arg(now + 60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut served = 0;
    for _ in 0..4 {
        served += times_served(&a, capped, 10).await;
        a.synced().await;
    }
    assert_eq!(
        served,
        20 - 3 - 5 - 4,
        "3 served, 5 counted as delivered, 4 held"
    );
    let imp: u64 = redis::cmd("HGET")
        .arg(format!("{prefix}live:{capped}"))
        .arg("imp")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(imp, 3 + 5 + 8);
    a.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn shared_totals_that_fell_behind_the_database_are_raised_to_it_and_never_created_from_it() {
    let OnOne {
        a,
        key,
        capped,
        prefix,
    } = capped_on_one_instance(10).await;
    assert_eq!(times_served(&a, capped, 3).await, 3);
    assert_eq!(a.report(&key, capped).await["impressions"], 4);
    a.synced().await;
    // The shared total lost three impressions (an instance that died before reporting them;
    // its counter pipeline had pushed them, so the database has them).
    let hash = format!("{prefix}live:{capped}");
    let mut conn = redis_conn().await;
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg("imp")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    a.handles.serving.reconcile_delivery().await.unwrap();
    let imp: u64 = redis::cmd("HGET")
        .arg(&hash)
        .arg("imp")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(imp, 4);
    let mut served = 0;
    for _ in 0..3 {
        served += times_served(&a, capped, 8).await;
        a.synced().await;
    }
    assert_eq!(served, 6, "4 of 10 were served");
    // Totals read without settling the ledger never seed a missing hash.
    let _: () = redis::cmd("DEL")
        .arg(&hash)
        .query_async(&mut conn)
        .await
        .unwrap();
    a.handles.serving.reconcile_delivery().await.unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg(&hash)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists);
    a.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn an_instance_that_stops_gives_its_lease_back() {
    let Capped {
        a,
        b,
        capped,
        prefix,
        ..
    } = capped_on_two_instances(1000).await;
    // B serves steadily, so it holds a lease larger than what it served; then it stops.
    let on_b = 1 + served_at_once(&b, capped, 40).await;
    b.stop().await;
    let mut on_a = 0;
    for _ in 0..200 {
        let n = served_at_once(&a, capped, 50).await;
        on_a += n;
        if n == 0 {
            a.synced().await;
            let after_sync = served_at_once(&a, capped, 10).await;
            on_a += after_sync;
            if after_sync == 0 {
                break;
            }
        }
    }
    assert_eq!(
        on_a + on_b,
        1000,
        "A {on_a}, B {on_b}: B's unused lease came back"
    );
    a.stop().await;
    empty_redis(&prefix).await;
}

// ---------------------------------------------------------------------------------------------
// Impressions and clicks in reports

#[tokio::test]
async fn served_cards_are_impressions_and_followed_cards_clicks_in_the_report() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    let mut served = Vec::new();
    for n in 0..4 {
        let card = app.cards(&format!("user_id=reader-{n}")).await;
        assert_eq!(card.len(), 1);
        served.push(card[0]["click_url"].as_str().unwrap().to_owned());
    }
    let before = app.report(&key, id).await;
    assert_eq!(before["impressions"], 4);
    assert_eq!(before["clicks"], 0);
    assert_eq!(before["ctr"].as_f64(), Some(0.0));
    assert_eq!(app.follow(&served[2]).await.status(), 302);
    let after = app.report(&key, id).await;
    assert_eq!(after["impressions"], 4);
    assert_eq!(after["clicks"], 1);
    assert_eq!(after["duplicate_clicks"], 0);
    assert_eq!(after["ctr"].as_f64(), Some(0.25));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Personalization

/// Three travel and three food adverts, with a cap high enough that no user runs out.
async fn travel_and_food(app: &TestApp, key: &str) -> (Vec<i64>, Vec<i64>) {
    let mut travel = Vec::new();
    let mut food = Vec::new();
    for _ in 0..3 {
        travel.push(create(app, key, "travel", json!({})).await);
        food.push(create(app, key, "food", json!({})).await);
    }
    (travel, food)
}

#[tokio::test]
async fn clicks_steer_requests_without_genres_to_the_clicked_genre() {
    let app = spawn_app_with(TestEnv::new(), None, |s| s.serving.frequency_cap = 100).await;
    let key = app.customer_key("Acme").await;
    let (travel, _food) = travel_and_food(&app, &key).await;
    let picked = app.cards("user_id=traveller&genres=travel&count=2").await;
    assert_eq!(picked.len(), 2);
    for card in &picked {
        assert_eq!(
            app.follow(card["click_url"].as_str().unwrap())
                .await
                .status(),
            302
        );
    }
    for n in 0..10 {
        let ids = served_ids(&app, "user_id=traveller&count=1").await;
        assert_eq!(ids.len(), 1);
        assert!(
            travel.contains(&ids[0]),
            "request {n} gave {ids:?}, not travel {travel:?}"
        );
    }
    // Asking for more than the preferred genre has fills up from the rest.
    let five = served_ids(&app, "user_id=traveller&count=5").await;
    assert_eq!(five.len(), 5);
    assert_eq!(
        five.iter().filter(|id| travel.contains(id)).count(),
        3,
        "{five:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_click_on_one_instance_steers_what_another_serves_through_redis() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = two_instances(&env, &prefix, |s| s.serving.frequency_cap = 100).await;
    let key = a.customer_key("Acme").await;
    let (travel, _food) = travel_and_food(&a, &key).await;
    eventually(PROPAGATION_LIMIT, "B knows the adverts", || async {
        is_served(&b, travel[0]).await.then_some(())
    })
    .await;
    for card in a.cards("user_id=roamer&genres=travel&count=2").await {
        assert_eq!(
            a.follow(card["click_url"].as_str().unwrap()).await.status(),
            302
        );
    }
    // A pushes changed profiles at its next sync; B reads a user it has not seen from Redis.
    a.synced().await;
    for n in 0..10 {
        let ids = served_ids(&b, "user_id=roamer&count=1").await;
        assert_eq!(ids.len(), 1);
        assert!(
            travel.contains(&ids[0]),
            "request {n} on B gave {ids:?}, not travel {travel:?}"
        );
    }
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn a_user_without_clicks_gets_a_mix_of_genres() {
    let app = spawn_app_with(TestEnv::new(), None, |s| s.serving.frequency_cap = 100).await;
    let key = app.customer_key("Acme").await;
    let (travel, food) = travel_and_food(&app, &key).await;
    let (mut travel_seen, mut food_seen) = (0, 0);
    for _ in 0..40 {
        let ids = served_ids(&app, "user_id=newcomer&count=1").await;
        assert_eq!(ids.len(), 1);
        if travel.contains(&ids[0]) {
            travel_seen += 1;
        } else if food.contains(&ids[0]) {
            food_seen += 1;
        }
    }
    assert_eq!(travel_seen + food_seen, 40);
    assert!(
        travel_seen > 0 && food_seen > 0,
        "travel {travel_seen}, food {food_seen}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Click tokens

#[tokio::test]
async fn the_click_token_tells_users_apart_for_duplicate_detection() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    let anna = app.cards("user_id=anna").await[0]["click_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let boris = app.cards("user_id=boris").await[0]["click_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(anna, boris);
    // Same address, same browser, within the duplicate window: the token says who clicked.
    assert_eq!(app.follow(&anna).await.status(), 302);
    assert_eq!(app.follow(&boris).await.status(), 302);
    assert_eq!(app.follow(&anna).await.status(), 302);
    let report = app.report(&key, id).await;
    assert_eq!(report["clicks"], 2);
    assert_eq!(report["duplicate_clicks"], 1);
    assert_eq!(report["bot_clicks"], 0);
    app.stop().await;
}

/// The same URL with one character of its token's signature changed (the user and advert parts
/// stay as issued).
fn tampered(click_url: &str) -> String {
    let (base, token) = click_url.split_once("?t=").unwrap();
    let mut token = token.as_bytes().to_vec();
    assert_eq!(token.len(), 47, "35 bytes in unpadded base64");
    // Inside the MAC (bytes 25 to 34).
    token[38] = if token[38] == b'A' { b'B' } else { b'A' };
    format!("{base}?t={}", String::from_utf8(token).unwrap())
}

#[tokio::test]
async fn a_tampered_token_still_redirects_but_counts_as_an_untokened_click() {
    let app = spawn_app_with(TestEnv::new(), None, |s| s.serving.frequency_cap = 100).await;
    let key = app.customer_key("Acme").await;
    let travel = create(&app, &key, "travel", json!({})).await;
    let food = create(&app, &key, "food", json!({})).await;
    let card = app.cards("user_id=vera&genres=travel").await;
    let genuine = card[0]["click_url"].as_str().unwrap().to_owned();
    let forged = tampered(&genuine);
    assert_ne!(forged, genuine);
    let response = app.follow(&forged).await;
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "https://example.com/offers/sochi?utm_source=reklama"
    );
    // Without a valid token the visitor is its address and browser: the bare link from the
    // same browser is a repeat of that click...
    let (bare, _) = genuine.split_once('?').unwrap();
    assert_eq!(app.follow(bare).await.status(), 302);
    // ...while the genuine token is a different visitor (the user).
    assert_eq!(app.follow(&genuine).await.status(), 302);
    let counts = app.report(&key, travel).await;
    assert_eq!(counts["clicks"], 2);
    assert_eq!(counts["duplicate_clicks"], 1);
    // A forged click is attributed to nobody: the user it names gets no interest in its genre.
    let other = new_user();
    let other_card = app.cards(&format!("user_id={other}&genres=food")).await;
    let other_forged = tampered(other_card[0]["click_url"].as_str().unwrap());
    assert_eq!(app.follow(&other_forged).await.status(), 302);
    let mut genres = BTreeSet::new();
    for _ in 0..40 {
        genres.extend(served_ids(&app, &format!("user_id={other}")).await);
    }
    assert_eq!(genres, BTreeSet::from([travel, food]));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Propagation of changes

#[tokio::test]
async fn pausing_through_the_api_removes_an_advert_at_once_and_resuming_restores_it_at_once() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    let other = create(&app, &key, "travel", json!({})).await;
    assert!(is_served(&app, id).await);
    assert_eq!(
        app.patch_advert(&key, id, &json!({ "status": "paused" }))
            .await
            .0,
        200
    );
    for _ in 0..5 {
        assert_eq!(
            served_ids(&app, &format!("user_id={}&count=10", new_user())).await,
            [other]
        );
    }
    assert_eq!(
        app.patch_advert(&key, id, &json!({ "status": "active" }))
            .await
            .0,
        200
    );
    assert!(is_served(&app, id).await);
    assert_eq!(app.delete_advert(&key, id).await, 204);
    for _ in 0..5 {
        assert_eq!(
            served_ids(&app, &format!("user_id={}&count=10", new_user())).await,
            [other]
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_change_made_only_in_the_database_reaches_serving_within_a_second() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    assert!(is_served(&app, id).await);
    set_status_in_database(&app, id, "paused").await;
    eventually(PROPAGATION_LIMIT, "the paused advert to leave", || async {
        (!is_served(&app, id).await).then_some(())
    })
    .await;
    set_status_in_database(&app, id, "active").await;
    eventually(
        PROPAGATION_LIMIT,
        "the resumed advert to return",
        || async { is_served(&app, id).await.then_some(()) },
    )
    .await;
    set_status_in_database(&app, id, "deleted").await;
    eventually(PROPAGATION_LIMIT, "the deleted advert to leave", || async {
        (!is_served(&app, id).await).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_second_instance_sees_pause_resume_and_delete_within_a_second() {
    let env = TestEnv::new();
    let a = spawn_app_with(env.clone(), None, instance(&env, "a", None)).await;
    let b = spawn_app_with(env.clone(), None, instance(&env, "b", None)).await;
    let key = a.customer_key("Acme").await;
    let id = create(&a, &key, "travel", json!({})).await;
    eventually(PROPAGATION_LIMIT, "B to serve the new advert", || async {
        is_served(&b, id).await.then_some(())
    })
    .await;
    assert_eq!(
        a.patch_advert(&key, id, &json!({ "status": "paused" }))
            .await
            .0,
        200
    );
    assert!(
        !is_served(&a, id).await,
        "gone at once on the instance that paused it"
    );
    eventually(PROPAGATION_LIMIT, "B to drop the paused advert", || async {
        (!is_served(&b, id).await).then_some(())
    })
    .await;
    assert_eq!(
        a.patch_advert(&key, id, &json!({ "status": "active" }))
            .await
            .0,
        200
    );
    assert!(is_served(&a, id).await);
    eventually(
        PROPAGATION_LIMIT,
        "B to serve the resumed advert",
        || async { is_served(&b, id).await.then_some(()) },
    )
    .await;
    // A change made through B reaches A the same way.
    assert_eq!(b.delete_advert(&key, id).await, 204);
    assert!(!is_served(&b, id).await);
    eventually(
        PROPAGATION_LIMIT,
        "A to drop the deleted advert",
        || async { (!is_served(&a, id).await).then_some(()) },
    )
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_restarted_instance_serves_existing_adverts_on_its_first_request() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let mut created = vec![
        create(&app, &key, "travel", json!({})).await,
        create(&app, &key, "food", json!({})).await,
        create(&app, &key, "sports", json!({ "max_impressions": 100 })).await,
    ];
    let paused = create(&app, &key, "travel", json!({})).await;
    assert_eq!(
        app.patch_advert(&key, paused, &json!({ "status": "paused" }))
            .await
            .0,
        200
    );
    let env = app.stop().await;
    let app = spawn_app_with(env, None, |_| {}).await;
    let mut first = served_ids(&app, "user_id=first&count=10").await;
    first.sort_unstable();
    created.sort_unstable();
    assert_eq!(first, created);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The hot paths stay off the database

/// Background database work slowed down for measuring: the catalogue poll once a second, and
/// neither counter flushes, job polling nor event dispatch during a test.
fn quiet(s: &mut Settings) {
    s.serving.refresh_interval_ms = 1000;
    s.tracking.flush_interval_secs = 3600;
    s.tracking.flush_threshold = 1_000_000_000;
    s.jobs.poll_interval_ms = 3_600_000;
    s.events.poll_interval_ms = 3_600_000;
}

/// Checkouts that background loops may take in `elapsed`. With `quiet`, job workers and the
/// event dispatcher sleep for an hour once idle, counters are flushed only on request, and
/// Redis is not configured (so no sync work), which leaves two loops ticking once a second: the
/// catalogue poller (at most three checkouts a tick: the changes, the targeting masks and the
/// adverts changed) and the readiness check (one). A measurement lasting `elapsed` can contain
/// at most `elapsed / 1 s + 1` ticks of each, and the job worker that finished the set-up's
/// last job may still take two (finishing the job, looking for the next). Any checkout beyond
/// that came from the requests themselves: one a request would be 50.
fn background_allowance(elapsed: Duration) -> u64 {
    let ticks = u64::try_from(elapsed.as_millis() / 1000).unwrap() + 1;
    ticks * (3 + 1) + 2
}

/// Adverts created and cloned, with the job workers back to sleep.
async fn quiet_app_with_adverts() -> TestApp {
    let app = spawn_app_with(TestEnv::new(), None, quiet).await;
    let key = app.customer_key("Acme").await;
    let mut ids = Vec::new();
    for genre in ["travel", "food", "travel"] {
        ids.push(create(&app, &key, genre, json!({})).await);
    }
    for id in &ids {
        wait_until_offloaded(&app, &key, *id).await;
    }
    // The creatives are rendered by jobs of their own, which may outlast the clones.
    eventually(Duration::from_secs(60), "every job done", || async {
        let depth = app.handles.jobs.depth().await.ok()?;
        (depth.queued == 0 && depth.running == 0).then_some(())
    })
    .await;
    // The worker that finished the last job still looks for another.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app
}

#[tokio::test]
async fn warm_decisions_take_no_database_connection() {
    let app = quiet_app_with_adverts().await;
    assert_eq!(served_ids(&app, "user_id=warm-up&count=2").await.len(), 2);
    let before = app.handles.db.checkouts();
    let started = Instant::now();
    for n in 0..50 {
        let ids = served_ids(&app, &format!("user_id=hot-{n}&count=2")).await;
        assert_eq!(ids.len(), 2);
    }
    let elapsed = started.elapsed();
    let taken = app.handles.db.checkouts() - before;
    assert!(
        taken <= background_allowance(elapsed),
        "{taken} checkouts during 50 decisions in {elapsed:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn warm_redirects_take_no_database_connection() {
    let app = quiet_app_with_adverts().await;
    let mut click_urls = Vec::new();
    for n in 0..51 {
        let card = app
            .cards(&format!("user_id=clicker-{n}&genres=travel&count=1"))
            .await;
        click_urls.push(card[0]["click_url"].as_str().unwrap().to_owned());
    }
    // One click per link code warms the link cache.
    let mut warmed = BTreeSet::new();
    for url in &click_urls {
        let code = url
            .split("/r/")
            .nth(1)
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        if warmed.insert(code) {
            assert_eq!(app.follow(url).await.status(), 302);
        }
    }
    assert_eq!(warmed.len(), 2, "both travel adverts were served");
    let before = app.handles.db.checkouts();
    let started = Instant::now();
    for url in &click_urls[1..] {
        assert_eq!(app.follow(url).await.status(), 302);
    }
    let elapsed = started.elapsed();
    let taken = app.handles.db.checkouts() - before;
    assert!(
        taken <= background_allowance(elapsed),
        "{taken} checkouts during 50 redirects in {elapsed:?}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The full record

/// A real local store whose writes and reads can each be switched to fail.
struct SwitchedStore {
    inner: ObjectCloud,
    fail_puts: AtomicBool,
    fail_gets: AtomicBool,
    gets_done: AtomicU32,
}

impl SwitchedStore {
    fn new(dir: &std::path::Path, fail_puts: bool) -> Arc<Self> {
        let settings = CloudSettings {
            url: dir.display().to_string(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_allow_http: false,
            ..reklama::main_app::Settings::load_with(None, Vec::new())
                .unwrap()
                .cloud
        };
        Arc::new(Self {
            inner: ObjectCloud::from_settings(&settings).unwrap(),
            fail_puts: AtomicBool::new(fail_puts),
            fail_gets: AtomicBool::new(false),
            gets_done: AtomicU32::new(0),
        })
    }
}

#[async_trait]
impl CloudStore for SwitchedStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), CloudError> {
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(CloudError::Backend("injected outage".into()));
        }
        self.inner.put(key, bytes).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, CloudError> {
        if self.fail_gets.load(Ordering::SeqCst) {
            return Err(CloudError::Backend("injected outage".into()));
        }
        let result = self.inner.get(key).await;
        self.gets_done.fetch_add(1, Ordering::SeqCst);
        result
    }

    fn describe(&self) -> String {
        "switched test store".into()
    }
}

async fn get_full(app: &TestApp, key: &str, id: i64) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/v1/adverts/{id}/full")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_owner_gets_the_full_record_once_it_is_in_the_cloud_store_and_no_one_else_does() {
    let app = spawn_app().await;
    let owner = app.handles.customers.create("Acme").await.unwrap();
    let stranger = app.customer_key("Other").await;
    let id = create(
        &app,
        &owner.key,
        "food",
        json!({ "lang": "ru", "weight": 7 }),
    )
    .await;
    wait_until_offloaded(&app, &owner.key, id).await;
    let response = get_full(&app, &owner.key, id).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let full: Value = response.json().await.unwrap();
    assert_eq!(full["id"].as_i64(), Some(id));
    assert_eq!(full["customer_id"].as_i64(), Some(owner.customer.id.0));
    assert_eq!(full["title"], "Summer in Sochi");
    assert_eq!(full["genre"], "food");
    assert_eq!(full["lang"], "ru");
    assert_eq!(full["weight"], 7);
    assert_eq!(
        full["target_url"],
        "https://example.com/offers/sochi?utm_source=reklama"
    );
    let response = get_full(&app, &stranger, id).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    assert_eq!(get_full(&app, &owner.key, id + 1000).await.status(), 404);
    let anonymous = app
        .client
        .get(app.url(&format!("/api/v1/adverts/{id}/full")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn before_the_clone_exists_the_full_record_is_409_with_retry_after() {
    let env = TestEnv::new();
    let store = SwitchedStore::new(&env.cloud_dir(), true);
    let app = spawn_app_with(env, Some(store.clone()), |_| {}).await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    let response = get_full(&app, &key, id).await;
    assert_eq!(response.status(), 409);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_in_cloud_yet");
    // Serving it meanwhile is unaffected, and the missing record is looked for once, not on
    // every serve.
    let before = store.gets_done.load(Ordering::SeqCst);
    assert_eq!(served_ids(&app, "user_id=u1").await, [id]);
    eventually(
        Duration::from_secs(5),
        "the background prefetch",
        || async { (store.gets_done.load(Ordering::SeqCst) > before).then_some(()) },
    )
    .await;
    let looked_for = store.gets_done.load(Ordering::SeqCst);
    for n in 2..=10 {
        assert_eq!(served_ids(&app, &format!("user_id=u{n}")).await, [id]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.gets_done.load(Ordering::SeqCst), looked_for);
    app.stop().await;
}

#[tokio::test]
async fn a_served_advert_has_its_full_record_prefetched_so_a_cloud_outage_does_not_matter() {
    let env = TestEnv::new();
    let store = SwitchedStore::new(&env.cloud_dir(), false);
    let app = spawn_app_with(env, Some(store.clone()), |_| {}).await;
    let key = app.customer_key("Acme").await;
    let served = create(&app, &key, "travel", json!({})).await;
    let unserved = create(&app, &key, "food", json!({})).await;
    wait_until_offloaded(&app, &key, served).await;
    wait_until_offloaded(&app, &key, unserved).await;
    // Placement variants may read an original back from the store; let that work finish first.
    eventually(Duration::from_secs(30), "background jobs done", || async {
        let depth = app.handles.jobs.depth().await.ok()?;
        (depth.queued + depth.running == 0).then_some(())
    })
    .await;
    let baseline = store.gets_done.load(Ordering::SeqCst);
    assert_eq!(served_ids(&app, "user_id=u1&genres=travel").await, [served]);
    eventually(
        Duration::from_secs(5),
        "the background prefetch",
        || async { (store.gets_done.load(Ordering::SeqCst) == baseline + 1).then_some(()) },
    )
    .await;
    // The fetched bytes go into the cache right after the read returns.
    tokio::time::sleep(Duration::from_millis(200)).await;
    store.fail_gets.store(true, Ordering::SeqCst);
    let response = get_full(&app, &key, served).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["id"].as_i64(),
        Some(served)
    );
    // What was never served must come from the store, which is down.
    let response = get_full(&app, &key, unserved).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// CORS

#[tokio::test]
async fn only_configured_frontends_may_call_serve_from_a_browser() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.serving.cors_origins = vec!["https://news.example".into()];
    })
    .await;
    let key = app.customer_key("Acme").await;
    create(&app, &key, "travel", json!({})).await;
    let allowed = app
        .client
        .get(app.url("/api/v1/serve?user_id=u1"))
        .header("origin", "https://news.example")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://news.example"
    );
    let other = app
        .client
        .get(app.url("/api/v1/serve?user_id=u2"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        !other.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        other.headers()
    );
    let preflight = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            app.url("/api/v1/serve?user_id=u1"),
        )
        .header("origin", "https://news.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://news.example"
    );
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("GET"), "{methods}");
    app.stop().await;
}

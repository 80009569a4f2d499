//! Security at the edge: the text policy for what reaches publishers, secrets, sessions that
//! end, and multipart bodies bounded and authenticated before they are read.

use serde_json::{Value, json};

use crate::helpers::{advert_json, field_codes, png, spawn_app};

// ---- text policy -----------------------------------------------------------------------------

#[tokio::test]
async fn invisible_and_bidi_characters_in_titles_and_texts_are_refused_with_their_field() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let image = png(64, 64);
    for (field, value) in [
        ("title", "\u{202E}evil title"),
        ("title", "\u{200B}"),
        ("title", "ok\u{200B}title"),
        ("title", "\u{2066}isolated\u{2069}"),
        ("title", "mark\u{200F}ed"),
        ("title", "arabic\u{061C}mark"),
        ("title", "bom\u{FEFF}inside"),
        ("title", "word\u{2060}joiner"),
        ("text", "Hidden\u{200D}joiner"),
        ("text", "Seven nights\u{202D} by the sea"),
    ] {
        let mut body = advert_json(&image);
        body[field] = json!(value);
        let response = app.post_advert(&key, &body).await;
        assert_eq!(response.status(), 422, "{field} {value:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            field_codes(&body),
            vec![(field.to_owned(), "invisible_character".to_owned())],
            "{field} {value:?}: {body}"
        );
        let message = body["error"]["fields"][0]["message"].as_str().unwrap();
        assert!(message.contains("U+"), "{message}");
    }
    app.stop().await;
}

#[tokio::test]
async fn whitespace_only_titles_are_refused_and_emoji_sequences_and_nfc_pass() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let image = png(64, 64);
    for blank in ["\u{3000}\u{00A0} ", "\u{2800}", " \u{3164} "] {
        let mut body = advert_json(&image);
        body["title"] = json!(blank);
        let response = app.post_advert(&key, &body).await;
        assert_eq!(response.status(), 422, "{blank:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            field_codes(&body),
            vec![("title".to_owned(), "required".to_owned())],
            "{blank:?}"
        );
    }
    let family = "Family trip \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
    let mut body = advert_json(&image);
    body["title"] = json!(family);
    body["text"] = json!("Cafe\u{301} by the sea \u{1F3F3}\u{FE0F}\u{200D}\u{1F308}");
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    assert_eq!(advert["title"], family);
    assert_eq!(
        advert["text"], "Caf\u{E9} by the sea \u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",
        "stored composed (NFC)"
    );
    // A PATCH goes through the same policy.
    let id = advert["id"].as_i64().unwrap();
    let (status, body) = app
        .patch_advert(&key, id, &json!({"title": "\u{202E}gnp.exe"}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        field_codes(&body),
        vec![("title".to_owned(), "invisible_character".to_owned())]
    );
    app.stop().await;
}

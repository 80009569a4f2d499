//! Properties of the domain values, checked on generated input (proptest): an `Advert` survives
//! its JSON round trip (that JSON is the clone in the cloud store), and target URL validation
//! keeps its promises on text nobody thought of.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::sample::select;
use reklama::domain::advert::{
    AdvertText, CreativeInfo, DeliveryCaps, Lang, OffloadStatus, Pacing, Title,
};
use reklama::domain::target_url::TargetUrlError;
use reklama::domain::targeting::{Country, Day, Device, Targeting, Zone};
use reklama::domain::{Advert, AdvertId, AdvertStatus, CustomerId, Genre, TargetUrl};
use time::OffsetDateTime;

// ---- strategies -----------------------------------------------------------------------------

/// A host name: 2 to 4 labels of letters, digits and inner hyphens, ending in a letters-only
/// top-level label. Labels with `--` in their third and fourth places are left out: those are
/// reserved for punycode (`xn--`), and one that is not valid punycode is rightly refused.
fn host() -> impl Strategy<Value = String> {
    let label = "[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?"
        .prop_filter("not a reserved (punycode) label", |l| {
            l.get(2..4) != Some("--")
        });
    (prop::collection::vec(label, 1..4), "[a-z]{2,8}")
        .prop_map(|(labels, top)| format!("{}.{top}", labels.join(".")))
}

/// An absolute http(s) URL built only from what the rules allow: scheme in any case, a host,
/// maybe a port, a path and query of unreserved characters.
fn valid_url() -> impl Strategy<Value = String> {
    (
        "[hH][tT][tT][pP][sS]?",
        host(),
        prop::option::of(1u16..=65535),
        prop::collection::vec("[A-Za-z0-9._~-]{0,16}", 0..5),
        prop::option::of("[A-Za-z0-9._~=&-]{0,24}"),
        prop::option::of("[A-Za-z0-9._~-]{0,12}"),
    )
        .prop_map(|(scheme, host, port, path, query, fragment)| {
            let mut url = format!("{scheme}://{host}");
            if let Some(port) = port {
                url.push_str(&format!(":{port}"));
            }
            for segment in path {
                url.push('/');
                url.push_str(&segment);
            }
            if let Some(query) = query {
                url.push('?');
                url.push_str(&query);
            }
            if let Some(fragment) = fragment {
                url.push('#');
                url.push_str(&fragment);
            }
            url
        })
}

/// Characters the URL rules refuse wherever they appear: control characters, spaces and other
/// Unicode whitespace, and the backslash.
fn forbidden_char() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        Just('\u{7f}'),
        (0x80u32..0xa0).prop_map(|c| char::from_u32(c).unwrap()),
        select(vec![
            ' ', '\t', '\n', '\r', '\u{a0}', '\u{1680}', '\u{2003}', '\u{2028}', '\u{3000}',
        ]),
        Just('\\'),
    ]
}

/// Text that may or may not be a URL: most of it is refused, some of it is not.
fn url_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,60}",
        "(?i)(https?|javascript|data|ftp):(//)?\\PC{0,40}",
        (valid_url(), any::<prop::sample::Index>(), any::<char>()).prop_map(|(url, at, c)| {
            let mut chars: Vec<char> = url.chars().collect();
            chars.insert(at.index(chars.len() + 1), c);
            chars.into_iter().collect()
        }),
        valid_url(),
    ]
}

/// A time anywhere in years 1970–9999, to the nanosecond.
fn time() -> impl Strategy<Value = OffsetDateTime> {
    (0i128..253_402_300_799_999_999_999)
        .prop_map(|nanos| OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap())
}

fn title() -> impl Strategy<Value = Title> {
    "\\PC{1,90}".prop_filter_map("a valid title", |raw| Title::parse(&raw).ok())
}

fn text() -> impl Strategy<Value = AdvertText> {
    "(\\PC|\n|\r\n|\t){1,300}".prop_filter_map("a valid text", |raw| AdvertText::parse(&raw).ok())
}

fn creative() -> impl Strategy<Value = CreativeInfo> {
    (
        "[0-9a-f]{16}",
        any::<u32>(),
        any::<u32>(),
        select(vec!["image/png", "image/jpeg", "image/gif", "image/webp"]),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(hash, width, height, mime, source_width, source_height)| CreativeInfo {
                hash,
                width,
                height,
                source_mime: mime.to_owned(),
                source_width,
                source_height,
            },
        )
}

/// Any targeting: each key left out or a few of its values, in any time zone.
fn targeting() -> impl Strategy<Value = Targeting> {
    let countries: Vec<&'static str> = Country::all().collect();
    (
        prop::collection::vec(select(Device::ALL.to_vec()), 0..3),
        prop::collection::vec(select(countries), 0..4),
        prop::collection::vec(select(Day::ALL.to_vec()), 0..7),
        prop::collection::vec(0u8..24, 0..24),
        select(Zone::names()),
    )
        .prop_map(|(devices, countries, days, hours, zone)| {
            let value = serde_json::json!({
                "devices": devices,
                "countries": countries,
                "days": days,
                "hours": hours,
                "timezone": zone,
            });
            let mut object = value.as_object().cloned().unwrap();
            // An empty list is refused: a key is either left out or holds values.
            object.retain(|_, v| v.as_array().is_none_or(|a| !a.is_empty()));
            Targeting::from_json(&serde_json::Value::Object(object)).unwrap()
        })
}

fn advert() -> impl Strategy<Value = Advert> {
    let who = (any::<i64>(), any::<i64>(), "[A-Za-z0-9]{12}");
    let words = (
        title(),
        text(),
        select(Genre::ALL.to_vec()),
        prop::option::of("[a-z]{2}".prop_map(|l| Lang::parse(&l).unwrap())),
        valid_url().prop_map(|u| TargetUrl::parse(&u).unwrap()),
    );
    let serving = (
        select(vec![
            AdvertStatus::Active,
            AdvertStatus::Paused,
            AdvertStatus::Deleted,
        ]),
        1u32..=1000,
        prop::option::of(time()),
        prop::option::of(time()),
        (
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
        ),
    );
    let more = (
        prop::collection::vec(title(), 0..5),
        prop::collection::vec(text(), 0..5),
        targeting(),
        any::<bool>(),
        select(Pacing::ALL.to_vec()),
    );
    let storage = (
        creative(),
        select(vec![
            OffloadStatus::Pending,
            OffloadStatus::Done,
            OffloadStatus::Failed,
        ]),
        prop::option::of(time()),
        time(),
        time(),
    );
    (who, words, serving, storage, more).prop_map(
        |(
            (id, customer, link_code),
            (title, text, genre, lang, target_url),
            (status, weight, starts_at, ends_at, (max_impressions, max_clicks, daily)),
            (creative, offload_status, offloaded_at, created_at, updated_at),
            (more_titles, more_texts, targeting, conversion_tracking, pacing),
        )| Advert {
            id: AdvertId(id),
            customer_id: CustomerId(customer),
            title,
            text,
            more_titles,
            more_texts,
            genre,
            lang,
            cta: None,
            target_url,
            link_code,
            status,
            weight,
            starts_at,
            ends_at,
            caps: DeliveryCaps {
                max_impressions,
                max_clicks,
                daily_max_impressions: daily,
                pacing,
            },
            targeting,
            conversion_tracking,
            more_images: vec![creative.clone()],
            creative,
            offload_status,
            offloaded_at,
            created_at,
            updated_at,
        },
    )
}

// ---- properties -----------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn an_advert_survives_its_json_round_trip(advert in advert()) {
        let json = serde_json::to_string(&advert).unwrap();
        let back: Advert = serde_json::from_str(&json)
            .map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
        prop_assert_eq!(&back, &advert);
        // And through a generic JSON value, as a reader of the cloud clone might.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let again: Advert = serde_json::from_value(value).unwrap();
        prop_assert_eq!(again, advert);
    }

    #[test]
    fn a_forbidden_character_anywhere_is_refused(
        url in url_like(),
        at in any::<prop::sample::Index>(),
        bad in forbidden_char(),
    ) {
        let mut chars: Vec<char> = url.chars().collect();
        let position = at.index(chars.len() + 1);
        chars.insert(position, bad);
        let raw: String = chars.into_iter().collect();
        let refused = TargetUrl::parse(&raw);
        prop_assert!(
            matches!(
                refused,
                Err(TargetUrlError::ControlCharacter { .. }
                    | TargetUrlError::Whitespace { .. }
                    | TargetUrlError::Backslash { .. })
            ),
            "{:?} gave {:?}", raw, refused
        );
        // Deserialising a stored advert goes through the same check.
        let quoted = serde_json::to_string(&raw).unwrap();
        prop_assert!(serde_json::from_str::<TargetUrl>(&quoted).is_err());
    }

    #[test]
    fn whatever_is_accepted_is_http_or_https_and_kept_byte_for_byte(raw in url_like()) {
        if let Ok(url) = TargetUrl::parse(&raw) {
            let lower = raw.to_ascii_lowercase();
            prop_assert!(
                lower.starts_with("http://") || lower.starts_with("https://"),
                "{:?} was accepted", raw
            );
            prop_assert_eq!(url.as_str(), raw.as_str());
            prop_assert!(raw.is_ascii());
            prop_assert!(raw.len() <= TargetUrl::MAX_LEN);
            // No user info: no `@` between `//` and the path, query or fragment (one after
            // them is ordinary text).
            let after_scheme = &raw[raw.find("//").unwrap() + 2..];
            let authority = after_scheme.split(['/', '?', '#']).next().unwrap();
            prop_assert!(!authority.contains('@'), "{:?}", raw);
            prop_assert_eq!(TargetUrl::try_from(raw.clone()).ok(), Some(url));
        }
    }

    #[test]
    fn a_generated_valid_url_is_accepted(raw in valid_url()) {
        match TargetUrl::parse(&raw) {
            Ok(url) => prop_assert_eq!(url.as_str(), raw.as_str()),
            Err(e) => prop_assert!(false, "{:?} was refused: {}", raw, e),
        }
    }
}

//! `TargetUrl::parse` on any text: never panics, and what it accepts is an http(s) URL of plain
//! ASCII without whitespace, control characters, backslashes or user info, kept byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reklama::domain::TargetUrl;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = TargetUrl::parse(raw) else {
        return;
    };
    assert_eq!(url.as_str(), raw);
    let lower = raw.to_ascii_lowercase();
    assert!(
        lower.starts_with("http://") || lower.starts_with("https://"),
        "{raw:?}"
    );
    assert!(raw.len() <= TargetUrl::MAX_LEN);
    assert!(
        raw.bytes().all(|b| b.is_ascii_graphic() && b != b'\\'),
        "{raw:?}"
    );
    // A stored URL is read back through the same rules.
    let json = serde_json::to_string(&url).expect("serialise");
    let back: TargetUrl = serde_json::from_str(&json).expect("a stored URL reads back");
    assert_eq!(back, url);
});

//! `Genre::parse` on any text: never panics, and a genre's canonical name parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reklama::domain::Genre;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(genre) = Genre::parse(text) {
        assert_eq!(Genre::parse(genre.as_str()).ok(), Some(genre), "{text:?}");
    }
});

//! An uploaded image through the creative pipeline (`make_creative`) with the production limits:
//! any bytes are refused or turned into a creative that fits the 600×600 box, without a panic or
//! an allocation past the decode limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((width, height)) = reklama::fuzzing::creative(data) {
        assert!((1..=600).contains(&width) && (1..=600).contains(&height));
    }
});

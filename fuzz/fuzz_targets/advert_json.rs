//! The JSON bodies of `POST /api/v1/adverts` and `PATCH /api/v1/adverts/{id}`: any bytes are
//! read and validated without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = reklama::fuzzing::advert_json(data);
    let _ = reklama::fuzzing::patch_json(data);
});

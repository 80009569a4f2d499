//! The multipart/form-data body of `POST /api/v1/adverts` and the HTML form: the first byte picks
//! how the body is split into network chunks, the rest is the body (boundary `XyZ`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, body)) = data.split_first() else {
        return;
    };
    let _ = reklama::fuzzing::advert_multipart(
        "multipart/form-data; boundary=XyZ",
        body,
        usize::from(chunk) + 1,
    );
});

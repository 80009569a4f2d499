//! The bare actix-web reference of bench/run's overhead run: the same framework, HTTP/1.1 and
//! keep-alive settings as reklama, one worker, no middleware. What it answers is what reklama's
//! `/healthz` and redirect answer, so the difference between them is reklama's own per-request
//! work.
//!
//!     cargo run --release --example bare -- 127.0.0.1:9300
//!
//! `GET /healthz` → 200 `{"status":"ok"}` with `Cache-Control: no-store`, as reklama's;
//! `GET /r/{code}` → 302 with the headers reklama's redirect sends (Location, Cache-Control,
//! Referrer-Policy), the Location as long as the benchmark's adverts' targets.

use actix_web::http::header;
use actix_web::{App, HttpResponse, HttpServer, web};

/// The allocator reklama's binary uses, so that only the per-request work differs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LOCATION: &str =
    "https://shop.example.com/offers/summer-sale?utm_source=reklama&utm_medium=cpc";

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

async fn redirect(_code: web::Path<String>) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, LOCATION))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .insert_header((header::REFERRER_POLICY, "strict-origin-when-cross-origin"))
        .finish()
}

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9300".to_owned());
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new()
                .route("/r/{code}", web::get().to(redirect))
                .route("/healthz", web::get().to(healthz))
        })
        .workers(1)
        .bind(&listen)?
        .run()
        .await
    })
}

//! The customer portal: the HTML pages people use, above the business modules. The advert form
//! and its answer, the placements' preview, sign-in, the dashboard and its CSV downloads, the
//! account's API keys (its page, and `/api/v1/keys` for programs), and the pages' static
//! assets. It calls the modules' public services (intake to make and change adverts, tracking
//! for counts) and the platform's accounts; no module calls it, so pages and reports can grow
//! here without the modules importing each other.
//!
//! - [`session`]: who is signed in ([`SignedIn`], an extractor) and how a page fails
//!   ([`PageError`], answered as an HTML page with the API's status and `Retry-After`);
//! - [`form`]: the advert form, its answer, the preview, the assets;
//! - [`dashboard`]: sign-in, sign-out, the customer's adverts, one advert's page, pause/resume,
//!   the CSV download;
//! - [`keys`]: the customer's API keys, as JSON (`/api/v1/keys`) and as the dashboard's page;
//! - [`account`]: the customer's e-mail address and report e-mail (the dashboard's account page);
//! - [`templates`]: the HTML.

mod account;
mod dashboard;
mod form;
mod keys;
mod session;
mod templates;

use std::sync::Arc;

use actix_web::web;

use crate::domain::AdvertId;
use crate::domain::placement::PlacementCatalogue;
use crate::modules::intake::{IntakeService, VariantRow, VariantView, variant_views};
use crate::modules::tracking::TrackingService;
use crate::platform::session::Sessions;
use crate::platform::urls::PublicUrls;

pub use session::{PageError, SignedIn};

/// What the portal's pages share. Built by main_app.
pub struct Portal {
    intake: web::Data<IntakeService>,
    tracking: Arc<TrackingService>,
    sessions: Sessions,
    urls: PublicUrls,
    placements: PlacementCatalogue,
    /// `server.max_body_bytes`: the largest advert form.
    max_body_bytes: usize,
}

impl Portal {
    pub fn new(
        intake: web::Data<IntakeService>,
        tracking: Arc<TrackingService>,
        sessions: Sessions,
        urls: PublicUrls,
        placements: PlacementCatalogue,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            intake,
            tracking,
            sessions,
            urls,
            placements,
            max_body_bytes,
        }
    }

    /// Every placement's variant of an advert, as the pages show them.
    fn variant_views(&self, advert: AdvertId, rows: &[VariantRow]) -> Vec<VariantView> {
        variant_views(advert, rows, &self.placements, &self.urls)
    }
}

/// The portal's routes: `/assets/...`, the pages, and the account's API keys
/// (`/api/v1/keys`, the only portal routes under `/api`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    form::configure(cfg);
    dashboard::configure(cfg);
    keys::configure(cfg);
    account::configure(cfg);
}

/// The portal's part of the OpenAPI document: its pages, for the tools that read it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = form::ApiDoc::openapi();
    doc.merge(dashboard::ApiDoc::openapi());
    doc.merge(keys::ApiDoc::openapi());
    doc.merge(account::ApiDoc::openapi());
    doc
}

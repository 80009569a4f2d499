//! Intake (business input): customers submit adverts through the JSON API (and the portal's
//! form, which calls [`IntakeService`]); the advert is validated, its image compressed into the
//! creative, and everything stored with an outbox job that clones the advert to the cloud store
//! and one that renders its placements.

mod creative;
mod creatives;
mod error;
mod http;
mod input;
mod offload;
mod outbox;
mod resample;
mod service;
mod store;
mod variants;
mod view;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::AdvertId;
use crate::domain::creative::{CreativeId, Tally};

pub use creative::{CreativeSpec, SourceFormat};
pub use creatives::CreativeView;
pub use error::IntakeError;
pub use http::{ApiDoc, BodyLimit, configure, declared_length_within, is_multipart, openapi};
pub use input::{AdvertUpload, FormReader, PatchRequest, RawAdvert};
pub use offload::{CloneSyncJob, OffloadJob, clone_key, original_key};
pub use outbox::{
    AdvertChanged, AdvertOffloadFailed, AdvertOffloaded, CLONE_SYNC_JOB, CopyJob, OFFLOAD_JOB,
    UnsuitablePlacement, VARIANTS_JOB, VariantsReady,
};
pub use service::IntakeService;
pub use variants::http::{VariantView, views as variant_views};
pub use variants::store::VariantRow;
pub use variants::{VariantsJob, VariantsSetup, queue_rebuild as queue_variants_rebuild};
pub use view::AdvertView;

/// The variants pipeline as the job runs it, for the render-time bench (`bench/render_time.rs`)
/// only: not an API.
#[doc(hidden)]
pub mod bench_entry {
    pub use super::creative::decode_for_variants;
    pub use super::variants::compose::compose;
    pub use super::variants::{Outcome, Saliency, Words, render, render_all, working_side};
}

/// The parsers and the image pipeline, for [`crate::fuzzing`] only: not an API.
#[doc(hidden)]
pub mod fuzz_entry {
    pub use super::creative::make_creative;
    pub use super::input::{RawAdvert, parse_patch};
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeSettings {
    pub max_image_bytes: usize,
    pub creative_max_width: u32,
    pub creative_max_height: u32,
    pub creative_quality: u8,
    pub max_source_dimension: u32,
    pub max_source_pixels: u64,
    pub max_decode_alloc_bytes: u64,
}

impl IntakeSettings {
    pub fn creative_spec(&self) -> CreativeSpec {
        CreativeSpec {
            max_width: self.creative_max_width,
            max_height: self.creative_max_height,
            quality: self.creative_quality,
            max_input_bytes: self.max_image_bytes,
            max_source_dimension: self.max_source_dimension,
            max_source_pixels: self.max_source_pixels,
            max_decode_alloc: self.max_decode_alloc_bytes,
        }
    }
}

/// Each creative's counts so far (billable impressions and clicks), from whoever counts them
/// (tracking, wired by main_app): the variants job renders composed placements for the
/// likeliest winners.
#[async_trait]
pub trait CreativeTallies: Send + Sync + 'static {
    async fn tallies(
        &self,
        advert: AdvertId,
    ) -> Result<std::collections::HashMap<CreativeId, Tally>, String>;
}

/// Told about every committed change to an advert (created, patched, deleted), so that caches in
/// other modules follow at once on this instance. Other instances notice through their own
/// change polling.
#[async_trait]
pub trait AdvertObserver: Send + Sync + 'static {
    async fn advert_changed(&self, advert: AdvertId, link_code: &str);
}

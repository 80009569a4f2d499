//! Intake (business input): customers submit adverts through the HTML form or the JSON API; the
//! advert is validated, its image compressed into the creative, and everything stored with an
//! outbox job that clones the advert to the cloud store.

mod creative;
mod error;
mod http;
mod input;
mod offload;
mod pages;
mod service;
mod store;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::AdvertId;

pub use creative::{CreativeSpec, SourceFormat};
pub use error::IntakeError;
pub use http::{AdvertView, BodyLimit, configure};
pub use offload::{CLONE_SYNC_JOB, CloneSyncJob, OFFLOAD_JOB, OffloadJob, clone_key, original_key};
pub use service::IntakeService;

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

/// Told about every committed change to an advert (created, patched, deleted), so that caches in
/// other modules follow at once on this instance. Other instances notice through their own
/// change polling.
#[async_trait]
pub trait AdvertObserver: Send + Sync + 'static {
    async fn advert_changed(&self, advert: AdvertId, link_code: &str);
}

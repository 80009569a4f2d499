//! Serving (the most loaded module): hands out what end users see. Today that is the compressed
//! creatives at `/media/{advert_id}/{hash}.jpg`, from an in-process cache in front of the
//! database.

mod media;

use serde::{Deserialize, Serialize};

pub use media::{MediaService, configure};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingSettings {
    /// Bytes of compressed creatives kept in memory.
    pub media_cache_bytes: u64,
}

//! The shared vocabulary: adverts, genres, customers and the validated values they are made of.
//! Nothing here does I/O.

pub mod advert;
pub mod counts;
pub mod creative;
pub mod events;
pub mod genre;
pub mod granularity;
pub mod ids;
pub mod invalid;
pub mod placement;
pub mod shorten;
pub mod target_url;
pub mod targeting;
pub mod url_macros;

pub use advert::{Advert, AdvertStatus, NewAdvert};
pub use counts::{Counts, Metric};
pub use genre::Genre;
pub use granularity::Granularity;
pub use ids::{AdvertId, CustomerId};
pub use placement::{Placement, VariantStatus};
pub use target_url::TargetUrl;

/// Characters in a tracked link's code (`/r/{code}`), all base62: anything else is no code.
pub const LINK_CODE_LEN: usize = 12;

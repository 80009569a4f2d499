//! `GET /api/v1/adverts/{id}/variants`: what each placement will show, or why it cannot.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::domain::creative::CreativeId;
use crate::domain::placement::PlacementCatalogue;
use crate::domain::{AdvertId, VariantStatus};
use crate::platform::auth::Customer;
use crate::platform::http::{ErrorBody, HttpError};
use crate::platform::urls::PublicUrls;

use super::super::service::IntakeService;
use super::store::VariantRow;

/// The variants endpoint in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_variants))]
pub struct ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/adverts/{id}/variants",
        web::get().to(list_variants),
    );
}

/// The variants of one advert.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VariantList {
    pub variants: Vec<VariantView>,
}

/// One placement's variant as the customer sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct VariantView {
    pub placement: String,
    pub status: VariantStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub width: u32,
    pub height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// `image_url` without the origin, for this service's own pages (their CSP allows `'self'`).
    #[serde(skip)]
    pub image_path: Option<String>,
    /// Size of the image in bytes (0 when there is none).
    pub bytes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `crop` (the picture alone) or `composed` (picture, title, text and call to action in one
    /// image), as the catalogue sets it for the placement.
    #[schema(value_type = String, example = "composed")]
    pub layout: &'static str,
    /// The region of the uploaded image (after its EXIF orientation) the variant shows, in its
    /// pixels: the whole image for a crop, the picture's part for a composed creative.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop: Option<CropRegion>,
    /// Every image the placement serves, when it serves more than one: a cropped placement one
    /// per image of the advert, a composed placement one per creative it is drawn for (at most
    /// 3, chosen by their counts). The fields above show the first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<VariantImage>,
}

/// One of the images a placement serves.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct VariantImage {
    /// The advert's image it is made from (its position in the advert's `images`).
    pub image_index: u32,
    /// The creative whose words it draws (composed placements).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, example = 2)]
    pub creative_id: Option<CreativeId>,
    pub image_url: String,
    #[serde(skip)]
    pub image_path: String,
    pub bytes: u32,
    /// The words drawn, as shortened to fit.
    pub title: String,
    pub text: String,
}

/// A rectangle in the source image's pixels.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CropRegion {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Every catalogue placement, in catalogue order, with its stored variant when it is current.
pub fn views(
    id: AdvertId,
    rows: &[VariantRow],
    catalogue: &PlacementCatalogue,
    urls: &PublicUrls,
) -> Vec<VariantView> {
    catalogue
        .placements()
        .iter()
        .map(|placement| {
            let row = rows.iter().find(|r| {
                r.placement == placement.name && r.fingerprint == placement.fingerprint()
            });
            let unsigned = |n: i32| u32::try_from(n).unwrap_or(0);
            match row {
                Some(r) if r.status == VariantStatus::Ready => VariantView {
                    placement: placement.name.clone(),
                    status: VariantStatus::Ready,
                    reason: None,
                    width: unsigned(r.width),
                    height: unsigned(r.height),
                    image_url: r.hash.as_deref().map(|hash| {
                        urls.variant(
                            id,
                            &placement.name,
                            hash,
                            r.mime.as_deref().unwrap_or_default(),
                        )
                    }),
                    image_path: r.hash.as_deref().map(|hash| {
                        PublicUrls::variant_path(
                            id,
                            &placement.name,
                            hash,
                            r.mime.as_deref().unwrap_or_default(),
                        )
                    }),
                    bytes: unsigned(r.byte_len),
                    title: Some(r.title.clone()),
                    text: Some(r.text.clone()),
                    layout: placement.layout.as_str(),
                    crop: Some(CropRegion {
                        x: unsigned(r.crop.0),
                        y: unsigned(r.crop.1),
                        width: unsigned(r.crop.2),
                        height: unsigned(r.crop.3),
                    }),
                    images: {
                        let images: Vec<VariantImage> = rows
                            .iter()
                            .filter(|c| {
                                c.placement == placement.name
                                    && c.fingerprint == r.fingerprint
                                    && c.status == VariantStatus::Ready
                            })
                            .filter_map(|c| {
                                let (hash, mime) = (c.hash.as_deref()?, c.mime.as_deref()?);
                                Some(VariantImage {
                                    image_index: unsigned(c.image_index),
                                    creative_id: (c.creative != 0)
                                        .then(|| CreativeId(unsigned(c.creative))),
                                    image_url: urls.variant(id, &placement.name, hash, mime),
                                    image_path: PublicUrls::variant_path(
                                        id,
                                        &placement.name,
                                        hash,
                                        mime,
                                    ),
                                    bytes: unsigned(c.byte_len),
                                    title: c.title.clone(),
                                    text: c.text.clone(),
                                })
                            })
                            .collect();
                        if images.len() > 1 { images } else { Vec::new() }
                    },
                },
                Some(r) if r.status == VariantStatus::Unsuitable => VariantView {
                    placement: placement.name.clone(),
                    status: VariantStatus::Unsuitable,
                    reason: r.reason.clone(),
                    width: placement.width,
                    height: placement.height,
                    image_url: None,
                    image_path: None,
                    bytes: 0,
                    title: None,
                    text: None,
                    layout: placement.layout.as_str(),
                    crop: None,
                    images: Vec::new(),
                },
                // Not rendered yet, rendered for another catalogue entry, or for content the
                // advert no longer has.
                _ => VariantView {
                    placement: placement.name.clone(),
                    status: VariantStatus::Pending,
                    reason: None,
                    width: placement.width,
                    height: placement.height,
                    image_url: None,
                    image_path: None,
                    bytes: 0,
                    title: None,
                    text: None,
                    layout: placement.layout.as_str(),
                    crop: None,
                    images: Vec::new(),
                },
            }
        })
        .collect()
}

#[utoipa::path(
    get,
    path = "/api/v1/adverts/{id}/variants",
    tag = "intake",
    summary = "What each placement shows of an advert",
    description = "One entry per placement of the catalogue, in its order: `pending` until the \
                   worker pool has rendered it (or after the catalogue entry, or the advert's \
                   title, text or image changed), `ready` with \
                   its image, size, byte count, shortened title and text, `layout` and the `crop` \
                   of the uploaded image it shows (with several images, `images` lists each: \
                   a cropped placement's per image of the advert, a composed placement's per \
                   creative it is drawn for, at most 3, new creatives first, then those with \
                   the best click rate), or \
                   `unsuitable` with \
                   the reason (an image far smaller than the placement, or a crop that would lose \
                   most of it). Unsuitable placements never serve the advert.",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The advert's id")),
    responses(
        (status = 200, description = "The variants", body = VariantList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such advert, or another customer's", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds")))
    )
)]
async fn list_variants(
    customer: Customer,
    id: web::Path<i64>,
    service: web::Data<IntakeService>,
    catalogue: web::Data<PlacementCatalogue>,
    urls: web::Data<PublicUrls>,
) -> Result<HttpResponse, HttpError> {
    let id = AdvertId(id.into_inner());
    let rows = service.variants(customer.id, id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(VariantList {
            variants: views(id, &rows, &catalogue, &urls),
        }))
}

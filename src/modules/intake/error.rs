//! Intake's errors, mapped once to HTTP.

use actix_web::http::StatusCode;

use crate::platform::auth::AuthError;
use crate::platform::db::DbError;
use crate::platform::http::{FieldError, HttpError, log_internal};

use super::creative::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("{field} is larger than {limit} bytes")]
    TooLarge { field: String, limit: usize },
    #[error("unsupported image: {error}")]
    UnsupportedImage { field: String, error: ImageError },
    #[error("{0}")]
    MalformedBody(String),
    /// The body's content type is not one this endpoint reads; says which ones it does.
    #[error("send the body as {0}")]
    UnsupportedContentType(&'static str),
    #[error("advert not found")]
    NotFound,
    #[error("the advert has no such creative")]
    NoCreative,
    /// The change cannot be made in the state the advert is in.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("image processing failed: {0}")]
    Worker(String),
}

impl IntakeError {
    /// The per-field problems, for showing next to the fields of the HTML form.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Invalid(fields) => fields.clone(),
            Self::TooLarge { field, limit } => vec![FieldError::new(
                field.clone(),
                "too_large",
                format!("must be at most {limit} bytes"),
            )],
            Self::UnsupportedImage { field, error } => {
                vec![FieldError::new(
                    field.clone(),
                    error.code(),
                    error.to_string(),
                )]
            }
            _ => Vec::new(),
        }
    }
}

/// For transactions that can also fail for a business reason (and roll back).
impl From<diesel::result::Error> for IntakeError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(DbError::from(e))
    }
}

impl From<ImageError> for IntakeError {
    fn from(e: ImageError) -> Self {
        Self::image(e, "image")
    }
}

impl IntakeError {
    /// A problem with the image submitted as `field` (`image`, `images_base64[1]`, …).
    pub fn image(e: ImageError, field: &str) -> Self {
        match e {
            ImageError::TooLarge { limit } => Self::TooLarge {
                field: field.into(),
                limit,
            },
            ImageError::UnsupportedFormat { .. } => Self::UnsupportedImage {
                field: field.into(),
                error: e,
            },
            other => Self::Invalid(vec![FieldError::new(
                field,
                other.code(),
                other.to_string(),
            )]),
        }
    }
}

impl From<IntakeError> for HttpError {
    fn from(e: IntakeError) -> Self {
        let fields = e.field_errors();
        match e {
            IntakeError::Invalid(fields) => HttpError::validation(fields),
            IntakeError::TooLarge { .. } => HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            )
            .with_fields(fields),
            IntakeError::UnsupportedImage { .. } => HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.to_string(),
            )
            .with_fields(fields),
            IntakeError::MalformedBody(message) => {
                HttpError::bad_request("malformed_body", message)
            }
            IntakeError::UnsupportedContentType(_) => HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.to_string(),
            ),
            IntakeError::NotFound => HttpError::not_found("no such advert"),
            IntakeError::NoCreative => HttpError::not_found("the advert has no such creative"),
            IntakeError::Conflict { code, message } => {
                HttpError::new(StatusCode::CONFLICT, code, message)
            }
            IntakeError::Auth(auth) => auth.into(),
            IntakeError::Db(DbError::Unavailable(_)) => HttpError::unavailable(),
            IntakeError::Db(ref db) => log_internal(db),
            IntakeError::Worker(_) => log_internal(&e),
        }
    }
}

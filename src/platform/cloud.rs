//! The cloud store: where full clones of adverts are kept. A local (or NFS-mounted) directory by
//! default, any S3-compatible store in production; both through the `object_store` crate.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSettings {
    /// A directory path, `file:///abs/dir` or `s3://bucket/prefix`.
    pub url: String,
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    pub s3_allow_http: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("object {0} not found in the cloud store")]
    NotFound(String),
    #[error("cloud store: {0}")]
    Backend(String),
}

/// What the rest of reklama needs from a cloud store. Kept this small so that tests can put a
/// failing store in front of a real one.
#[async_trait]
pub trait CloudStore: Send + Sync + 'static {
    /// Writes (or overwrites) one object. Writes are whole-object, so a repeated write is harmless.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), CloudError>;
    async fn get(&self, key: &str) -> Result<Vec<u8>, CloudError>;
    /// Says where the objects go, for logs (never with credentials).
    fn describe(&self) -> String;
    /// A cheap round trip proving the store answers (readiness): reading a key that need not
    /// exist; "not found" is an answer.
    async fn check(&self) -> Result<(), CloudError> {
        match self.get(".reklama-readiness").await {
            Ok(_) | Err(CloudError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A `CloudStore` over any `object_store` backend.
pub struct ObjectCloud {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl ObjectCloud {
    pub fn from_settings(settings: &CloudSettings) -> anyhow::Result<Self> {
        let url = settings.url.trim();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                anyhow::bail!("cloud.url: s3:// needs a bucket name, e.g. s3://adverts/prod");
            }
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&settings.s3_region)
                .with_allow_http(settings.s3_allow_http);
            if !settings.s3_endpoint.is_empty() {
                builder = builder.with_endpoint(&settings.s3_endpoint);
            }
            if !settings.s3_access_key_id.is_empty() {
                builder = builder
                    .with_access_key_id(&settings.s3_access_key_id)
                    .with_secret_access_key(&settings.s3_secret_access_key);
            }
            let s3 = builder
                .build()
                .map_err(|e| anyhow::anyhow!("cloud: cannot configure S3: {e}"))?;
            let prefix = prefix.trim_matches('/');
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            };
            return Ok(Self {
                store,
                description: format!("s3://{bucket}/{prefix}"),
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        if dir.is_empty() {
            anyhow::bail!("cloud.url: empty; use a directory, file:///dir or s3://bucket/prefix");
        }
        if dir.contains("://") {
            anyhow::bail!(
                "cloud.url: unsupported scheme in {dir:?}; use a directory, file:///dir or s3://bucket/prefix"
            );
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cloud.url: cannot create directory {dir}: {e}"))?;
        let local = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| anyhow::anyhow!("cloud.url: {dir}: {e}"))?;
        Ok(Self {
            store: Arc::new(local),
            description: format!("directory {dir}"),
        })
    }
}

#[async_trait]
impl CloudStore for ObjectCloud {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), CloudError> {
        let path = object_path(key)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| CloudError::Backend(e.to_string()))
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, CloudError> {
        let path = object_path(key)?;
        let result = self.store.get(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => CloudError::NotFound(key.to_owned()),
            other => CloudError::Backend(other.to_string()),
        })?;
        let bytes = result
            .bytes()
            .await
            .map_err(|e| CloudError::Backend(e.to_string()))?;
        Ok(bytes.to_vec())
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

fn object_path(key: &str) -> Result<ObjectPath, CloudError> {
    ObjectPath::parse(key).map_err(|e| CloudError::Backend(format!("bad object key {key:?}: {e}")))
}

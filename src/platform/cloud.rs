//! The cloud store: where full clones of adverts are kept. A local (or NFS-mounted) directory by
//! default, any S3-compatible store in production; both through the `object_store` crate. Every
//! call has a deadline, so a store that accepts and never answers fails within it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};

use crate::platform::deadline;

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
    /// A read (get, readiness) gives up after this long, retries included.
    pub timeout_ms: u64,
    /// A write (put) gives up after this long, retries included.
    pub write_timeout_ms: u64,
    /// S3: opening a connection gives up after this long.
    pub connect_timeout_ms: u64,
    /// S3: retries of a failed request, within the call's deadline.
    pub max_retries: u32,
}

impl CloudSettings {
    /// Checks what types alone cannot; every message starts with the key at fault.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("cloud.timeout_ms", self.timeout_ms),
            ("cloud.write_timeout_ms", self.write_timeout_ms),
            ("cloud.connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if value == 0 {
                problems.push(format!(
                    "{key}: must be at least 1 (a store that never answers must not hold a \
                     request or a worker forever)"
                ));
            }
        }
        problems
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("object {0} not found in the cloud store")]
    NotFound(String),
    #[error("cloud store: {0}")]
    Backend(String),
    #[error("cloud store did not answer within {0:?}")]
    Timeout(Duration),
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
    read_timeout: Duration,
    write_timeout: Duration,
}

impl ObjectCloud {
    pub fn from_settings(settings: &CloudSettings) -> anyhow::Result<Self> {
        let (store, description) = Self::open(settings)?;
        Ok(Self {
            store,
            description,
            read_timeout: Duration::from_millis(settings.timeout_ms.max(1)),
            write_timeout: Duration::from_millis(settings.write_timeout_ms.max(1)),
        })
    }

    fn open(settings: &CloudSettings) -> anyhow::Result<(Arc<dyn ObjectStore>, String)> {
        let url = settings.url.trim();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                anyhow::bail!("cloud.url: s3:// needs a bucket name, e.g. s3://adverts/prod");
            }
            // Each HTTP request may take as long as the longest call; the call's own deadline
            // (read or write) then cuts it, retries included.
            let longest = Duration::from_millis(settings.timeout_ms.max(settings.write_timeout_ms));
            // The client options carry allow_http too: set here, since they replace the
            // builder's own.
            let client = ClientOptions::new()
                .with_allow_http(settings.s3_allow_http)
                .with_timeout(longest)
                .with_connect_timeout(Duration::from_millis(settings.connect_timeout_ms.max(1)));
            let retry = RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: settings.max_retries as usize,
                retry_timeout: longest,
            };
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&settings.s3_region)
                .with_client_options(client)
                .with_retry(retry);
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
            return Ok((store, format!("s3://{bucket}/{prefix}")));
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
        Ok((Arc::new(local), format!("directory {dir}")))
    }
}

/// `call` within `limit` (shortened to the request's deadline, if any); a timeout is counted
/// and logged.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    key: &str,
    call: impl Future<Output = Result<T, CloudError>>,
) -> Result<T, CloudError> {
    match deadline::within(limit, call).await {
        Some(result) => result,
        None => {
            metrics::counter!("reklama_backend_timeouts_total", "backend" => "cloud").increment(1);
            tracing::warn!(
                key,
                limit_ms = limit.as_millis() as u64,
                "cloud store {what} timed out"
            );
            Err(CloudError::Timeout(limit))
        }
    }
}

#[async_trait]
impl CloudStore for ObjectCloud {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), CloudError> {
        let path = object_path(key)?;
        bounded(self.write_timeout, "write", key, async {
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| CloudError::Backend(e.to_string()))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, CloudError> {
        let path = object_path(key)?;
        bounded(self.read_timeout, "read", key, async {
            let result = self.store.get(&path).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => CloudError::NotFound(key.to_owned()),
                other => CloudError::Backend(other.to_string()),
            })?;
            let bytes = result
                .bytes()
                .await
                .map_err(|e| CloudError::Backend(e.to_string()))?;
            Ok(bytes.to_vec())
        })
        .await
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

fn object_path(key: &str) -> Result<ObjectPath, CloudError> {
    ObjectPath::parse(key).map_err(|e| CloudError::Backend(format!("bad object key {key:?}: {e}")))
}

//! The shared Redis tier (optional): a deadpool pool with a key prefix and a timeout on every
//! call, so that a slow or absent Redis degrades an instance to local work instead of stalling it.

use std::future::Future;
use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`; empty means no Redis (the embedded shape).
    pub url: String,
    /// Prepended to every key, so several deployments can share one Redis.
    pub prefix: String,
    pub pool_size: usize,
    /// Upper bound of any single Redis call, connecting included.
    pub timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis pool: {0}")]
    Pool(String),
    #[error("redis: {0}")]
    Command(#[from] deadpool_redis::redis::RedisError),
}

#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    prefix: String,
    timeout: Duration,
}

pub type Connection = deadpool_redis::Connection;

impl Redis {
    /// Builds the pool; connections are made lazily, so a Redis that is down at start-up does
    /// not stop the instance (it works locally until Redis answers).
    pub fn from_settings(settings: &RedisSettings) -> anyhow::Result<Option<Self>> {
        if settings.url.trim().is_empty() {
            return Ok(None);
        }
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let mut config = Config::from_url(settings.url.trim());
        config.pool = Some(PoolConfig {
            max_size: settings.pool_size.max(1),
            timeouts: Timeouts {
                wait: Some(timeout),
                create: Some(timeout),
                recycle: Some(timeout),
            },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
        Ok(Some(Self {
            pool,
            prefix: settings.prefix.clone(),
            timeout,
        }))
    }

    /// `prefix` + `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pool's connections: (open, idle, most allowed).
    pub fn pool_usage(&self) -> (usize, usize, usize) {
        let status = self.pool.status();
        (status.size, status.available, status.max_size)
    }

    /// A pooled connection, waiting at most the configured timeout. An error here means no
    /// command was sent.
    pub async fn connection(&self) -> Result<Connection, RedisError> {
        tokio::time::timeout(self.timeout, self.pool.get())
            .await
            .map_err(|_| RedisError::Timeout(self.timeout))?
            .map_err(|e| RedisError::Pool(e.to_string()))
    }

    /// Bounds one call by the configured timeout.
    pub async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, deadpool_redis::redis::RedisError>>,
    ) -> Result<T, RedisError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| RedisError::Timeout(self.timeout))?
            .map_err(RedisError::from)
    }

    /// Runs `work` with a pooled connection, each step bounded by the configured timeout.
    pub async fn with<T, F, Fut>(&self, work: F) -> Result<T, RedisError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, deadpool_redis::redis::RedisError>>,
    {
        let conn = self.connection().await?;
        self.bounded(work(conn)).await
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        self.with(|mut conn| async move {
            deadpool_redis::redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
        })
        .await
    }
}

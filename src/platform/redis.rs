//! The shared Redis tier (optional): a deadpool pool with a key prefix and a timeout on every
//! call, so that a slow or absent Redis degrades an instance to local work instead of stalling it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{self, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisFuture, Value};
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
    Command(#[from] redis::RedisError),
    /// The shared call this one joined failed (see [`SharedReads`]).
    #[error("redis (batched read): {0}")]
    Batch(String),
    /// A call timed out a moment ago; this one was not tried (see [`Redis::connection`]).
    #[error("redis did not answer within the last {0:?}; not tried")]
    Quiet(Duration),
}

/// How recently a pooled connection must have had an answer to be handed out again without a
/// `PING` first. Checking every time (deadpool-redis's rule) costs a round trip before every
/// call, which on a Redis a few milliseconds away doubles the wait of every read.
const ANSWERED_WITHIN: Duration = Duration::from_secs(1);

/// A pooled connection and what its last call showed.
struct Pooled {
    conn: MultiplexedConnection,
    /// When Redis last answered on it.
    answered: Instant,
    /// A call on it ended without an answer (dropped at its deadline, or the connection failed):
    /// it is checked with a `PING` before its next use, and replaced if that fails.
    doubtful: bool,
}

impl Pooled {
    /// Notes how a call went. An error that Redis itself answered (a wrong type, a script's
    /// error) leaves the connection as good as an answer does.
    fn settle<T>(&mut self, result: &redis::RedisResult<T>) {
        let answered = match result {
            Ok(_) => true,
            Err(e) => matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension),
        };
        if answered {
            self.answered = Instant::now();
            self.doubtful = false;
        }
    }
}

/// Makes and checks the pool's connections (see [`ANSWERED_WITHIN`]).
struct Manager {
    client: redis::Client,
    pings: AtomicUsize,
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<Pooled, redis::RedisError> {
        // The client's own deadlines (half a second for an answer, a second to connect) would
        // cut `redis.timeout_ms` short when it is set higher; the pool and `Redis::bounded`
        // already bound both steps by it.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        Ok(Pooled {
            conn: self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
            answered: Instant::now(),
            doubtful: false,
        })
    }

    async fn recycle(&self, pooled: &mut Pooled, _: &Metrics) -> RecycleResult<redis::RedisError> {
        if !pooled.doubtful && pooled.answered.elapsed() < ANSWERED_WITHIN {
            return Ok(());
        }
        let sent = self.pings.fetch_add(1, Ordering::Relaxed).to_string();
        let echoed: String = redis::cmd("PING")
            .arg(&sent)
            .query_async(&mut pooled.conn)
            .await?;
        if echoed != sent {
            return Err(RecycleError::message(
                "the connection answered another PING",
            ));
        }
        pooled.answered = Instant::now();
        pooled.doubtful = false;
        Ok(())
    }
}

/// A connection taken from the pool; back in it when dropped.
pub struct Connection(managed::Object<Manager>);

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            // Stays set if the call is dropped before its answer.
            self.0.doubtful = true;
            let result = self.0.conn.req_packed_command(cmd).await;
            self.0.settle(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.0.doubtful = true;
            let result = self
                .0
                .conn
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.0.settle(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.0.conn.get_db()
    }
}

#[derive(Clone)]
pub struct Redis {
    pool: managed::Pool<Manager>,
    prefix: String,
    timeout: Duration,
    round_trips: metrics::Counter,
    /// Until when calls fail at once (milliseconds since `epoch`; 0: they are tried).
    quiet_until: Arc<AtomicU64>,
    epoch: tokio::time::Instant,
}

impl Redis {
    /// Builds the pool; connections are made lazily, so a Redis that is down at start-up does
    /// not stop the instance (it works locally until Redis answers).
    pub fn from_settings(settings: &RedisSettings) -> anyhow::Result<Option<Self>> {
        if settings.url.trim().is_empty() {
            return Ok(None);
        }
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let client = redis::Client::open(settings.url.trim())
            .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
        let manager = Manager {
            client,
            pings: AtomicUsize::new(0),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| anyhow::anyhow!("redis pool: {e}"))?;
        crate::platform::telemetry::prometheus();
        Ok(Some(Self {
            pool,
            prefix: settings.prefix.clone(),
            timeout,
            round_trips: metrics::counter!("reklama_redis_round_trips_total"),
            quiet_until: Arc::new(AtomicU64::new(0)),
            epoch: tokio::time::Instant::now(),
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
    /// command was sent. For one timeout after a call timed out, every call fails at once
    /// ([`RedisError::Quiet`]) rather than wait out its own: a request that makes several calls
    /// (a new user's caps and profile, a card) answers within about twice the timeout, and
    /// background rounds fall back to local work at once; the first call after that tries again.
    pub async fn connection(&self) -> Result<Connection, RedisError> {
        self.check_quiet()?;
        tokio::time::timeout(self.timeout, self.pool.get())
            .await
            .map_err(|_| self.timed_out())?
            .map(Connection)
            .map_err(|e| RedisError::Pool(e.to_string()))
    }

    fn timed_out(&self) -> RedisError {
        metrics::counter!("reklama_backend_timeouts_total", "backend" => "redis").increment(1);
        self.went_quiet();
        RedisError::Timeout(self.timeout)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn went_quiet(&self) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX));
        self.quiet_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether a call timed out within the last timeout: calls made now fail at once.
    pub fn is_quiet(&self) -> bool {
        self.check_quiet().is_err()
    }

    /// The bound of any single call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn check_quiet(&self) -> Result<(), RedisError> {
        if self.now_ms() < self.quiet_until.load(Ordering::Relaxed) {
            Err(RedisError::Quiet(self.timeout))
        } else {
            Ok(())
        }
    }

    /// Bounds one call (one round trip: a command or a pipeline) by the configured timeout.
    pub async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, RedisError> {
        self.round_trips.increment(1);
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| self.timed_out())?
            .map_err(RedisError::from)
    }

    /// Runs `work` with a pooled connection, each step bounded by the configured timeout.
    pub async fn with<T, F, Fut>(&self, work: F) -> Result<T, RedisError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        let conn = self.connection().await?;
        self.bounded(work(conn)).await
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        self.with(|mut conn| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
        })
        .await
    }
}

/// One hash's fields and values, as HGETALL answers them.
pub type HashFields = Vec<(String, String)>;

type Reply = tokio::sync::oneshot::Sender<Result<Value, RedisError>>;

/// Reads of whole keys (a hash's `HGETALL`, a string's `GET`) shared by concurrent callers: a
/// read asked for while another is on its way to Redis joins the next pipeline, so a burst of
/// requests for users an instance has not seen costs one round trip per batch instead of one
/// per request. An idle instance still answers a lone read after a single round trip. Each
/// caller turns its own answer into its type, so a batch's task only moves replies.
///
/// A batch out for longer than [`OVERTAKE_AFTER`] (a Redis some way off, or a busy one) no
/// longer holds the reads behind it: the next read starts another batch beside it, up to
/// [`MAX_IN_FLIGHT`] at once. A read then waits about one round trip plus that interval
/// rather than the rest of the batch out and then its own.
#[derive(Clone)]
pub struct SharedReads {
    shared: Arc<Batches>,
}

/// A read waiting for its batch: the command (`HGETALL`, `GET`) and its key.
struct Read {
    command: &'static str,
    key: String,
}

struct Batches {
    redis: Redis,
    queue: Mutex<Queue>,
    /// Batches on their way at once at most.
    in_flight: usize,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(Read, Reply)>,
    /// Tasks sending batches; each keeps going until the queue is empty.
    senders: usize,
    /// A task was started and has not taken a batch yet: reads meanwhile join its first.
    starting: bool,
    /// When the newest batch went out.
    newest_sent: Option<Instant>,
}

impl Queue {
    /// Whether a read just queued needs a task of its own: none is sending, or the newest batch
    /// has been out for [`OVERTAKE_AFTER`] and fewer than `most` are.
    fn needs_sender(&self, most: usize) -> bool {
        self.senders == 0
            || (!self.starting
                && self.senders < most
                && self
                    .newest_sent
                    .is_some_and(|sent| sent.elapsed() >= OVERTAKE_AFTER))
    }
}

/// Keys in one pipeline at most.
const MAX_BATCH: usize = 512;
/// Batches on their way at once at most, each on a connection of its own, and never more than
/// half the pool's connections (the rest are for writes).
const MAX_IN_FLIGHT: usize = 4;
/// How long the newest batch is out before a read starts another beside it rather than wait
/// for it. Below a loopback Redis's round trip under load, batches do not multiply; a Redis
/// farther away gets one batch every interval.
const OVERTAKE_AFTER: Duration = Duration::from_millis(1);
/// Reads waiting at most: past it a read is refused at once (the caller works from what it has
/// in memory), so a Redis that answers slowly cannot make the queue grow with the traffic.
const MAX_WAITING: usize = 16 * MAX_BATCH;

impl SharedReads {
    pub fn new(redis: Redis) -> Self {
        Self {
            shared: Arc::new(Batches {
                in_flight: (redis.pool_usage().2 / 2).clamp(1, MAX_IN_FLIGHT),
                redis,
                queue: Mutex::new(Queue::default()),
            }),
        }
    }

    /// The Redis the reads go to, for the rest of its owner's calls.
    pub fn redis(&self) -> &Redis {
        &self.shared.redis
    }

    /// The fields of the hash at `key` (already prefixed); empty when it does not exist. See
    /// [`SharedReads::read`].
    pub async fn hash(&self, key: String) -> Result<HashFields, RedisError> {
        let value = self.read("HGETALL", key).await?;
        Ok(HashFields::from_redis_value(value).map_err(redis::RedisError::from)?)
    }

    /// The string at `key` (already prefixed); `None` when it does not exist. See
    /// [`SharedReads::read`].
    pub async fn bytes(&self, key: String) -> Result<Option<Vec<u8>>, RedisError> {
        let value = self.read("GET", key).await?;
        Ok(Option::<Vec<u8>>::from_redis_value(value).map_err(redis::RedisError::from)?)
    }

    /// `command key`'s answer. Waits at most `redis.timeout_ms`, however many batches are
    /// queued ahead of it while Redis is slow; a read given up on is left out of the next
    /// batch, and Redis counts as quiet (see [`Redis::connection`]).
    async fn read(&self, command: &'static str, key: String) -> Result<Value, RedisError> {
        let timeout = self.shared.redis.timeout;
        self.shared.redis.check_quiet()?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            if queue.waiting.len() >= MAX_WAITING {
                queue.waiting.retain(|(_, reply)| !reply.is_closed());
                if queue.waiting.len() >= MAX_WAITING {
                    metrics::counter!("reklama_redis_reads_refused_total").increment(1);
                    return Err(RedisError::Batch("too many reads waiting".into()));
                }
            }
            queue.waiting.push((Read { command, key }, reply));
            let start = queue.needs_sender(self.shared.in_flight);
            if start {
                queue.senders += 1;
                queue.starting = true;
            }
            start
        };
        if start {
            tokio::spawn(self.shared.clone().send_all());
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(answer) => {
                answer.unwrap_or_else(|_| Err(RedisError::Batch("the batch was abandoned".into())))
            }
            Err(_) => {
                self.shared.redis.went_quiet();
                Err(RedisError::Timeout(timeout))
            }
        }
    }
}

impl Batches {
    async fn send_all(self: Arc<Self>) {
        // Whatever ends this task (the queue ran dry, a shutdown dropped it), it no longer
        // counts as sending: with none left, the next caller starts a new one.
        struct Sending<'a>(&'a Batches, bool);
        impl Drop for Sending<'_> {
            fn drop(&mut self) {
                if self.1 {
                    let mut queue = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
                    queue.senders -= 1;
                    queue.starting = false;
                }
            }
        }
        let mut sending = Sending(&self, true);
        loop {
            let batch: Vec<(Read, Reply)> = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                // Whichever task takes the reads, the one started for them has nothing to wait
                // for.
                queue.starting = false;
                if queue.waiting.is_empty() {
                    queue.senders -= 1;
                    sending.1 = false;
                    return;
                }
                // Readers that gave up (timed out) need no answer.
                queue.waiting.retain(|(_, reply)| !reply.is_closed());
                let take = queue.waiting.len().min(MAX_BATCH);
                queue.newest_sent = Some(Instant::now());
                queue.waiting.drain(..take).collect()
            };
            if batch.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            // A key of the wrong type fails its own read (a `ServerError` value), not the batch.
            pipe.ignore_errors();
            for (read, _) in &batch {
                pipe.cmd(read.command).arg(&read.key);
            }
            let answers: Result<Vec<Value>, RedisError> = self
                .redis
                .with(|mut conn| async move { pipe.query_async(&mut conn).await })
                .await;
            match answers {
                Ok(answers) => {
                    for ((_, reply), fields) in batch.into_iter().zip(answers) {
                        let _gone = reply.send(Ok(fields));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for (_, reply) in batch {
                        let _gone = reply.send(Err(RedisError::Batch(message.clone())));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A pool on the Redis at `port` on loopback.
    fn redis_on(port: u16, pool_size: usize, timeout_ms: u64) -> Redis {
        Redis::from_settings(&RedisSettings {
            url: format!("redis://127.0.0.1:{port}"),
            prefix: "t:".into(),
            pool_size,
            timeout_ms,
        })
        .unwrap()
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_waiting_on_a_silent_redis_are_bounded_and_refused_at_once_past_the_bound() {
        // A Redis that accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let reads = SharedReads::new(redis_on(port, 2, 3000));
        let started = std::time::Instant::now();
        let waiting: Vec<_> = (0..MAX_WAITING + MAX_BATCH)
            .map(|i| {
                let reads = reads.clone();
                tokio::spawn(async move { reads.hash(format!("k{i}")).await })
            })
            .collect();
        // Let every read join the queue (one batch of them is on its way, unanswered).
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let refused = reads.hash("one-more".into()).await;
        assert!(
            matches!(&refused, Err(RedisError::Batch(reason)) if reason.contains("too many")),
            "{refused:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(2500));
        for read in waiting {
            assert!(read.await.unwrap().is_err());
        }
        held.abort();
    }

    /// A Redis of a few commands on loopback: each connection's commands are read in order and
    /// answered (`PING x` with `x`, anything else with nil), except while `silent` is set, when
    /// a `GET` goes unanswered. A `GET` is answered `get_delay_ms` after it is read. Counts the
    /// `PING`s, the connections, and the most connections waiting on a `GET` at once.
    struct Scripted {
        port: u16,
        pings: Arc<AtomicUsize>,
        connections: Arc<AtomicUsize>,
        silent: Arc<std::sync::atomic::AtomicBool>,
        get_delay_ms: Arc<AtomicU64>,
        most_gets_at_once: Arc<AtomicUsize>,
        serving: tokio::task::JoinHandle<()>,
    }

    impl Scripted {
        async fn start() -> Self {
            use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let pings = Arc::new(AtomicUsize::new(0));
            let connections = Arc::new(AtomicUsize::new(0));
            let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let get_delay_ms = Arc::new(AtomicU64::new(0));
            let most_gets_at_once = Arc::new(AtomicUsize::new(0));
            let gets_now = Arc::new(AtomicUsize::new(0));
            let (counted, opened, quiet) = (pings.clone(), connections.clone(), silent.clone());
            let (delay, most) = (get_delay_ms.clone(), most_gets_at_once.clone());
            let serving = tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    opened.fetch_add(1, Ordering::SeqCst);
                    let (counted, quiet) = (counted.clone(), quiet.clone());
                    let (delay, most, now) = (delay.clone(), most.clone(), gets_now.clone());
                    tokio::spawn(async move {
                        let (read, mut write) = socket.into_split();
                        let mut read = tokio::io::BufReader::new(read);
                        let mut line = String::new();
                        loop {
                            // `*n`, then n times `$len` and the bytes.
                            line.clear();
                            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let n: usize = line.trim()[1..].parse().unwrap();
                            let mut words = Vec::new();
                            for _ in 0..n {
                                line.clear();
                                read.read_line(&mut line).await.unwrap();
                                let len: usize = line.trim()[1..].parse().unwrap();
                                let mut word = vec![0; len + 2];
                                read.read_exact(&mut word).await.unwrap();
                                word.truncate(len);
                                words.push(String::from_utf8(word).unwrap());
                            }
                            let answer = match words[0].to_ascii_uppercase().as_str() {
                                "PING" => {
                                    counted.fetch_add(1, Ordering::SeqCst);
                                    format!("${}\r\n{}\r\n", words[1].len(), words[1])
                                }
                                "GET" if quiet.load(Ordering::SeqCst) => continue,
                                "GET" => {
                                    let waiting = now.fetch_add(1, Ordering::SeqCst) + 1;
                                    most.fetch_max(waiting, Ordering::SeqCst);
                                    let ms = delay.load(Ordering::SeqCst);
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                    now.fetch_sub(1, Ordering::SeqCst);
                                    "$-1\r\n".to_owned()
                                }
                                _ => "$-1\r\n".to_owned(),
                            };
                            if write.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            Self {
                port,
                pings,
                connections,
                silent,
                get_delay_ms,
                most_gets_at_once,
                serving,
            }
        }
    }

    async fn get(redis: &Redis) -> Result<Option<String>, RedisError> {
        redis
            .with(|mut conn| async move { redis::cmd("GET").arg("k").query_async(&mut conn).await })
            .await
    }

    /// A connection that answered within the last second goes out again as it is; one whose
    /// call was dropped at its deadline is checked with a `PING` first (and replaced: the
    /// answer it is still owed would come before the `PING`'s), as is one idle for a second.
    #[tokio::test]
    async fn a_connection_is_checked_before_use_only_after_a_lost_call_or_a_second_idle() {
        let server = Scripted::start().await;
        let redis = redis_on(server.port, 1, 200);
        for _ in 0..5 {
            assert_eq!(get(&redis).await.unwrap(), None);
        }
        assert_eq!(
            server.pings.load(Ordering::SeqCst),
            0,
            "no check between answers"
        );
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);

        server.silent.store(true, Ordering::SeqCst);
        assert!(matches!(get(&redis).await, Err(RedisError::Timeout(_))));
        server.silent.store(false, Ordering::SeqCst);
        // Calls fail at once for one timeout after a timeout.
        tokio::time::sleep(Duration::from_millis(250)).await;
        // The check finds the connection out of step (its PING's answer goes to the lost
        // GET) and fails; the next call gets a new connection, which answers.
        let mut tries = 0;
        let recovered = loop {
            tries += 1;
            match get(&redis).await {
                Ok(answer) => break answer,
                Err(e) if tries < 10 => {
                    tracing::debug!(error = %e, "not yet");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("no answer after {tries} tries: {e}"),
            }
        };
        assert_eq!(recovered, None);
        assert!(
            server.pings.load(Ordering::SeqCst) >= 1,
            "checked after the lost call"
        );
        assert!(server.connections.load(Ordering::SeqCst) >= 2, "replaced");

        let pings = server.pings.load(Ordering::SeqCst);
        assert_eq!(get(&redis).await.unwrap(), None);
        assert_eq!(
            server.pings.load(Ordering::SeqCst),
            pings,
            "answered just now"
        );
        tokio::time::sleep(ANSWERED_WITHIN + Duration::from_millis(100)).await;
        assert_eq!(get(&redis).await.unwrap(), None);
        assert_eq!(
            server.pings.load(Ordering::SeqCst),
            pings + 1,
            "idle for a second"
        );
        server.serving.abort();
    }

    /// Behind a batch that has been out for a while, reads start batches of their own on other
    /// connections, up to half the pool and never more than [`MAX_IN_FLIGHT`]; each read still
    /// gets its answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_behind_a_slow_batch_start_batches_of_their_own_up_to_the_bound() {
        let server = Scripted::start().await;
        server.get_delay_ms.store(300, Ordering::SeqCst);
        for (pool_size, at_once) in [(16, MAX_IN_FLIGHT), (4, 2), (1, 1)] {
            server.most_gets_at_once.store(0, Ordering::SeqCst);
            let reads = SharedReads::new(redis_on(server.port, pool_size, 5_000));
            let mut asked = Vec::new();
            // Each read comes well after the batch before it went out.
            for i in 0..6 {
                let reads = reads.clone();
                asked.push(tokio::spawn(
                    async move { reads.bytes(format!("k{i}")).await },
                ));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for read in asked {
                assert_eq!(read.await.unwrap().unwrap(), None);
            }
            assert_eq!(
                server.most_gets_at_once.load(Ordering::SeqCst),
                at_once,
                "batches out at once with a pool of {pool_size}"
            );
        }
        server.serving.abort();
    }

    /// A call waits for its answer as long as `redis.timeout_ms` says, longer than the Redis
    /// client's own half-second default, and no longer.
    #[tokio::test]
    async fn a_call_waits_up_to_the_configured_timeout_and_no_longer() {
        let server = Scripted::start().await;
        server.get_delay_ms.store(800, Ordering::SeqCst);
        assert_eq!(get(&redis_on(server.port, 1, 2_000)).await.unwrap(), None);
        let started = std::time::Instant::now();
        let cut = get(&redis_on(server.port, 1, 300)).await;
        assert!(matches!(cut, Err(RedisError::Timeout(_))), "{cut:?}");
        assert!(started.elapsed() < Duration::from_millis(700));
        server.serving.abort();
    }
}

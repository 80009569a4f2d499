//! The database: one connection type for PostgreSQL and SQLite, an r2d2 pool, embedded migrations,
//! and `Db::run`, which keeps every blocking diesel call on tokio's blocking pool, under a
//! deadline and a cap on the calls in flight.

mod add_up;
pub mod schema;
mod stored;

pub use add_up::{Bind, Table, add_up, sum_by_key};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection, Pool, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::platform::{deadline, request_id};

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Serialises concurrent migrators on PostgreSQL when several instances start at once.
const MIGRATION_LOCK_KEY: i64 = 0x0072_656b_6c61_6d61;

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs `work` in a transaction, the one way the product opens one (plain
/// `Connection::transaction` is refused by clippy.toml).
///
/// On SQLite the outermost transaction begins `IMMEDIATE`: it takes the single write lock at
/// once, waiting for another writer up to `busy_timeout`. A deferred transaction that read first
/// and writes later could not wait: its upgrade fails at once with "database is locked" whenever
/// another connection (a job, a flush) wrote in between. PostgreSQL, and a transaction nested in
/// another (a savepoint), begin as usual.
pub fn transaction<T, E, F>(conn: &mut DbConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    type Manager = <DbConnection as Connection>::TransactionManager;
    let outermost = Manager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .is_none();
    match conn {
        DbConnection::Sqlite(lite) if outermost => {
            AnsiTransactionManager::begin_transaction_sql(lite, "BEGIN IMMEDIATE")?
        }
        _ => Manager::begin_transaction(conn)?,
    }
    match work(conn) {
        Ok(value) => {
            Manager::commit_transaction(conn)?;
            Ok(value)
        }
        // A rollback that fails leaves the connection broken (the pool drops it); the work's
        // own error says more than that one.
        Err(error) => match Manager::rollback_transaction(conn) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://...`; the scheme picks the backend.
    pub url: String,
    pub pool_size: u32,
    pub connect_timeout_secs: u64,
    /// Server side: PostgreSQL's `statement_timeout`; SQLite's `busy_timeout`.
    pub statement_timeout_ms: u64,
    /// PostgreSQL's `lock_timeout`.
    pub lock_timeout_ms: u64,
    /// PostgreSQL's `idle_in_transaction_session_timeout`.
    pub idle_in_transaction_timeout_ms: u64,
    /// Client side: a call (checkout and work) answers `Unavailable` after this long.
    pub call_timeout_ms: u64,
    /// Blocking threads working for the database at once; 0 means twice `pool_size`.
    pub max_in_flight: u32,
    /// How long a call waits for one of those slots before answering `Unavailable`.
    pub queue_timeout_ms: u64,
    /// SQLite commits reach the disk before they return (`synchronous = FULL`); set from
    /// `tracking.journal_fsync`, so both stores of counts promise the same.
    #[serde(skip)]
    pub sync_every_commit: bool,
}

impl DatabaseSettings {
    /// Checks what types alone cannot; every message starts with the key at fault.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.pool_size == 0 {
            problems.push("database.pool_size: must be at least 1".into());
        }
        if self.call_timeout_ms == 0 {
            problems.push("database.call_timeout_ms: must be at least 1".into());
        }
        if self.statement_timeout_ms == 0 || self.statement_timeout_ms >= self.call_timeout_ms {
            problems.push(
                "database.statement_timeout_ms: must be at least 1 and below \
                 database.call_timeout_ms (a slow statement is then cancelled by the database, \
                 a definite failure, before its caller stops waiting for an answer)"
                    .into(),
            );
        }
        if self.queue_timeout_ms > self.call_timeout_ms {
            problems.push(
                "database.queue_timeout_ms: must not be above database.call_timeout_ms".into(),
            );
        }
        problems
    }

    /// The cap on blocking calls in flight that `max_in_flight` stands for.
    pub fn in_flight_cap(&self) -> usize {
        match self.max_in_flight {
            0 => self.pool_size.max(1) as usize * 2,
            n => n as usize,
        }
    }
}

/// Connection parameters a PostgreSQL URL gets unless it names them itself: a keep-alive probe
/// after 5 s of silence (then every 2 s, 3 misses) and `tcp_user_timeout` (data unacknowledged
/// for 10 s), so a socket to a host that vanished fails in seconds instead of the kernel's
/// minutes and the thread waiting on it is released.
const PG_SOCKET_PARAMETERS: [(&str, &str); 5] = [
    ("keepalives", "1"),
    ("keepalives_idle", "5"),
    ("keepalives_interval", "2"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
];

/// `url` with `connect_timeout` and the socket parameters added where the operator did not set
/// them.
pub fn postgres_url_with_deadlines(url: &str, connect_timeout_secs: u64) -> Result<String, String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let present: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
    // libpq takes whole seconds and treats anything below 2 as 2.
    let connect = connect_timeout_secs.max(2).to_string();
    let wanted = std::iter::once(("connect_timeout", connect.as_str()))
        .chain(PG_SOCKET_PARAMETERS.iter().copied())
        .filter(|(key, _)| !present.iter().any(|p| p == key))
        .collect::<Vec<_>>();
    if !wanted.is_empty() {
        parsed.query_pairs_mut().extend_pairs(wanted);
    }
    Ok(parsed.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database URL whose scheme has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    /// A file path, or `:memory:`.
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                format!(
                    "unsupported scheme in {url:?}: use sqlite://PATH or postgres://USER@HOST/DB"
                )
            })?;
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://data/reklama.db".into());
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    fn is_memory(&self) -> bool {
        matches!(self, Self::Sqlite(p) if p.as_os_str() == ":memory:")
    }
}

/// Opens connections for the pool, picking the backend from the URL (diesel's derived
/// `establish` would try each backend in turn and hide the real error).
#[derive(Debug)]
struct Manager {
    url: DatabaseUrl,
    /// The URL libpq is given: the configured one plus the deadline parameters.
    connect_url: String,
    /// Run on every new connection: the server-side deadlines (PostgreSQL) or the pragmas
    /// (SQLite).
    session: String,
    /// Puts the deadlines back on a connection that lifted them (migrations).
    restore: String,
}

impl Manager {
    fn new(url: DatabaseUrl, settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let restore = match &url {
            DatabaseUrl::Postgres(_) => postgres_session(
                settings.statement_timeout_ms,
                settings.lock_timeout_ms,
                settings.idle_in_transaction_timeout_ms,
            ),
            DatabaseUrl::Sqlite(_) => {
                format!("PRAGMA busy_timeout = {};", settings.statement_timeout_ms)
            }
        };
        let (connect_url, session) = match &url {
            DatabaseUrl::Postgres(raw) => (
                postgres_url_with_deadlines(raw, settings.connect_timeout_secs)
                    .map_err(|e| anyhow::anyhow!("database.url: {e}"))?,
                postgres_session(
                    settings.statement_timeout_ms,
                    settings.lock_timeout_ms,
                    settings.idle_in_transaction_timeout_ms,
                ),
            ),
            // busy_timeout first: switching to WAL (and recovering a WAL left by a killed
            // process) takes a lock, and without it a connection opened meanwhile fails at
            // once. WAL lets readers run beside the single writer.
            DatabaseUrl::Sqlite(path) => (
                path.to_string_lossy().into_owned(),
                format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = {}; PRAGMA foreign_keys = ON;",
                    settings.statement_timeout_ms,
                    if settings.sync_every_commit {
                        "FULL"
                    } else {
                        "NORMAL"
                    }
                ),
            ),
        };
        Ok(Self {
            url,
            connect_url,
            session,
            restore,
        })
    }
}

/// The server-side deadlines of a PostgreSQL session: no statement runs, no lock is waited for,
/// and no transaction sits idle (its client gone quiet) past them.
fn postgres_session(statement_ms: u64, lock_ms: u64, idle_ms: u64) -> String {
    format!(
        "SET statement_timeout = {statement_ms}; SET lock_timeout = {lock_ms}; \
         SET idle_in_transaction_session_timeout = {idle_ms};"
    )
}

/// A pooled connection and whether it may be handed out again.
pub struct Pooled {
    conn: DbConnection,
    /// Its call was abandoned by the caller (timed out): whatever state the socket or the
    /// session is in, it is closed rather than reused.
    broken: bool,
}

impl ManageConnection for Manager {
    type Connection = Pooled;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Pooled, r2d2::Error> {
        let mut conn = match &self.url {
            DatabaseUrl::Postgres(_) => PgConnection::establish(&self.connect_url)
                .map(DbConnection::Postgresql)
                .map_err(r2d2::Error::ConnectionError)?,
            DatabaseUrl::Sqlite(_) => SqliteConnection::establish(&self.connect_url)
                .map(DbConnection::Sqlite)
                .map_err(r2d2::Error::ConnectionError)?,
        };
        conn.batch_execute(&self.session)
            .map_err(r2d2::Error::QueryError)?;
        Ok(Pooled {
            conn,
            broken: false,
        })
    }

    fn is_valid(&self, pooled: &mut Pooled) -> Result<(), r2d2::Error> {
        pooled
            .conn
            .batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, pooled: &mut Pooled) -> bool {
        pooled.broken || std::thread::panicking() || pooled.conn.is_broken()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(diesel::result::Error),
}

/// Whether an insert failed only because the row's key is taken.
pub fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Errors that say the database is busy or gone for now, not that the query is wrong: callers
/// answer them as 503 with Retry-After, like an unreachable database.
impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        let transient = match &e {
            Error::DatabaseError(Kind::ClosedConnection | Kind::SerializationFailure, _) => true,
            Error::DatabaseError(_, info) => {
                let message = info.message();
                // SQLite: SQLITE_BUSY / SQLITE_LOCKED once busy_timeout ran out. PostgreSQL: a
                // lock or statement timeout, a deadlock victim, a server shutting down.
                [
                    "database is locked",
                    "database table is locked",
                    "database is busy",
                    "canceling statement due to",
                    "deadlock detected",
                    "terminating connection",
                ]
                .iter()
                .any(|m| message.contains(m))
            }
            _ => false,
        };
        if transient {
            Self::Unavailable(e.to_string())
        } else {
            Self::Query(e)
        }
    }
}

impl DbError {
    /// What a load shared by several requests hands each of them back (they get it as
    /// `Unavailable`): an unavailable database's own reason, not wrapped in its wording twice.
    pub fn into_reason(self) -> String {
        match self {
            Self::Unavailable(reason) => reason,
            other => other.to_string(),
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Self::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

/// The shared database handle: cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool<Manager>,
    backend: Backend,
    checkouts: Arc<AtomicU64>,
    /// One permit per blocking thread working for the database, held by the thread itself, so
    /// a call abandoned on timeout keeps its slot until its thread is really free.
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    call_timeout: Duration,
    queue_timeout: Duration,
    outcomes: Arc<Outcomes>,
    /// What puts a connection's deadlines back after migrations lifted them.
    restore_deadlines: Arc<str>,
}

/// Calls that ended without an answer from the database, since start.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Abandoned after their deadline.
    pub timeouts: AtomicU64,
    /// Refused: every slot was taken for the whole queue timeout.
    pub saturated: AtomicU64,
}

impl Db {
    /// Builds the pool; for SQLite creates the file's directory. Fails when the database cannot be
    /// reached, so that a misconfigured instance stops at start-up with the reason.
    pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        Self::connect_keeping(settings, 1)
    }

    /// [`Db::connect`] for a command that makes a few calls and exits (`migrate`, `customer
    /// add`, ...). A server's pool keeps one idle connection, opening a replacement in its own
    /// thread whenever the last one is taken or closed (which is also what a caller waiting
    /// for a connection that was closed as broken gets). A command's process may exit while
    /// libpq is inside OpenSSL in that thread, which crashes it; so a command's pool opens a
    /// connection only when a call needs one.
    pub fn connect_for_command(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        Self::connect_keeping(settings, 0)
    }

    fn connect_keeping(settings: &DatabaseSettings, min_idle: u32) -> anyhow::Result<Self> {
        let url =
            DatabaseUrl::parse(&settings.url).map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
        if let DatabaseUrl::Sqlite(path) = &url {
            create_parent_dir(path)?;
        }
        let backend = url.backend();
        let size = if url.is_memory() {
            1
        } else {
            settings.pool_size.max(1)
        };
        let call_timeout = Duration::from_millis(settings.call_timeout_ms.max(1));
        // A thread waiting for a connection is released no later than its caller gives up.
        let checkout = Duration::from_secs(settings.connect_timeout_secs.max(1)).min(call_timeout);
        let manager = Manager::new(url, settings)?;
        let restore_deadlines: Arc<str> = manager.restore.as_str().into();
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(min_idle))
            .connection_timeout(checkout)
            .build(manager)
            .map_err(|e| anyhow::anyhow!("database.url: cannot connect: {e}"))?;
        if min_idle == 0 {
            // Building waited for no connection: the first one proves the database answers.
            drop(
                pool.get()
                    .map_err(|e| anyhow::anyhow!("database.url: cannot connect: {e}"))?,
            );
        }
        let max_in_flight = settings.in_flight_cap();
        Ok(Self {
            pool,
            backend,
            checkouts: Arc::new(AtomicU64::new(0)),
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            call_timeout,
            queue_timeout: Duration::from_millis(settings.queue_timeout_ms),
            outcomes: Arc::new(Outcomes::default()),
            restore_deadlines,
        })
    }

    /// Blocking threads working for the database now, and the most allowed.
    pub fn in_flight(&self) -> (usize, usize) {
        (
            self.max_in_flight - self.slots.available_permits(),
            self.max_in_flight,
        )
    }

    /// Calls that timed out or found every slot taken, since start.
    pub fn outcomes(&self) -> &Outcomes {
        &self.outcomes
    }

    /// A client-side call deadline: `database.call_timeout_ms`.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many times a connection was taken from the pool: lets tests prove that a hot path
    /// stays off the database.
    pub fn checkouts(&self) -> u64 {
        self.checkouts.load(Ordering::Relaxed)
    }

    /// The pool's connections: (open, idle, most allowed).
    pub fn pool_usage(&self) -> (u32, u32, u32) {
        let state = self.pool.state();
        (
            state.connections,
            state.idle_connections,
            self.pool.max_size(),
        )
    }

    /// Runs blocking diesel work on the blocking pool, inside the caller's tracing span and as
    /// part of the caller's request (see [`request_id`]), within `database.call_timeout_ms` (or
    /// what is left of the request's deadline, see [`deadline`]).
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    {
        self.run_within(self.call_timeout, work).await
    }

    /// [`Db::run`] with its own limit, for background work whose calls legitimately take longer
    /// than a request's (still shortened by a request's deadline when there is one).
    ///
    /// The call first takes one of `max_in_flight` slots, waiting at most
    /// `database.queue_timeout_ms`, so a hung database holds that many blocking threads at
    /// most; then it waits for its work until the limit. Either wait running out answers
    /// [`DbError::Unavailable`] while the thread, if it started, finishes (or fails) on its
    /// own; its connection is then closed, not reused. Work that timed out may still have been
    /// done: the server-side deadlines are shorter, so that is left to a hang of the network.
    pub async fn run_within<T, E, F>(&self, limit: Duration, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    {
        let started = tokio::time::Instant::now();
        let limit = deadline::bound(limit);
        if limit.is_zero() {
            return Err(self.timed_out(limit).into());
        }
        let queued = tokio::time::timeout(
            self.queue_timeout.min(limit),
            self.slots.clone().acquire_owned(),
        )
        .await;
        let Ok(Ok(slot)) = queued else {
            self.outcomes.saturated.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("reklama_db_saturated_total").increment(1);
            return Err(E::from(DbError::Unavailable(format!(
                "database saturated: {} calls in flight",
                self.max_in_flight
            ))));
        };
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(self.timed_out(limit).into());
        }
        let db = self.clone();
        let span = tracing::Span::current();
        let request = request_id::current();
        let abandoned = Arc::new(AtomicBool::new(false));
        let seen_abandoned = abandoned.clone();
        let call = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _entered = span.enter();
            request_id::in_blocking(request, || {
                let mut pooled = db.get()?;
                let result = work(&mut pooled.conn);
                if seen_abandoned.load(Ordering::Relaxed) {
                    pooled.broken = true;
                }
                result
            })
        });
        match tokio::time::timeout(left, call).await {
            Ok(joined) => joined
                .map_err(|e| E::from(DbError::Unavailable(format!("database task failed: {e}"))))?,
            Err(_) => {
                abandoned.store(true, Ordering::Relaxed);
                Err(self.timed_out(limit).into())
            }
        }
    }

    /// Counts and logs a call abandoned after `limit`.
    fn timed_out(&self, limit: Duration) -> DbError {
        self.outcomes.timeouts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("reklama_backend_timeouts_total", "backend" => "database").increment(1);
        tracing::warn!(
            limit_ms = limit.as_millis() as u64,
            "database call timed out; answering without it"
        );
        DbError::Unavailable(format!("database call timed out after {limit:?}"))
    }

    /// A pooled connection, counted.
    fn get(&self) -> Result<r2d2::PooledConnection<Manager>, DbError> {
        self.checkouts.fetch_add(1, Ordering::Relaxed);
        self.pool
            .get()
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    /// Applies the embedded migrations that have not run yet; returns their names.
    /// Runs at start-up, outside the request deadlines: a migration may take long and may
    /// wait for another instance's, so its connection lifts the statement and lock timeouts
    /// and puts them back afterwards.
    pub fn migrate(&self) -> anyhow::Result<Vec<String>> {
        let mut pooled = self.get()?;
        let applied = migrate_on(&mut pooled.conn);
        let restored = pooled.conn.batch_execute(&self.restore_deadlines);
        if restored.is_err() {
            pooled.broken = true;
        }
        let applied = applied?;
        restored.map_err(|e| anyhow::anyhow!("database: cannot restore the deadlines: {e}"))?;
        Ok(applied)
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.run(|conn| conn.batch_execute("SELECT 1").map_err(DbError::from))
            .await
    }
}

/// Applies the pending migrations with the statement and lock timeouts lifted.
fn migrate_on(conn: &mut DbConnection) -> anyhow::Result<Vec<String>> {
    let applied = match conn {
        DbConnection::Postgresql(pg) => {
            pg.batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")?;
            pg.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
            let result = pg.run_pending_migrations(POSTGRES_MIGRATIONS).map(names);
            pg.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))?;
            result
        }
        DbConnection::Sqlite(lite) => {
            lite.batch_execute("PRAGMA busy_timeout = 60000")?;
            lite.run_pending_migrations(SQLITE_MIGRATIONS).map(names)
        }
    };
    applied.map_err(|e| anyhow::anyhow!("migrations failed: {e}"))
}

fn names(versions: Vec<diesel::migration::MigrationVersion<'_>>) -> Vec<String> {
    versions.iter().map(ToString::to_string).collect()
}

fn create_parent_dir(path: &Path) -> anyhow::Result<()> {
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("database.url: cannot create {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Text as an SQL string literal, for statements built with `format!` (multi-row statements
/// both backends read alike): quotes are doubled, so no text can end the literal.
pub fn sql_text(text: &str) -> String {
    let mut literal = String::with_capacity(text.len() + 2);
    literal.push('\'');
    for part in text.split_inclusive('\'') {
        literal.push_str(part);
        if part.ends_with('\'') {
            literal.push('\'');
        }
    }
    literal.push('\'');
    literal
}

/// Milliseconds since the Unix epoch: the one time representation stored in the database.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// For unit tests: the tests' PostgreSQL server (`REKLAMA_TEST_PG_URL`, no database named) when
/// they run on PostgreSQL (`REKLAMA_TEST_DATABASE=postgres`), else `None`.
#[cfg(test)]
pub(crate) fn test_postgres_server() -> Option<String> {
    (std::env::var("REKLAMA_TEST_DATABASE").as_deref() == Ok("postgres")).then(|| {
        std::env::var("REKLAMA_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
    })
}

/// For unit tests: a migrated SQLite database in a new temporary directory, which must outlive it.
#[cfg(test)]
impl Db {
    pub(crate) fn temporary() -> (tempfile::TempDir, Self) {
        Self::temporary_with(|_| {})
    }

    /// [`Db::temporary`] with some settings changed.
    #[allow(clippy::unwrap_used)]
    pub(crate) fn temporary_with(
        tweak: impl FnOnce(&mut DatabaseSettings),
    ) -> (tempfile::TempDir, Self) {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("test.db").display()),
            pool_size: 1,
            connect_timeout_secs: 5,
            statement_timeout_ms: 3000,
            lock_timeout_ms: 2000,
            idle_in_transaction_timeout_ms: 10000,
            call_timeout_ms: 4000,
            max_in_flight: 0,
            queue_timeout_ms: 1000,
            sync_every_commit: false,
        };
        tweak(&mut settings);
        let db = Self::connect(&settings).unwrap();
        db.migrate().unwrap();
        (dir, db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_literals_double_every_quote() {
        assert_eq!(sql_text(""), "''");
        assert_eq!(sql_text("plain"), "'plain'");
        assert_eq!(sql_text("it's"), "'it''s'");
        assert_eq!(sql_text("''x'"), "'''''x'''");
    }

    #[test]
    fn url_scheme_picks_the_backend() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/reklama.db"),
            Ok(DatabaseUrl::Sqlite(PathBuf::from("data/reklama.db")))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/reklama/r.db"),
            Ok(DatabaseUrl::Sqlite(PathBuf::from("/var/lib/reklama/r.db")))
        );
        assert_eq!(
            DatabaseUrl::parse("postgres://postgres@127.0.0.1/db").map(|u| u.backend()),
            Ok(Backend::Postgres)
        );
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn postgres_urls_get_the_deadline_parameters_the_operator_did_not_set() {
        assert_eq!(
            postgres_url_with_deadlines("postgres://app@db:5432/reklama", 5).as_deref(),
            Ok(
                "postgres://app@db:5432/reklama?connect_timeout=5&keepalives=1&keepalives_idle=5\
                &keepalives_interval=2&keepalives_count=3&tcp_user_timeout=10000"
            )
        );
        assert_eq!(
            postgres_url_with_deadlines(
                "postgres://app@db/reklama?sslmode=require&tcp_user_timeout=30000&connect_timeout=9",
                1
            )
            .as_deref(),
            Ok("postgres://app@db/reklama?sslmode=require&tcp_user_timeout=30000&connect_timeout=9\
                &keepalives=1&keepalives_idle=5&keepalives_interval=2&keepalives_count=3")
        );
        assert_eq!(
            postgres_url_with_deadlines("postgres://app@db/reklama", 1)
                .map(|u| u.contains("connect_timeout=2&")),
            Ok(true),
            "libpq's smallest connect timeout"
        );
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_call_past_its_deadline_answers_unavailable_and_its_connection_is_not_reused() {
        let (_dir, db) = Db::temporary();
        let slow = db
            .run_within(Duration::from_millis(50), |conn| {
                conn.batch_execute("CREATE TEMP TABLE abandoned (x INTEGER)")?;
                std::thread::sleep(Duration::from_millis(300));
                Ok::<_, DbError>(())
            })
            .await;
        assert!(matches!(slow, Err(DbError::Unavailable(ref m)) if m.contains("timed out")));
        assert_eq!(db.outcomes().timeouts.load(Ordering::Relaxed), 1);
        // The slot stays the thread's until it is done.
        assert_eq!(db.in_flight().0, 1);
        // The pool's one connection is closed once the thread lets it go: the next call works
        // on a new one, which has not seen the abandoned call's temporary table.
        let reused = db
            .run(|conn| Ok::<_, DbError>(conn.batch_execute("SELECT x FROM abandoned").is_ok()))
            .await
            .unwrap();
        assert!(!reused, "the abandoned connection was handed out again");
        assert_eq!(db.in_flight().0, 0);
        assert_eq!(db.outcomes().saturated.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn migrations_leave_the_connection_with_its_deadlines() {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Timeout {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            timeout: i64,
        }
        let (_dir, db) = Db::temporary();
        let busy = db
            .run(|conn| {
                diesel::sql_query("PRAGMA busy_timeout")
                    .get_result::<Timeout>(conn)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        assert_eq!(busy.timeout, 3000);
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn calls_past_the_in_flight_cap_are_refused_after_the_queue_timeout() {
        let (_dir, mut db) = Db::temporary();
        db.slots = Arc::new(Semaphore::new(1));
        db.max_in_flight = 1;
        db.queue_timeout = Duration::from_millis(50);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let holder = {
            let db = db.clone();
            tokio::spawn(async move {
                db.run(move |_conn| {
                    let _ = hold.recv();
                    Ok::<_, DbError>(())
                })
                .await
            })
        };
        while db.in_flight().0 == 0 {
            tokio::task::yield_now().await;
        }
        let started = std::time::Instant::now();
        let refused = db.run(|_conn| Ok::<_, DbError>(())).await;
        assert!(matches!(refused, Err(DbError::Unavailable(ref m)) if m.contains("saturated")));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(db.outcomes().saturated.load(Ordering::Relaxed), 1);
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        db.run(|_conn| Ok::<_, DbError>(())).await.unwrap();
    }

    /// Another connection holds SQLite's write lock for a moment while a transaction reads, then
    /// writes what it read: the transaction waits for the lock and sees the other's row, where a
    /// deferred one (diesel's plain `transaction`) fails at its write with "database is locked".
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_transaction_that_reads_before_it_writes_waits_for_another_sqlite_writer() {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        fn add_next(conn: &mut DbConnection) -> Result<i64, DbError> {
            let seen =
                diesel::sql_query("SELECT COUNT(*) AS n FROM probe").get_result::<Count>(conn)?;
            diesel::sql_query(format!("INSERT INTO probe VALUES ({})", seen.n + 1))
                .execute(conn)?;
            Ok(seen.n)
        }
        async fn while_another_writes<T: Send + 'static>(
            db: &Db,
            url: &Path,
            work: fn(&mut DbConnection) -> Result<T, DbError>,
        ) -> Result<T, DbError> {
            let mut holder = SqliteConnection::establish(&url.display().to_string()).unwrap();
            holder
                .batch_execute("BEGIN IMMEDIATE; INSERT INTO probe VALUES (0)")
                .unwrap();
            let (started, wait) = std::sync::mpsc::channel::<()>();
            let releaser = std::thread::spawn(move || {
                let _ = wait.recv();
                std::thread::sleep(Duration::from_millis(300));
                holder.batch_execute("COMMIT").unwrap();
            });
            let outcome = db
                .run(move |conn| {
                    let _ = started.send(());
                    work(conn)
                })
                .await;
            releaser.join().unwrap();
            outcome
        }
        let (dir, db) = Db::temporary();
        let url = dir.path().join("test.db");
        db.run(|conn| Ok::<_, DbError>(conn.batch_execute("CREATE TABLE probe (x INTEGER)")?))
            .await
            .unwrap();

        let seen = while_another_writes(&db, &url, |conn| transaction(conn, add_next))
            .await
            .unwrap();
        assert_eq!(
            seen, 1,
            "the transaction began after the other writer committed"
        );

        #[allow(clippy::disallowed_methods)]
        let deferred = while_another_writes(&db, &url, |conn| conn.transaction(add_next)).await;
        assert!(
            matches!(deferred, Err(DbError::Unavailable(ref m)) if m.contains("locked")),
            "{:?}",
            deferred.map(|_| ())
        );
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_locked_sqlite_database_is_unavailable_not_a_query_error() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("locked.db").display().to_string();
        let mut holder = SqliteConnection::establish(&url).unwrap();
        holder
            .batch_execute("CREATE TABLE t (x INTEGER); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
            .unwrap();
        let mut writer = SqliteConnection::establish(&url).unwrap();
        writer.batch_execute("PRAGMA busy_timeout = 0").unwrap();
        let error = DbError::from(
            writer
                .batch_execute("INSERT INTO t VALUES (2)")
                .unwrap_err(),
        );
        assert!(matches!(error, DbError::Unavailable(_)), "{error:?}");
        holder.batch_execute("COMMIT").unwrap();
        let wrong = DbError::from(
            writer
                .batch_execute("INSERT INTO nowhere VALUES (1)")
                .unwrap_err(),
        );
        assert!(matches!(wrong, DbError::Query(_)), "{wrong:?}");
    }

    #[test]
    fn a_shared_load_hands_back_the_reason_without_wrapping_it_twice() {
        let reason = DbError::Unavailable("database call timed out after 2s".into()).into_reason();
        assert_eq!(reason, "database call timed out after 2s");
        // Its waiters wrap it once, as they would the database's own error.
        assert_eq!(
            DbError::Unavailable(reason).to_string(),
            "database unavailable: database call timed out after 2s"
        );
        let query = DbError::Query(diesel::result::Error::NotFound).into_reason();
        assert_eq!(query, diesel::result::Error::NotFound.to_string());
    }

    /// Runs where the tests' PostgreSQL is configured (`REKLAMA_TEST_DATABASE=postgres`).
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_postgresql_lock_timeout_is_unavailable_not_a_query_error() {
        let Some(base) = test_postgres_server() else {
            return;
        };
        let mut holder = PgConnection::establish(&format!("{base}/postgres")).unwrap();
        let table = format!("lock_probe_{}", std::process::id());
        holder
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (x INTEGER)"
            ))
            .unwrap();
        holder
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
            ))
            .unwrap();
        let mut writer = PgConnection::establish(&format!("{base}/postgres")).unwrap();
        writer.batch_execute("SET lock_timeout = '20ms'").unwrap();
        let error = DbError::from(
            writer
                .batch_execute(&format!("INSERT INTO {table} VALUES (1)"))
                .unwrap_err(),
        );
        holder
            .batch_execute(&format!("ROLLBACK; DROP TABLE {table}"))
            .unwrap();
        assert!(matches!(error, DbError::Unavailable(_)), "{error:?}");
    }
}

//! The database: one connection type for PostgreSQL and SQLite, an r2d2 pool, embedded migrations,
//! and `Db::run`, which keeps every blocking diesel call on tokio's blocking pool.

pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection, Pool};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use serde::{Deserialize, Serialize};

use crate::platform::request_id;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Serialises concurrent migrators on PostgreSQL when several instances start at once.
const MIGRATION_LOCK_KEY: i64 = 0x0072_656b_6c61_6d61;

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://...`; the scheme picks the backend.
    pub url: String,
    pub pool_size: u32,
    pub connect_timeout_secs: u64,
    /// SQLite commits reach the disk before they return (`synchronous = FULL`); set from
    /// `tracking.journal_fsync`, so both stores of counts promise the same.
    #[serde(skip)]
    pub sync_every_commit: bool,
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
    sync_every_commit: bool,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        match &self.url {
            DatabaseUrl::Postgres(url) => PgConnection::establish(url)
                .map(DbConnection::Postgresql)
                .map_err(r2d2::Error::ConnectionError),
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(r2d2::Error::ConnectionError)?;
                // busy_timeout first: switching to WAL (and recovering a WAL left by a killed
                // process) takes a lock, and without it a connection opened meanwhile fails at
                // once. WAL lets readers run beside the single writer.
                let synchronous = if self.sync_every_commit {
                    "FULL"
                } else {
                    "NORMAL"
                };
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
                ))
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut DbConnection) -> bool {
        false
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(diesel::result::Error),
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
}

impl Db {
    /// Builds the pool; for SQLite creates the file's directory. Fails when the database cannot be
    /// reached, so that a misconfigured instance stops at start-up with the reason.
    pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
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
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(settings.connect_timeout_secs.max(1)))
            .build(Manager {
                url,
                sync_every_commit: settings.sync_every_commit,
            })
            .map_err(|e| anyhow::anyhow!("database.url: cannot connect: {e}"))?;
        Ok(Self {
            pool,
            backend,
            checkouts: Arc::new(AtomicU64::new(0)),
        })
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
    /// part of the caller's request (see [`request_id`]).
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    {
        let db = self.clone();
        let span = tracing::Span::current();
        let request = request_id::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            request_id::in_blocking(request, || {
                let mut conn = db.get()?;
                work(&mut conn)
            })
        })
        .await
        .map_err(|e| E::from(DbError::Unavailable(format!("database task failed: {e}"))))?
    }

    /// A pooled connection, counted.
    fn get(&self) -> Result<r2d2::PooledConnection<Manager>, DbError> {
        self.checkouts.fetch_add(1, Ordering::Relaxed);
        self.pool
            .get()
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    /// Applies the embedded migrations that have not run yet; returns their names.
    pub fn migrate(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = self.get()?;
        let applied = match &mut *conn {
            DbConnection::Postgresql(pg) => {
                pg.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
                let result = pg.run_pending_migrations(POSTGRES_MIGRATIONS).map(names);
                pg.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))?;
                result
            }
            DbConnection::Sqlite(lite) => lite.run_pending_migrations(SQLITE_MIGRATIONS).map(names),
        };
        applied.map_err(|e| anyhow::anyhow!("migrations failed: {e}"))
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.run(|conn| conn.batch_execute("SELECT 1").map_err(DbError::from))
            .await
    }
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

/// Milliseconds since the Unix epoch: the one time representation stored in the database.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// For unit tests: a migrated SQLite database in a new temporary directory, which must outlive it.
#[cfg(test)]
impl Db {
    #[allow(clippy::unwrap_used)]
    pub(crate) fn temporary() -> (tempfile::TempDir, Self) {
        let dir = tempfile::tempdir().unwrap();
        let db = Self::connect(&DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("test.db").display()),
            pool_size: 1,
            connect_timeout_secs: 5,
            sync_every_commit: false,
        })
        .unwrap();
        db.migrate().unwrap();
        (dir, db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Runs where the tests' PostgreSQL is configured (`REKLAMA_TEST_DATABASE=postgres`).
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_postgresql_lock_timeout_is_unavailable_not_a_query_error() {
        if std::env::var("REKLAMA_TEST_DATABASE").as_deref() != Ok("postgres") {
            return;
        }
        let base = std::env::var("REKLAMA_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
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

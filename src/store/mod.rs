//! Storage that outlives the process: the card log (every card returned), clinicians' feedback on those cards,
//! override analytics over both, and the JWT `jti` replay cache shared by several instances (issue 14).
//!
//! One interface, [`Store`], over two backends chosen by [`StoreConfig`]:
//!
//! - **SQLite** (the default): one file, created with its directory on first open, so `cargo run --release`
//!   still needs nothing else. WAL journal, `synchronous = NORMAL` (a power cut may lose the last
//!   transactions, never corrupt the file), a 5 s busy time-out so several processes on one file wait for
//!   each other instead of failing.
//! - **PostgreSQL** by URL, for several instances sharing one card log and one `jti` cache. TLS (`sslmode=`)
//!   goes through rustls with aws-lc-rs, which the service already builds for its HTTPS client.
//!
//! The schema is versioned (`migrations/sqlite/`, `migrations/postgres/`, embedded in the binary) and
//! brought up to date by [`Store::open`]; re-opening an up-to-date store changes nothing. Both folders define the
//! same tables, columns and keys, and every query below is one text for both backends (placeholders `$1`,
//! `ON CONFLICT`, `RETURNING`, window functions and integer arithmetic are common to SQLite 3.35+ and
//! PostgreSQL), so the two cannot drift apart in meaning; `tests/store.rs` runs one suite against both.
//!
//! **What is stored, and what is not.** Cards: their uuid, service, template, indicator, stance, suggestion
//! uuids, time, the client's issuer and tenant, and the `hookInstance` (which names the call, not the patient).
//! Feedback: card uuid, outcome, accepted suggestion ids, the override reason's code and system, the clinician's
//! comment only when the caller passes it, times, issuer. Runs of the service: instance name (host and port),
//! start, card-log progress, end ([`Store::begin_run`]: how a `kill -9` is counted on the next start).
//! **No patient identifier** (no patient id, encounter,
//! FHIR server URL, or record content) has a column, and no query takes one. Every text is capped
//! ([`MAX_TEXT_CHARS`], [`MAX_COMMENT_CHARS`], [`MAX_LIST_ITEMS`]) and NUL characters (which PostgreSQL
//! refuses in text) become U+FFFD, so a caller cannot grow a row without bound, and both backends store the same.
//!
//! **Times** are stored as Unix milliseconds (UTC) in integer columns: the same arithmetic on both backends for
//! retention and ISO weeks, with no time-zone settings involved.
//!
//! **Why sqlx** rather than rusqlite + tokio-postgres: one async API and one pool type for both backends (the
//! alternative is two APIs, a blocking pool for SQLite and a hand-written pool for PostgreSQL), versioned
//! migrations with checksums and a cross-process lock, and no new TLS or runtime stack. Its cost is measured in
//! docs/storage.md. It is used without its `macros` feature (no compile-time query checks, which would
//! need a database at build time, and a second copy of sqlx for the proc-macro); `migrations.rs` embeds the
//! migrations by hand.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Store`], records, errors, the queries |
//! | `migrations.rs` | the embedded schema versions |
//! | `analytics.rs` | [`Analytics`], the counting rule, and the arrangement of the grouped rows |
//! | `cardlog.rs` | [`CardLog`]: the bounded queue and batch writer that keep the card log off the hot path |

mod analytics;
mod cardlog;
mod migrations;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Transaction};
use time::OffsetDateTime;

pub use analytics::{Analytics, ReasonCount, TemplateStats, VersionStats, WeekStats, WeekTotal, override_rate};
pub use cardlog::{CardLog, CardLogWriter};
pub use migrations::LATEST as SCHEMA_VERSION;

/// The SQLite file's name in a data directory ([`StoreConfig::sqlite_in`]).
pub const SQLITE_FILE_NAME: &str = "dry-needling-cds.sqlite3";
/// Ids, codes, systems, issuers, tenants and `hookInstance`s are cut to this many characters.
pub const MAX_TEXT_CHARS: usize = 256;
/// A clinician's override comment is cut to this many characters.
pub const MAX_COMMENT_CHARS: usize = 2000;
/// Suggestion ids kept per card or feedback item.
pub const MAX_LIST_ITEMS: usize = 64;
/// How long a statement waits for another connection's (or process's) write lock on SQLite.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite serialises writers anyway; a few connections let reads run beside a write (WAL).
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// Per instance; several instances share the server's `max_connections` (100 by default).
const POSTGRES_MAX_CONNECTIONS: u32 = 8;

/// The data directory when neither the configuration, `--data-dir` nor `DRY_NEEDLING_CDS_DATA_DIR` names one:
/// `data/` under the working directory, so that `cargo run --release` in a checkout keeps its log beside it.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Cards and feedback are kept this long by default: a year, so that a year's trend can be read.
pub const DEFAULT_RETENTION_DAYS: u32 = 365;

/// How the service uses a store (`[store]` in the configuration, docs/storage.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `None`: no store (`backend = "off"`): cards and feedback are only logged, and replay is checked per
    /// process.
    pub backend: Option<StoreConfig>,
    /// Cards issued and feedback received longer ago than this are deleted (checked hourly).
    pub retention_days: u32,
    /// Whether an override's free-text `userComment` is stored (it may name the patient; off by default).
    pub keep_override_comments: bool,
    /// Cards the card log's queue holds before it drops them.
    pub queue_capacity: usize,
}

impl Default for StoreSettings {
    fn default() -> StoreSettings {
        StoreSettings {
            backend: Some(StoreConfig::sqlite_in(Path::new(DEFAULT_DATA_DIR))),
            retention_days: DEFAULT_RETENTION_DAYS,
            keep_override_comments: false,
            queue_capacity: cardlog::DEFAULT_CAPACITY,
        }
    }
}

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A SQLite file; its directory is created (mode 0700) if missing.
    Sqlite { path: PathBuf },
    /// A PostgreSQL URL, e.g. `postgres://cds:secret@db.example.org/cds?sslmode=verify-full`, or for a Unix
    /// socket `postgres://cds@localhost/cds?host=/run/postgresql`. `options=-c search_path=NAME` selects a
    /// schema. The password never appears in errors or [`StoreConfig::describe`].
    Postgres { url: String },
}

impl StoreConfig {
    /// The default: [`SQLITE_FILE_NAME`] in `data_dir`.
    pub fn sqlite_in(data_dir: &Path) -> StoreConfig {
        StoreConfig::Sqlite {
            path: data_dir.join(SQLITE_FILE_NAME),
        }
    }

    /// What to say in logs and errors: the SQLite path, or PostgreSQL's user, host (or socket directory), port
    /// and database, never the password or other parameters.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Sqlite { path } => format!("SQLite file {}", path.display()),
            StoreConfig::Postgres { url } => format!("PostgreSQL {}", describe_postgres_url(url)),
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not derived: the URL may carry a password.
        f.write_str(&self.describe())
    }
}

/// `user@host:port/database` (or `user@/socket/dir/database`) from a PostgreSQL URL, with nothing else.
fn describe_postgres_url(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "(an unparsable URL)".to_string();
    };
    let socket = parsed
        .query_pairs()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.into_owned());
    let host = socket.unwrap_or_else(|| parsed.host_str().unwrap_or("localhost").to_string());
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let user = match parsed.username() {
        "" => String::new(),
        u => format!("{u}@"),
    };
    format!("{user}{host}{port}{}", parsed.path())
}

/// Why the store failed. Each message names the store (path, or PostgreSQL host and database, never a password)
/// or the operation, and includes the underlying error's text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store's directory {}: {error}", path.display())]
    CreateDir { path: PathBuf, error: std::io::Error },
    #[error("cannot lock {} to migrate the store: {error}", path.display())]
    Lock { path: PathBuf, error: std::io::Error },
    #[error("invalid PostgreSQL URL {target}: {error}")]
    InvalidUrl { target: String, error: sqlx::Error },
    #[error("cannot open the store ({target}): {error}")]
    Open { target: String, error: sqlx::Error },
    #[error("cannot bring the store ({target}) to schema version {SCHEMA_VERSION}: {error}")]
    Migrate {
        target: String,
        error: sqlx::migrate::MigrateError,
    },
    #[error("store: {operation} failed: {error}")]
    Query {
        operation: &'static str,
        error: sqlx::Error,
    },
}

impl StoreError {
    fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |error| StoreError::Query { operation, error }
    }
}

/// One card as returned to the EHR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    /// The card's `uuid` (the key feedback refers to).
    pub uuid: String,
    pub service_id: String,
    /// The card template id, e.g. `neck-pain-prefer-manual-therapy`.
    pub card: String,
    /// `info`, `warning` or `critical`.
    pub indicator: String,
    /// The verdict's stance, e.g. `not_recommended`, `prefer_alternative`, `not_yet`, `may_consider`,
    /// `data_unavailable`.
    pub stance: String,
    /// The `uuid`s of the card's suggestions.
    pub suggestion_uuids: Vec<String>,
    pub issued_at: OffsetDateTime,
    /// The verified client's `iss`; `None` in open mode.
    pub client_issuer: Option<String>,
    pub tenant: Option<String>,
    /// The request's `hookInstance` (identifies the call, not the patient).
    pub hook_instance: String,
    /// The guidance content's version that wrote the card (`declared+digest`); `None` for cards logged before
    /// schema version 3.
    pub content_version: Option<String>,
}

/// A feedback item's outcome: parsed once, where the feedback is read ([`crate::wire::parse_feedback`]).
pub use crate::wire::Outcome;

/// One feedback item, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackRecord {
    /// The `card` field: the uuid of a card this service returned (or claims to).
    pub card_uuid: String,
    /// The service the feedback was posted to.
    pub service_id: String,
    pub outcome: Outcome,
    /// The `id`s in `acceptedSuggestions`.
    pub accepted_suggestions: Vec<String>,
    /// `overrideReason.reason.code` and `.system`.
    pub override_reason_code: Option<String>,
    pub override_reason_system: Option<String>,
    /// `overrideReason.userComment`: free text that may mention the patient, so the caller decides whether to
    /// pass it; the store keeps what it is given (capped at [`MAX_COMMENT_CHARS`]).
    pub user_comment: Option<String>,
    /// `outcomeTimestamp`, parsed; stored to the millisecond.
    pub outcome_at: OffsetDateTime,
    pub received_at: OffsetDateTime,
    pub client_issuer: Option<String>,
}

/// What [`Store::insert_feedback`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackOutcome {
    /// Items stored now (including those for unknown cards).
    pub stored: u64,
    /// Items already stored (the same card, outcome and `outcomeTimestamp`), by an earlier call or earlier in
    /// this batch; not stored again.
    pub duplicates: u64,
    /// Of `stored`, the items whose card uuid is not in the card log: kept, and flagged.
    pub unknown_cards: u64,
}

/// What [`Store::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub cards: u64,
    pub feedback: u64,
}

/// The card log, feedback store, analytics and shared `jti` cache. Cheap to clone (a pool handle); every method
/// takes `&self` and may be called from many tasks at once.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// [`StoreConfig::describe`], for messages.
    target: Arc<str>,
    /// The last write failed (a full disk, a store that refuses): readiness says `degraded` until one succeeds.
    writes_failing: Arc<AtomicBool>,
    /// This process's row in `service_runs`, once [`Store::begin_run`] has written it: each card-log batch
    /// notes its progress there.
    run: Arc<std::sync::OnceLock<String>>,
}

/// A run of the service that ended without a clean shutdown, as the next run of the same instance found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncleanRun {
    pub started_at: OffsetDateTime,
    /// When it last wrote cards to the log (`None`: it wrote none). Cards it had queued after that are lost:
    /// at most 100 ms (the card log's flush interval) of answers, and never more than the queue holds.
    pub last_write_at: Option<OffsetDateTime>,
    pub cards_written: i64,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("target", &self.target).finish()
    }
}

/// Runs `$body` in one write transaction (`$tx`, begun by [`WriteConnection::begin_write`]) on a connection of its
/// own, commits, and gives the body's value or the error as a [`StoreError`] for `$operation`. A connection a write
/// failed on is not given back to the pool: a failed SQLite write can leave it inside a transaction it no longer
/// has (a full disk rolls back on its own), and later writes on it would fail; the next write opens a fresh one.
/// The outcome also says whether the store is writing ([`Store::writes_failing`]).
macro_rules! with_write {
    ($self:ident, $operation:literal, $tx:ident => $body:expr) => {{
        let result = with_pool!($self, pool => async {
            let mut conn = pool.acquire().await?;
            let written = async {
                let mut $tx = conn.begin_write().await?;
                let value = $body;
                $tx.commit().await?;
                Ok::<_, sqlx::Error>(value)
            }
            .await;
            if written.is_err() {
                conn.close_on_drop();
            }
            written
        }
        .await);
        $self.wrote(result.is_ok());
        result.map_err(StoreError::query($operation))
    }};
}

/// Runs `$body` with `$pool` bound to whichever backend's pool this store has. The body is compiled once per
/// backend, so one query text serves both with each driver's own types.
macro_rules! with_pool {
    ($self:ident, $pool:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// A transaction for writing. SQLite's must take the write lock at `BEGIN` (`IMMEDIATE`): a deferred
/// transaction that reads first and writes later fails at once with `SQLITE_BUSY` when another connection
/// wrote in between, instead of waiting for the busy time-out.
trait WriteConnection: sqlx::Connection {
    async fn begin_write(&mut self) -> Result<Transaction<'_, Self::Database>, sqlx::Error>;
}

impl WriteConnection for sqlx::SqliteConnection {
    async fn begin_write(&mut self) -> Result<Transaction<'_, sqlx::Sqlite>, sqlx::Error> {
        sqlx::Connection::begin_with(self, "BEGIN IMMEDIATE").await
    }
}

impl WriteConnection for sqlx::PgConnection {
    async fn begin_write(&mut self) -> Result<Transaction<'_, sqlx::Postgres>, sqlx::Error> {
        sqlx::Connection::begin(self).await
    }
}

/// Followed by `VALUES (…), (…)` and `ON CONFLICT (uuid) DO NOTHING`.
const INSERT_CARDS: &str = "INSERT INTO cards (uuid, service_id, card, indicator, stance, suggestion_uuids, \
     issued_at_ms, client_issuer, tenant, hook_instance, content_version) ";

/// Feedback that arrived before its card (a card log written through a queue can lag) is known from now on.
/// Followed by the batch's uuids and `)`; the partial index `feedback_unknown` finds the flagged rows.
const CLEAR_UNKNOWN: &str = "UPDATE feedback SET unknown_card = FALSE WHERE unknown_card = TRUE AND card_uuid IN (";

/// Whether any feedback is flagged as for an unknown card.
const ANY_UNKNOWN: &str =
    "SELECT COUNT(*) FROM (SELECT 1 FROM feedback WHERE unknown_card = TRUE LIMIT 1) AS any_unknown";

/// A card-log batch's progress on its run's row.
const RUN_PROGRESS: &str =
    "UPDATE service_runs SET last_write_at_ms = $2, cards_written = cards_written + $3 WHERE run_id = $1";

/// Cards per `INSERT`: eleven parameters each, far below SQLite's 32,766 and PostgreSQL's 65,535. A batch is
/// written in statements of exactly this many rows, prepared once per connection and cached, and one statement for
/// the rest (prepared each time: its text depends on how many are left). Before (issue 26) every statement's text
/// depended on the batch's size (500 rows, 5,500 parameters), so each was prepared anew; cached, the card log's
/// cost at saturation went from 5 % to 2 % in one `scripts/store-cost` run (docs/storage.md, "Store figures").
const CARDS_PER_STATEMENT: usize = 100;

/// One statement per item, so that SQLite takes the write lock at once and the flag is decided in the same
/// statement as the insert. `RETURNING` gives a row only when the item was new.
const INSERT_FEEDBACK: &str = "INSERT INTO feedback (card_uuid, outcome, outcome_at_ms, service_id, \
     accepted_suggestions, override_reason_code, override_reason_system, user_comment, received_at_ms, \
     client_issuer, unknown_card) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
     NOT EXISTS (SELECT 1 FROM cards WHERE uuid = $1)) \
     ON CONFLICT (card_uuid, outcome, outcome_at_ms) DO NOTHING RETURNING unknown_card";

/// Insert-if-absent in one statement: a new key is inserted; an existing key is overwritten only when it has
/// expired (`expires_at < now`, as in `auth::ReplayCache`). Either way `RETURNING` gives a row, and only then is
/// the `jti` fresh. On PostgreSQL, a concurrent insert of the same key waits for the first to commit and then
/// re-checks the `WHERE` against the row it committed, so exactly one caller gets a row; SQLite runs writers
/// one at a time.
const REMEMBER_JTI: &str = "INSERT INTO jti_seen (key, expires_at) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE jti_seen.expires_at < $3 \
     RETURNING expires_at";

/// Per card issued in the window (and, with `$3`, of that tenant): its template, its ISO week's Monday (days
/// since 1970-01-01; 1970-01-01 was a Thursday, so day `d` is a Monday when `(d + 3) % 7 = 0`), and its latest
/// feedback (the greatest `outcome_at_ms`, `overridden` before `accepted` at the same instant); grouped and
/// counted. `$filter` narrows the cards.
macro_rules! analytics_sql {
    ($filter:literal) => {
        concat!(
            "WITH shown AS ( \
       SELECT c.uuid, c.service_id, c.card, c.content_version, \
              (c.issued_at_ms / 86400000) - (((c.issued_at_ms / 86400000) + 3) % 7) AS week_day \
       FROM cards c WHERE c.issued_at_ms >= $1 AND c.issued_at_ms < $2",
            $filter,
            " ), ranked AS ( \
       SELECT f.card_uuid, f.outcome, f.override_reason_code, f.override_reason_system, \
              ROW_NUMBER() OVER (PARTITION BY f.card_uuid ORDER BY f.outcome_at_ms DESC, f.outcome DESC) AS rn \
       FROM feedback f WHERE f.card_uuid IN (SELECT uuid FROM shown) \
     ) \
     SELECT s.service_id, s.card, s.week_day, r.outcome, r.override_reason_code, r.override_reason_system, \
            COUNT(*) AS n, s.content_version \
     FROM shown s LEFT JOIN ranked r ON r.card_uuid = s.uuid AND r.rn = 1 \
     GROUP BY s.service_id, s.card, s.content_version, s.week_day, r.outcome, r.override_reason_code, \
              r.override_reason_system"
        )
    };
}

/// Every card in the window.
const ANALYTICS: &str = analytics_sql!("");
/// One tenant's cards (`$3`: the tenant the card log recorded).
const ANALYTICS_OF_TENANT: &str = analytics_sql!(" AND c.tenant = $3");

const UNKNOWN_CARD_FEEDBACK: &str = "SELECT COUNT(*) FROM feedback \
     WHERE unknown_card = TRUE AND received_at_ms >= $1 AND received_at_ms < $2";

impl Store {
    /// Opens (and for SQLite creates) the store and applies the migrations it lacks. Fails with a message
    /// naming the path or the PostgreSQL host, never a password.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        Store::open_capped(config, None).await
    }

    /// As [`Store::open`], with the SQLite file capped at `max_pages` pages (`PRAGMA max_page_count`): a full
    /// file then fails writes exactly as a full disk does (`SQLITE_FULL`), which is how the recovery from a full
    /// disk is tested without a special filesystem. No effect on PostgreSQL.
    pub async fn open_capped(config: &StoreConfig, max_pages: Option<u64>) -> Result<Store, StoreError> {
        let target: Arc<str> = config.describe().into();
        let migrate_error = |error| StoreError::Migrate {
            target: target.to_string(),
            error,
        };
        let backend = match config {
            StoreConfig::Sqlite { path } => {
                let pool = open_sqlite(path, &target, max_pages).await?;
                // sqlx takes no lock for SQLite migrations: two processes opening a new file at once would both
                // create the tables, and one would fail. A lock file serialises them (and tasks in one process).
                let lock = sqlite_migration_lock(path).await?;
                migrations::migrator(migrations::Dialect::Sqlite)
                    .run(&pool)
                    .await
                    .map_err(migrate_error)?;
                drop(lock);
                Backend::Sqlite(pool)
            }
            StoreConfig::Postgres { url } => {
                let pool = open_postgres(url, &target).await?;
                // sqlx holds a PostgreSQL advisory lock while it migrates, so instances starting together
                // apply each version once.
                migrations::migrator(migrations::Dialect::Postgres)
                    .run(&pool)
                    .await
                    .map_err(migrate_error)?;
                Backend::Postgres(pool)
            }
        };
        Ok(Store {
            backend,
            target,
            writes_failing: Arc::new(AtomicBool::new(false)),
            run: Arc::default(),
        })
    }

    /// Records that this process now runs as `instance` (host name and listen port: the same for a restart of
    /// the same service), and returns the earlier runs of that instance that never recorded a clean end
    /// ([`Store::end_run`]): ended by `kill -9`, a crash or the power. They are closed as unclean, so each is
    /// reported once. Card-log batches written from now on note their progress in this run's row.
    pub async fn begin_run(&self, instance: &str, now: OffsetDateTime) -> Result<Vec<UncleanRun>, StoreError> {
        const OPEN: &str = "SELECT started_at_ms, last_write_at_ms, cards_written FROM service_runs \
             WHERE instance = $1 AND stopped_at_ms IS NULL ORDER BY started_at_ms";
        const CLOSE: &str = "UPDATE service_runs SET stopped_at_ms = $2, clean = FALSE \
             WHERE instance = $1 AND stopped_at_ms IS NULL";
        const BEGIN: &str = "INSERT INTO service_runs (run_id, instance, started_at_ms) VALUES ($1, $2, $3)";
        let run_id = uuid::Uuid::new_v4().to_string();
        let at = unix_ms(now);
        let open: Vec<(i64, Option<i64>, i64)> = with_write!(self, "begin_run", tx => {
            let open = sqlx::query_as(OPEN).bind(instance).fetch_all(&mut *tx).await?;
            sqlx::query(CLOSE).bind(instance).bind(at).execute(&mut *tx).await?;
            sqlx::query(BEGIN).bind(run_id.as_str()).bind(instance).bind(at).execute(&mut *tx).await?;
            open
        })?;
        let _ = self.run.set(run_id);
        Ok(open
            .into_iter()
            .map(|(started, last_write, cards_written)| UncleanRun {
                started_at: from_unix_ms(started),
                last_write_at: last_write.map(from_unix_ms),
                cards_written,
            })
            .collect())
    }

    /// Records this run's clean end (after the card log's queue was written).
    pub async fn end_run(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        const END: &str = "UPDATE service_runs SET stopped_at_ms = $2, clean = TRUE WHERE run_id = $1";
        let Some(run_id) = self.run.get() else {
            return Ok(());
        };
        with_write!(self, "end_run", tx => {
            sqlx::query(END).bind(run_id.as_str()).bind(unix_ms(now)).execute(&mut *tx).await?;
        })
    }

    /// What the store is, for logs: the SQLite path or the PostgreSQL host and database.
    pub fn describe(&self) -> &str {
        &self.target
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether the last write failed (it is `degraded` on `/readyz` until a write succeeds again).
    pub fn writes_failing(&self) -> bool {
        self.writes_failing.load(Ordering::Relaxed)
    }

    fn wrote(&self, ok: bool) {
        self.writes_failing.store(!ok, Ordering::Relaxed);
    }

    /// Readiness: one round trip (`SELECT 1`) on a pooled connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
            .map_err(StoreError::query("ping"))
    }

    /// The newest schema version applied (equal to [`SCHEMA_VERSION`] after [`Store::open`]).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success = TRUE";
        with_pool!(self, pool => sqlx::query_scalar::<_, i64>(SQL).fetch_one(pool).await)
            .map_err(StoreError::query("schema_version"))
    }

    /// Closes the pool: waits for calls in progress, then closes every connection.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// Logs cards, all in one transaction. A uuid already logged is left as it is (so a retried batch is
    /// harmless); returns how many cards were new. Feedback that arrived earlier for these cards stops being
    /// flagged as for an unknown card.
    ///
    /// Two statements per `CARDS_PER_STATEMENT` cards (a multi-row `INSERT … ON CONFLICT DO NOTHING`, then one
    /// `UPDATE` of the flag), not two per card: the per-statement cost of the driver, not SQL, is what a busy
    /// card log pays for (measured by `scripts/store-cost`).
    pub async fn insert_cards(&self, cards: &[CardRecord]) -> Result<u64, StoreError> {
        if cards.is_empty() {
            return Ok(0);
        }
        let rows: Vec<CardRow> = cards.iter().map(CardRow::new).collect();
        with_write!(self, "insert_cards", tx => {
            let mut inserted = 0;
            for chunk in rows.chunks(CARDS_PER_STATEMENT) {
                let mut insert = QueryBuilder::new(INSERT_CARDS);
                insert.push_values(chunk, |mut row, r| {
                    row.push_bind(r.uuid.as_str())
                        .push_bind(r.service_id.as_str())
                        .push_bind(r.card.as_str())
                        .push_bind(r.indicator.as_str())
                        .push_bind(r.stance.as_str())
                        .push_bind(r.suggestion_uuids.as_str())
                        .push_bind(r.issued_at_ms)
                        .push_bind(r.client_issuer.as_deref())
                        .push_bind(r.tenant.as_deref())
                        .push_bind(r.hook_instance.as_str())
                        .push_bind(r.content_version.as_deref());
                });
                insert.push(" ON CONFLICT (uuid) DO NOTHING");
                // Cached when full (the same text every time), not for the rest.
                let full = chunk.len() == CARDS_PER_STATEMENT;
                inserted += insert.build().persistent(full).execute(&mut *tx).await?.rows_affected();
            }
            // Feedback before its card is rare (a lagging log, or a forged uuid): look for any first, through the
            // partial index, and clear flags only when there are some.
            let flagged: i64 = sqlx::query_scalar(ANY_UNKNOWN).fetch_one(&mut *tx).await?;
            if flagged > 0 {
                for chunk in rows.chunks(CARDS_PER_STATEMENT) {
                    let mut clear = QueryBuilder::new(CLEAR_UNKNOWN);
                    let mut uuids = clear.separated(", ");
                    for r in chunk {
                        uuids.push_bind(r.uuid.as_str());
                    }
                    clear.push(")");
                    clear.build().persistent(false).execute(&mut *tx).await?;
                }
            }
            // This run's progress, in the same transaction: what the next run can know if this one is killed.
            if let Some(run_id) = self.run.get() {
                sqlx::query(RUN_PROGRESS)
                    .bind(run_id.as_str())
                    .bind(unix_ms(OffsetDateTime::now_utc()))
                    .bind(cards.len() as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            inserted
        })
    }

    /// Stores feedback items, all in one transaction. Idempotent: an item is identified by (card uuid, outcome,
    /// `outcomeTimestamp` to the millisecond), because CDS Hooks feedback has no id of its own; an EHR that
    /// retries a POST resends the same items, while a clinician's new action on the same card has a new
    /// timestamp or outcome. A card uuid the log does not have is stored all the same and flagged (it may be
    /// from a card logged later, from before the retention cut-off, or forged), so nothing a client sent is
    /// lost and analytics can count it. When the card is logged later, [`Store::insert_cards`] clears the flag;
    /// only an item committed in the same instant as its card's first logging can keep it (on PostgreSQL
    /// neither transaction sees the other's row), and feedback follows its card by a clinician's reaction time.
    pub async fn insert_feedback(&self, items: &[FeedbackRecord]) -> Result<FeedbackOutcome, StoreError> {
        if items.is_empty() {
            return Ok(FeedbackOutcome::default());
        }
        let rows: Vec<FeedbackRow> = items.iter().map(FeedbackRow::new).collect();
        with_write!(self, "insert_feedback", tx => {
            let mut outcome = FeedbackOutcome::default();
            for r in &rows {
                let stored = sqlx::query(INSERT_FEEDBACK)
                    .bind(r.card_uuid.as_str())
                    .bind(r.outcome)
                    .bind(r.outcome_at_ms)
                    .bind(r.service_id.as_str())
                    .bind(r.accepted_suggestions.as_str())
                    .bind(r.override_reason_code.as_deref())
                    .bind(r.override_reason_system.as_deref())
                    .bind(r.user_comment.as_deref())
                    .bind(r.received_at_ms)
                    .bind(r.client_issuer.as_deref())
                    .fetch_optional(&mut *tx)
                    .await?;
                match stored {
                    Some(row) => {
                        outcome.stored += 1;
                        if row.try_get::<bool, _>(0)? {
                            outcome.unknown_cards += 1;
                        }
                    }
                    None => outcome.duplicates += 1,
                }
            }
            outcome
        })
    }

    /// Records that `issuer` used `jti`, to be remembered until `expires_at` (Unix seconds; the token's `exp`
    /// plus the clock-skew leeway). `true`: fresh, the token may be used; `false`: a replay. An entry whose
    /// `expires_at` is before `now` counts as absent and is replaced. Atomic across tasks, and across
    /// processes sharing the store. On an error the caller should refuse the token (fail closed, as
    /// `auth::ReplayCache` does when full), and call [`Store::prune_jtis`] now and then (every minute, say).
    ///
    /// The key is SHA-256 of (issuer, jti), not the values: fixed-size keys however long the caller's `jti`,
    /// no caller text stored, no collision in practice (unlike cutting the values to a length, which would make
    /// two long `jti`s with a common prefix one), and the same in every process (unlike the in-memory cache's
    /// keyed hash).
    pub async fn remember_jti(&self, issuer: &str, jti: &str, expires_at: i64, now: i64) -> Result<bool, StoreError> {
        let key = jti_key(issuer, jti);
        with_pool!(self, pool => sqlx::query(REMEMBER_JTI)
            .bind(&key[..])
            .bind(expires_at)
            .bind(now)
            .fetch_optional(pool)
            .await
            .map(|row| row.is_some()))
        .map_err(StoreError::query("remember_jti"))
    }

    /// Forgets `jti`s that expired before `now` (Unix seconds); returns how many. [`Store::remember_jti`] treats
    /// them as absent anyway: this only bounds the table.
    pub async fn prune_jtis(&self, now: i64) -> Result<u64, StoreError> {
        with_pool!(self, pool => sqlx::query("DELETE FROM jti_seen WHERE expires_at < $1")
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(StoreError::query("prune_jtis"))
    }

    /// Retention: deletes cards issued before `before` and feedback received before it, in one transaction.
    pub async fn prune(&self, before: OffsetDateTime) -> Result<Pruned, StoreError> {
        let cut = unix_ms(before);
        with_write!(self, "prune", tx => {
            let cards = sqlx::query("DELETE FROM cards WHERE issued_at_ms < $1")
                .bind(cut)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let feedback = sqlx::query("DELETE FROM feedback WHERE received_at_ms < $1")
                .bind(cut)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // An open row of a run that is gone (a pod that never restarts under its name) goes too, once it
            // has written nothing for as long.
            sqlx::query("DELETE FROM service_runs WHERE COALESCE(stopped_at_ms, last_write_at_ms, started_at_ms) < $1")
                .bind(cut)
                .execute(&mut *tx)
                .await?;
            Pruned { cards, feedback }
        })
    }

    /// Override analytics for cards issued in `[since, until)`; see [`Analytics`] for the counting rule.
    pub async fn analytics(&self, since: OffsetDateTime, until: OffsetDateTime) -> Result<Analytics, StoreError> {
        self.analytics_of(since, until, None).await
    }

    /// [`Store::analytics`] for one tenant's cards (the card log's `tenant`), or every card when `tenant` is
    /// `None`. Feedback for unknown cards has no tenant: with a tenant, [`Analytics::unknown_card_feedback`]
    /// is 0.
    pub async fn analytics_of(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
        tenant: Option<&str>,
    ) -> Result<Analytics, StoreError> {
        let (from, to) = (unix_ms(since), unix_ms(until));
        let tenant = tenant.map(|t| clean(t, MAX_TEXT_CHARS));
        let (rows, unknown) = with_pool!(self, pool => async {
            let rows = match &tenant {
                None => sqlx::query(ANALYTICS).bind(from).bind(to).fetch_all(pool).await?,
                Some(tenant) => {
                    sqlx::query(ANALYTICS_OF_TENANT).bind(from).bind(to).bind(tenant).fetch_all(pool).await?
                }
            };
            let rows = rows
                .iter()
                .map(|row| {
                    Ok(analytics::GroupRow {
                        service_id: row.try_get(0)?,
                        card: row.try_get(1)?,
                        week_day: row.try_get(2)?,
                        outcome: row.try_get(3)?,
                        reason_code: row.try_get(4)?,
                        reason_system: row.try_get(5)?,
                        count: row.try_get(6)?,
                        content_version: row.try_get(7)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let unknown: i64 = match &tenant {
                None => sqlx::query_scalar(UNKNOWN_CARD_FEEDBACK).bind(from).bind(to).fetch_one(pool).await?,
                Some(_) => 0,
            };
            Ok::<_, sqlx::Error>((rows, unknown))
        }
        .await)
        .map_err(StoreError::query("analytics"))?;
        Ok(analytics::fold(since, until, rows, unknown))
    }
}

/// How often [`maintain`] applies retention, and prunes expired `jti`s.
pub const RETENTION_EVERY: Duration = Duration::from_secs(60 * 60);
pub const JTI_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The store's upkeep, for as long as the process runs: deletes cards and feedback older than `retention_days`
/// (at start, then hourly) and, when the `jti` cache is shared, expired `jti`s (every minute). Failures are
/// counted and logged; the next round tries again.
pub async fn maintain(store: Store, retention_days: u32, prune_jtis: bool) {
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    let mut jtis = tokio::time::interval(JTI_PRUNE_EVERY);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    jtis.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = retention.tick() => {
                let cut = OffsetDateTime::now_utc() - time::Duration::days(i64::from(retention_days));
                match store.prune(cut).await {
                    Ok(pruned) if pruned.cards + pruned.feedback > 0 => tracing::info!(
                        cards = pruned.cards,
                        feedback = pruned.feedback,
                        retention_days,
                        "retention: old cards and feedback deleted"
                    ),
                    Ok(_) => {}
                    Err(error) => {
                        metrics::counter!(crate::ops::metrics::STORE_ERRORS, "operation" => "prune").increment(1);
                        tracing::warn!(%error, "retention: pruning failed; retrying in an hour");
                    }
                }
            }
            _ = jtis.tick(), if prune_jtis => {
                let now = OffsetDateTime::now_utc().unix_timestamp();
                if let Err(error) = store.prune_jtis(now).await {
                    metrics::counter!(crate::ops::metrics::STORE_ERRORS, "operation" => "prune").increment(1);
                    tracing::warn!(%error, "pruning expired jtis failed; retrying in a minute");
                }
            }
        }
    }
}

async fn open_sqlite(path: &Path, target: &str, max_pages: Option<u64>) -> Result<SqlitePool, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|error| StoreError::CreateDir {
            path: dir.to_path_buf(),
            error,
        })?;
    }
    let existed = path.exists();
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
        // 32 MiB of page cache per connection (the default is 2 MB): card uuids are random, so each card logged
        // lands on another page of the uuid index; with the default cache a busy log re-read most of them.
        .pragma("cache_size", "-32768");
    let options = match max_pages {
        Some(pages) => options.pragma("max_page_count", pages.to_string()),
        None => options,
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(SQLITE_MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|error| StoreError::Open {
            target: target.to_string(),
            error,
        })?;
    if !existed {
        // The log holds caller text (comments, hookInstances): readable by the service's user only. SQLite gives
        // its -wal and -shm files the database file's mode.
        restrict_to_owner(path);
    }
    Ok(pool)
}

/// An exclusive lock on `<database>-migrate.lock`, held while migrating. Not the database file itself: SQLite's
/// POSIX locks are dropped when any descriptor of that file closes in the process.
async fn sqlite_migration_lock(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push("-migrate.lock");
    let lock_path = PathBuf::from(name);
    let for_error = lock_path.clone();
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .unwrap_or_else(|join| Err(std::io::Error::other(join)));
    locked.map_err(|error| StoreError::Lock { path: for_error, error })
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // Best effort: a file system without modes (or a file owned by someone else) keeps its own.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) {}

async fn open_postgres(url: &str, target: &str) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(|error| StoreError::InvalidUrl {
        target: target.to_string(),
        error,
    })?;
    PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|error| StoreError::Open {
            target: target.to_string(),
            error,
        })
}

/// SHA-256 over the issuer's length, the issuer and the `jti`: the length keeps ("ab", "c") and ("a", "bc")
/// apart.
fn jti_key(issuer: &str, jti: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((issuer.len() as u64).to_be_bytes());
    hash.update(issuer.as_bytes());
    hash.update(jti.as_bytes());
    hash.finalize().into()
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// At most `max` characters, NUL replaced (PostgreSQL refuses it in text; SQLite would keep it, and the two
/// backends must store the same).
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c == '\0' { char::REPLACEMENT_CHARACTER } else { c })
        .collect()
}

fn clean_opt(text: &Option<String>, max: usize) -> Option<String> {
    text.as_deref().map(|t| clean(t, max))
}

/// A JSON array of at most [`MAX_LIST_ITEMS`] cleaned ids.
fn id_list(ids: &[String]) -> String {
    let ids: Vec<String> = ids
        .iter()
        .take(MAX_LIST_ITEMS)
        .map(|id| clean(id, MAX_TEXT_CHARS))
        .collect();
    // Serialising strings cannot fail; an empty list is the harmless answer if it ever did.
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_string())
}

/// A card as stored: cleaned and converted.
struct CardRow {
    uuid: String,
    service_id: String,
    card: String,
    indicator: String,
    stance: String,
    suggestion_uuids: String,
    issued_at_ms: i64,
    client_issuer: Option<String>,
    tenant: Option<String>,
    hook_instance: String,
    content_version: Option<String>,
}

impl CardRow {
    fn new(c: &CardRecord) -> CardRow {
        CardRow {
            uuid: clean(&c.uuid, MAX_TEXT_CHARS),
            service_id: clean(&c.service_id, MAX_TEXT_CHARS),
            card: clean(&c.card, MAX_TEXT_CHARS),
            indicator: clean(&c.indicator, MAX_TEXT_CHARS),
            stance: clean(&c.stance, MAX_TEXT_CHARS),
            suggestion_uuids: id_list(&c.suggestion_uuids),
            issued_at_ms: unix_ms(c.issued_at),
            client_issuer: clean_opt(&c.client_issuer, MAX_TEXT_CHARS),
            tenant: clean_opt(&c.tenant, MAX_TEXT_CHARS),
            hook_instance: clean(&c.hook_instance, MAX_TEXT_CHARS),
            content_version: clean_opt(&c.content_version, MAX_TEXT_CHARS),
        }
    }
}

/// A feedback item as stored: cleaned and converted.
struct FeedbackRow {
    card_uuid: String,
    outcome: &'static str,
    outcome_at_ms: i64,
    service_id: String,
    accepted_suggestions: String,
    override_reason_code: Option<String>,
    override_reason_system: Option<String>,
    user_comment: Option<String>,
    received_at_ms: i64,
    client_issuer: Option<String>,
}

impl FeedbackRow {
    fn new(f: &FeedbackRecord) -> FeedbackRow {
        FeedbackRow {
            card_uuid: clean(&f.card_uuid, MAX_TEXT_CHARS),
            outcome: f.outcome.as_str(),
            outcome_at_ms: unix_ms(f.outcome_at),
            service_id: clean(&f.service_id, MAX_TEXT_CHARS),
            accepted_suggestions: id_list(&f.accepted_suggestions),
            override_reason_code: clean_opt(&f.override_reason_code, MAX_TEXT_CHARS),
            override_reason_system: clean_opt(&f.override_reason_system, MAX_TEXT_CHARS),
            user_comment: clean_opt(&f.user_comment, MAX_COMMENT_CHARS),
            received_at_ms: unix_ms(f.received_at),
            client_issuer: clean_opt(&f.client_issuer, MAX_TEXT_CHARS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_url_described_without_password() {
        let config = StoreConfig::Postgres {
            url: "postgres://cds:s3cret@db.example.org:6543/cds?sslmode=require&password=other".into(),
        };
        assert_eq!(config.describe(), "PostgreSQL cds@db.example.org:6543/cds");
        assert!(!format!("{config:?}").contains("s3cret"));
        let socket = StoreConfig::Postgres {
            url: "postgres://postgres@localhost/dncds_test?host=/tmp/pg".into(),
        };
        assert_eq!(socket.describe(), "PostgreSQL postgres@/tmp/pg/dncds_test");
        let bad = StoreConfig::Postgres {
            url: "not a url with s3cret".into(),
        };
        assert!(!bad.describe().contains("s3cret"));
    }

    #[test]
    fn jti_keys_separate_issuer_and_jti() {
        assert_ne!(jti_key("ab", "c"), jti_key("a", "bc"));
        assert_eq!(jti_key("a", "b"), jti_key("a", "b"));
    }

    #[test]
    fn text_is_capped_and_nul_free() {
        assert_eq!(clean("a\0b", 10), "a\u{FFFD}b");
        assert_eq!(clean(&"é".repeat(300), MAX_TEXT_CHARS).chars().count(), MAX_TEXT_CHARS);
        let many: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let list: Vec<String> = serde_json::from_str(&id_list(&many)).expect("json");
        assert_eq!(list.len(), MAX_LIST_ITEMS);
    }
}

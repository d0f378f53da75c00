//! One database per test, on SQLite or PostgreSQL, for the suites that run on both backends (`tests/store.rs`,
//! `tests/storage.rs`). PostgreSQL when `DRY_NEEDLING_CDS_TEST_POSTGRES_URL` is set (each test in its own
//! schema, dropped at the end); without it the PostgreSQL half says so and passes, unless `CI` is set: then it
//! fails, so CI cannot skip it silently. `scripts/postgres start` prints a URL for a throwaway server.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use dry_needling_cds::store::{Store, StoreConfig};
use sqlx::{PgPool, Row, SqlitePool};
use time::OffsetDateTime;

pub const POSTGRES_URL_VAR: &str = "DRY_NEEDLING_CDS_TEST_POSTGRES_URL";

static UNIQUE: AtomicU32 = AtomicU32::new(0);

pub fn unique(name: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000;
    format!("{name}_{}_{n}_{nanos}", std::process::id())
}

/// Where one test's store lives; [`Fixture::open`] may be called more than once (several "instances").
pub struct Fixture {
    pub config: StoreConfig,
    pub raw: Raw,
    cleanup: Cleanup,
}

/// A plain connection beside the store, to look at what it wrote.
pub enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

enum Cleanup {
    Dir(TempDir),
    Schema { admin: PgPool, schema: String },
}

/// Removed when dropped, so a failing test leaves nothing behind either.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Fixture {
    pub async fn sqlite(name: &str) -> Fixture {
        let dir = TempDir(std::env::temp_dir().join(format!("dncds-store-{}", unique(name))));
        // Two levels that do not exist yet: open must create them.
        let path = dir.0.join("data").join("nested").join("store.sqlite3");
        let config = StoreConfig::Sqlite { path: path.clone() };
        // The store creates the file; the raw pool opens it only after the first `open` (see `raw`).
        Store::open(&config).await.expect("open SQLite store").close().await;
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
        let raw = SqlitePool::connect_with(options).await.expect("raw SQLite connection");
        Fixture {
            config,
            raw: Raw::Sqlite(raw),
            cleanup: Cleanup::Dir(dir),
        }
    }

    /// `None` when no PostgreSQL URL is set.
    pub async fn postgres(name: &str) -> Option<Fixture> {
        let base = std::env::var(POSTGRES_URL_VAR).ok().filter(|u| !u.is_empty())?;
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&base)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR} is set but PostgreSQL cannot be reached: {e}"));
        // PostgreSQL names are at most 63 bytes: the scenario's name is cut, the suffix keeps it unique.
        let short: String = name.chars().take(24).collect();
        let schema = unique(&format!("t_{short}")).to_lowercase();
        assert!(schema.len() < 63, "schema name too long: {schema}");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&admin)
            .await
            .expect("create schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        let config = StoreConfig::Postgres { url: url.clone() };
        let raw = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("raw PostgreSQL connection");
        Some(Fixture {
            config,
            raw: Raw::Postgres(raw),
            cleanup: Cleanup::Schema { admin, schema },
        })
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.config).await.expect("open store")
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        match &self.raw {
            Raw::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Raw::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn text(&self, sql: &'static str) -> Vec<String> {
        match &self.raw {
            Raw::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Raw::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every (table, column) of the store's tables, sorted.
    pub async fn columns(&self) -> Vec<(String, String)> {
        let mut columns: Vec<(String, String)> = match &self.raw {
            Raw::Sqlite(pool) => sqlx::query(
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(pool)
            .await
            .expect("columns")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
            Raw::Postgres(pool) => sqlx::query(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema()",
            )
            .fetch_all(pool)
            .await
            .expect("columns")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        };
        columns.sort();
        columns
    }

    pub async fn finish(self) {
        match self.raw {
            Raw::Sqlite(pool) => pool.close().await,
            Raw::Postgres(pool) => pool.close().await,
        }
        match self.cleanup {
            Cleanup::Dir(dir) => drop(dir),
            Cleanup::Schema { admin, schema } => {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
                    .execute(&admin)
                    .await
                    .expect("drop schema");
                admin.close().await;
            }
        }
    }
}

/// The PostgreSQL half without a URL: said once on the real stderr (test output is captured), and a failure
/// under CI.
pub fn postgres_not_run() {
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "PostgreSQL store suite NOT RUN (set {POSTGRES_URL_VAR}; `scripts/postgres start` prints one)"
        );
    });
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("PostgreSQL store suite NOT RUN under CI: set {POSTGRES_URL_VAR} (.ci/run starts a server)");
    }
}

/// Each scenario `async fn NAME(fx: &Fixture)` becomes `NAME::sqlite` and `NAME::postgres`.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            pub async fn sqlite() {
                let fx = $crate::common::store::Fixture::sqlite(stringify!($name)).await;
                super::$name(&fx).await;
                fx.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            pub async fn postgres() {
                let Some(fx) = $crate::common::store::Fixture::postgres(stringify!($name)).await else {
                    return $crate::common::store::postgres_not_run();
                };
                super::$name(&fx).await;
                fx.finish().await;
            }
        }
    )*};
}

#[allow(unused_imports)]
pub(crate) use on_both_backends;

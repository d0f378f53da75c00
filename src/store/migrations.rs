//! The schema's versions, embedded in the binary and applied by [`super::Store::open`].
//!
//! Why by hand rather than `sqlx::migrate!`: the macro needs sqlx's `macros` feature, which builds a second copy
//! of sqlx-core and its drivers for the proc-macro; a list of `include_str!`s is the same thing for a few lines.
//! A unit test checks that every file in `migrations/<backend>/` is listed here, and in order.
//!
//! Rules for a new version: add `NNNN_what.sql` to **both** folders (the same tables, columns and keys; only the
//! types may differ), list it below, and never edit a file once released: sqlx stores each file's checksum and
//! refuses to start against a database where an applied version's text changed. A database that has a version
//! this binary does not know (a newer binary migrated it) is refused too, with a message saying so.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One version: number, description, SQLite text, PostgreSQL text.
struct Version {
    number: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const VERSIONS: &[Version] = &[
    Version {
        number: 1,
        description: "card log feedback jti",
        sqlite: include_str!("../../migrations/sqlite/0001_card_log_feedback_jti.sql"),
        postgres: include_str!("../../migrations/postgres/0001_card_log_feedback_jti.sql"),
    },
    Version {
        number: 2,
        description: "service runs",
        sqlite: include_str!("../../migrations/sqlite/0002_service_runs.sql"),
        postgres: include_str!("../../migrations/postgres/0002_service_runs.sql"),
    },
    Version {
        number: 3,
        description: "card content version",
        sqlite: include_str!("../../migrations/sqlite/0003_card_content_version.sql"),
        postgres: include_str!("../../migrations/postgres/0003_card_content_version.sql"),
    },
];

/// The newest schema version this binary knows.
pub const LATEST: i64 = 3;

#[derive(Clone, Copy)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

pub(super) fn migrator(dialect: Dialect) -> Migrator {
    let migrations = VERSIONS
        .iter()
        .map(|v| {
            let sql = match dialect {
                Dialect::Sqlite => v.sqlite,
                Dialect::Postgres => v.postgres,
            };
            Migration::new(
                v.number,
                Cow::Borrowed(v.description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in `migrations/<dialect>/` is embedded, in order, and both folders have the same versions.
    #[test]
    fn every_file_is_listed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for (dir, pick) in [
            ("sqlite", (|v: &Version| v.sqlite) as fn(&Version) -> &'static str),
            ("postgres", |v: &Version| v.postgres),
        ] {
            let mut files: Vec<String> = std::fs::read_dir(root.join(dir))
                .expect("migrations folder")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            assert_eq!(files.len(), VERSIONS.len(), "{dir}: every file listed in VERSIONS");
            for (file, version) in files.iter().zip(VERSIONS) {
                let number: i64 = file
                    .split('_')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("NNNN_ prefix");
                assert_eq!(number, version.number, "{dir}/{file}");
                let text = std::fs::read_to_string(root.join(dir).join(file)).expect("read");
                assert_eq!(text, pick(version), "{dir}/{file} is the embedded text");
            }
        }
        assert_eq!(VERSIONS.last().map(|v| v.number), Some(LATEST));
    }
}

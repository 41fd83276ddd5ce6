//! The store: sea-orm over SQLite (the embedded default, WAL) or PostgreSQL
//! (several orchestrators sharing one database), with embedded, append-only
//! migrations. Startup refuses a database whose schema is newer than the
//! binary.

pub mod agent_data;
pub mod api_tokens;
pub mod audit;
pub mod dispatcher_state;
pub mod entities;
pub mod hosts;
pub mod migrations;
pub mod runs;
pub mod slots;
pub mod stages;
pub mod transitions;

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
    Statement, TransactionTrait,
};

/// A store failure, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {url}")]
    Open {
        url: String,
        #[source]
        source: DbErr,
    },
    #[error("cannot create the folder of database {path}")]
    Folder {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "database schema version {found} is newer than this binary (knows up to {known}); \
         upgrade vetting before using this database"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("migration {version} ({name}) failed")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: DbErr,
    },
    #[error("database error while {doing}")]
    Db {
        doing: &'static str,
        #[source]
        source: DbErr,
    },
}

impl StoreError {
    pub fn db(doing: &'static str) -> impl FnOnce(DbErr) -> StoreError {
        move |source| StoreError::Db { doing, source }
    }
}

/// The row of a select by primary or unique key, if there is one.
///
/// sea-orm's `one()` adds `LIMIT ?`, and SQLite (3.47 and later) re-prepares
/// a statement whose LIMIT is a bound parameter each time the parameter is
/// bound: every key lookup paid a full parse and plan (7 % of the server's
/// CPU at 1000 hosts). A key matches one row at most and needs no LIMIT.
pub async fn by_key<E, C>(select: sea_orm::Select<E>, db: &C) -> Result<Option<E::Model>, DbErr>
where
    E: sea_orm::EntityTrait,
    C: ConnectionTrait,
{
    Ok(select.all(db).await?.into_iter().next())
}

/// How every transaction that writes begins: on SQLite `BEGIN IMMEDIATE`,
/// so it holds the write lock from its first statement. A deferred
/// transaction that reads first and writes later fails at once with
/// "database is locked" when another connection committed in between (its
/// snapshot is stale, and the busy timeout does not apply); PostgreSQL
/// ignores the mode.
pub const WRITE: sea_orm::TransactionOptions = sea_orm::TransactionOptions {
    isolation_level: None,
    access_mode: None,
    sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
};

/// A connected database.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    backend: DatabaseBackend,
}

/// Hides the password of a database URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH?mode=rwc` or `postgres://...`)
    /// without migrating.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if let Some(path) = sqlite_path(url)
            && let Some(parent) = std::path::Path::new(&path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder {
                path: path.clone(),
                source,
            })?;
        }
        let mut options = ConnectOptions::new(url.to_string());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        let is_sqlite = url.starts_with("sqlite:");
        if is_sqlite {
            options.max_connections(8).min_connections(1);
            options.map_sqlx_sqlite_opts(|sqlite| {
                sqlite
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
        } else {
            options.max_connections(16).min_connections(1);
        }
        let db = Database::connect(options)
            .await
            .map_err(|source| StoreError::Open {
                url: redact_url(url),
                source,
            })?;
        let backend = db.get_database_backend();
        Ok(Store { db, backend })
    }

    /// Connects and brings the schema up to date (refusing a newer one).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.backend
    }

    pub fn is_postgres(&self) -> bool {
        self.backend == DatabaseBackend::Postgres
    }

    /// The schema version recorded in the database (0 when empty).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.ensure_version_table().await?;
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.backend,
                "SELECT COALESCE(MAX(version), 0) AS version FROM vetting_schema",
            ))
            .await
            .map_err(StoreError::db("reading the schema version"))?;
        match row {
            Some(row) => row
                .try_get::<i64>("", "version")
                .map_err(StoreError::db("reading the schema version")),
            None => Ok(0),
        }
    }

    async fn ensure_version_table(&self) -> Result<(), StoreError> {
        self.db
            .execute_unprepared(
                "CREATE TABLE IF NOT EXISTS vetting_schema (
                    version BIGINT PRIMARY KEY,
                    name TEXT NOT NULL,
                    applied_at_ms BIGINT NOT NULL
                )",
            )
            .await
            .map_err(StoreError::db("creating the schema version table"))?;
        Ok(())
    }

    /// Applies every migration newer than the database's version, each in
    /// its own transaction. Refuses a database newer than this binary.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        self.ensure_version_table().await?;
        let known = migrations::latest_version();
        let mut applied = Vec::new();
        for migration in migrations::MIGRATIONS {
            let txn = self
                .db
                .begin()
                .await
                .map_err(StoreError::db("starting a migration"))?;
            if self.is_postgres() {
                // several orchestrators may start at once
                txn.execute_unprepared("SELECT pg_advisory_xact_lock(7462001)")
                    .await
                    .map_err(StoreError::db("locking for migration"))?;
            }
            let row = txn
                .query_one_raw(Statement::from_string(
                    self.backend,
                    "SELECT COALESCE(MAX(version), 0) AS version FROM vetting_schema",
                ))
                .await
                .map_err(StoreError::db("reading the schema version"))?;
            let current: i64 = match row {
                Some(row) => row
                    .try_get("", "version")
                    .map_err(StoreError::db("reading the schema version"))?,
                None => 0,
            };
            if current > known {
                return Err(StoreError::SchemaTooNew {
                    found: current,
                    known,
                });
            }
            if current >= migration.version {
                continue;
            }
            for statement in migration.statements {
                txn.execute_unprepared(&migrations::render(statement, self.is_postgres()))
                    .await
                    .map_err(|source| StoreError::Migration {
                        version: migration.version,
                        name: migration.name,
                        source,
                    })?;
            }
            txn.execute_raw(Statement::from_sql_and_values(
                self.backend,
                match self.backend {
                    DatabaseBackend::Postgres => {
                        "INSERT INTO vetting_schema (version, name, applied_at_ms) VALUES ($1, $2, $3)"
                    }
                    _ => "INSERT INTO vetting_schema (version, name, applied_at_ms) VALUES (?, ?, ?)",
                },
                [
                    migration.version.into(),
                    migration.name.into(),
                    chrono::Utc::now().timestamp_millis().into(),
                ],
            ))
            .await
            .map_err(|source| StoreError::Migration {
                version: migration.version,
                name: migration.name,
                source,
            })?;
            txn.commit().await.map_err(|source| StoreError::Migration {
                version: migration.version,
                name: migration.name,
                source,
            })?;
            applied.push(migration.version);
        }
        // a database newer than every migration we know
        let current = self.schema_version().await?;
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
            });
        }
        Ok(applied)
    }
}

/// The file path of a SQLite URL, if it is one (not `:memory:`).
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.contains(":memory:") {
        None
    } else {
        Some(path.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://vetting:hunter2@127.0.0.1:5432/db"),
            "postgres://vetting:***@127.0.0.1:5432/db"
        );
        assert_eq!(redact_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://./data/vetting.db?mode=rwc").as_deref(),
            Some("./data/vetting.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }
}

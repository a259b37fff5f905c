//! The PostgreSQL pool, database creation and migrations.

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("sql");
}

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("DATABASE_URL is not a PostgreSQL URL: {0}")]
    Url(tokio_postgres::Error),
    #[error("cannot reach PostgreSQL: {}", describe(.0))]
    Connect(tokio_postgres::Error),
    #[error("cannot create database {name}: {}", describe(.source))]
    Create {
        name: String,
        source: tokio_postgres::Error,
    },
    #[error("migration failed: {0}")]
    Migrate(#[from] refinery::Error),
    #[error("pool: {0}")]
    Pool(String),
}

/// The server's own message where there is one (the driver's Display says only
/// "db error", which hides "too many clients" and the like).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

pub fn pool(database_url: &str, max_size: usize) -> Result<Pool, DbSetupError> {
    let pg = tokio_postgres::Config::from_str(database_url).map_err(DbSetupError::Url)?;
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .build()
        .map_err(|e| DbSetupError::Pool(e.to_string()))
}

/// Creates the database named in the URL if it does not exist (connecting to the
/// `postgres` maintenance database to do so).
pub async fn create_if_missing(database_url: &str) -> Result<(), DbSetupError> {
    let target = tokio_postgres::Config::from_str(database_url).map_err(DbSetupError::Url)?;
    let Some(name) = target.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    if let Ok((client, conn)) = target.connect(NoTls).await {
        drop(client);
        drop(conn);
        return Ok(());
    }
    let mut admin = target.clone();
    admin.dbname("postgres");
    let (client, conn) = admin.connect(NoTls).await.map_err(DbSetupError::Connect)?;
    let task = tokio::spawn(conn);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(DbSetupError::Connect)?
        .is_some();
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        if let Err(source) = client.batch_execute(&sql).await {
            // Another replica may have created it a moment ago.
            if source.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(DbSetupError::Create { name, source });
            }
        }
        tracing::info!(database = %name, "created database");
    }
    drop(client);
    task.abort();
    Ok(())
}

/// Applies the migrations in `sql/` in order and records them (refinery's history table).
/// Serialised by an advisory lock so replicas starting together do not race.
pub async fn migrate(database_url: &str) -> Result<usize, DbSetupError> {
    migrate_to(database_url, None).await
}

/// [`migrate`] up to and including migration `version` (`None`: all of them); a
/// test migrates rows written under an older schema this way.
pub async fn migrate_to(database_url: &str, version: Option<i32>) -> Result<usize, DbSetupError> {
    let cfg = tokio_postgres::Config::from_str(database_url).map_err(DbSetupError::Url)?;
    let (mut client, conn) = cfg.connect(NoTls).await.map_err(DbSetupError::Connect)?;
    let task = tokio::spawn(conn);
    client
        .batch_execute("SELECT pg_advisory_lock(7461626)")
        .await
        .map_err(DbSetupError::Connect)?;
    let mut runner = embedded::migrations::runner();
    if let Some(v) = version {
        runner = runner.set_target(refinery::Target::Version(v));
    }
    let report = runner.run_async(&mut client).await;
    let _ = client
        .batch_execute("SELECT pg_advisory_unlock(7461626)")
        .await;
    drop(client);
    task.abort();
    Ok(report?.applied_migrations().len())
}

/// A fingerprint of the migrations, so test templates are rebuilt when they change.
pub fn migrations_fingerprint() -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for m in embedded::migrations::runner().get_migrations() {
        hash.update(m.name().as_bytes());
        hash.update(m.checksum().to_le_bytes());
    }
    let digest = hash.finalize();
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

//! Queries that return domain types. Functions take any `GenericClient`, so the
//! caller decides whether they run inside a transaction.

pub mod alerts;
pub mod console;
pub mod idempotency_keys;
mod ids;
pub mod outbox;
pub mod payment_methods;
pub mod payments;
pub mod refunds;
pub mod subscriptions;
pub mod tariff_changes;
pub mod tariffs;
pub mod webhook_inbox;

pub use deadpool_postgres::GenericClient;

/// A statement kept in a `.sql` file beside its module (`include_str!`, the way
/// crates.io keeps its long queries), with `{cols}` replaced by the column list the
/// row type reads. Built once.
macro_rules! sql_file {
    ($path:literal, $cols:expr) => {{
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| include_str!($path).replace("{cols}", $cols));
        SQL.as_str()
    }};
    ($path:literal) => {
        include_str!($path)
    };
}
pub(crate) use sql_file;

/// The database's clock: every decision about time is taken with it.
pub async fn now(db: &impl GenericClient) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    Ok(db.q_one("SELECT now()", &[]).await?.try_get(0)?)
}

/// Queries through the connection's prepared-statement cache: one round trip per
/// query instead of two (tokio-postgres prepares an unnamed statement first when
/// given SQL text). Used on the hot paths (webhook, settle, renewer, reconciler);
/// the SQL there is static, so the per-connection cache stays small.
#[async_trait::async_trait]
pub trait Cached: GenericClient {
    async fn q(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query(&st, params).await
    }
    async fn q_one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query_one(&st, params).await
    }
    async fn q_opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query_opt(&st, params).await
    }
    async fn exec(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.execute(&st, params).await
    }
}

impl<C: GenericClient> Cached for C {}

/// A pooled connection and its transactions, failing as `StoreError`: the layers
/// above know only `StoreError`, never the driver's or the pool's error types.
#[async_trait::async_trait]
pub trait Connect {
    async fn conn(&self) -> Result<deadpool_postgres::Client, StoreError>;
}

#[async_trait::async_trait]
impl Connect for deadpool_postgres::Pool {
    async fn conn(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.get().await?)
    }
}

/// Opens a transaction on a pooled connection.
pub async fn begin(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    Ok(client.transaction().await?)
}

/// Commits what `begin` opened.
pub async fn commit(tx: deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    Ok(tx.commit().await?)
}
pub use crate::domain::PaymentKind;
pub use payments::{Payment, PaymentMethod};
pub use subscriptions::Subscription;
pub use tariffs::{PaySystemRow, Tariff};

/// Errors from the store: the database is down (503) or a query failed (a bug: 500).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl StoreError {
    /// A broken connection or an unreachable server, as opposed to a bad query.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Query(e) => e.is_closed() || e.code().is_none_or(is_connection_class),
            StoreError::Corrupt(_) => false,
        }
    }

    /// Worth retrying as it is: the server is away, or this transaction lost a race
    /// (serialization failure, deadlock, a concurrent insert of the same key) that a
    /// later attempt, seeing the winner's commit, decides differently.
    pub fn is_transient(&self) -> bool {
        use tokio_postgres::error::SqlState;
        self.is_unavailable()
            || matches!(self, StoreError::Query(e) if e.code().is_some_and(|c| {
                *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::UNIQUE_VIOLATION
            }))
    }

    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Query(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

fn is_connection_class(code: &tokio_postgres::error::SqlState) -> bool {
    // Class 08: connection exception; 57P: operator intervention (shutdown); 53: resources.
    let c = code.code();
    c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
}

pub(crate) fn parse_col<T: std::str::FromStr>(
    row: &tokio_postgres::Row,
    col: &str,
) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(col)?;
    text.trim()
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

//! `alerts`: every alert as logged, kept for the console's overview.

use chrono::{DateTime, Utc};

use super::{GenericClient, StoreError};
use crate::store::Cached as _;

pub async fn insert(
    db: &impl GenericClient,
    kind: &str,
    message: &str,
    subject: &str,
) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO alerts (kind, message, subject) VALUES ($1, $2, $3)",
        &[&kind, &message, &subject],
    )
    .await?;
    Ok(())
}

/// How many alerts of each kind were raised since `since`, most frequent first.
pub async fn count_by_kind(
    db: &impl GenericClient,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = db
        .q(
            "SELECT kind, count(*) FROM alerts WHERE raised_at >= $1
             GROUP BY kind ORDER BY count(*) DESC, kind",
            &[&since],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Deletes alerts raised before `before`, at most `limit` of them.
pub async fn purge(
    db: &impl GenericClient,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, StoreError> {
    Ok(db
        .exec(
            "DELETE FROM alerts WHERE id IN (
                 SELECT id FROM alerts WHERE raised_at < $1 ORDER BY id LIMIT $2)",
            &[&before, &limit],
        )
        .await?)
}

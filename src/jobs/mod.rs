//! Background jobs. Each has a `run_once(&App) -> usize` that processes one batch
//! (tests call it directly) and is driven by `run_loop`, which sleeps less when a
//! batch was full and stops on the app's cancellation token.

pub mod create;
pub mod expirer;
pub mod housekeeping;
pub mod inbox_retry;
pub mod reconciler;
pub mod refunds;
pub mod renewer;

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::app::App;

/// Runs `step` until shutdown: immediately again after a full batch, after `idle` otherwise.
pub async fn run_loop<F, Fut>(app: App, name: &'static str, batch: usize, idle: Duration, step: F)
where
    F: Fn(App) -> Fut,
    Fut: Future<Output = Result<usize, String>>,
{
    loop {
        let started = Instant::now();
        let result = step(app.clone()).await;
        metrics::counter!("job_runs_total", "job" => name).increment(1);
        metrics::histogram!("job_run_duration_seconds", "job" => name)
            .record(started.elapsed().as_secs_f64());
        let wait = match result {
            Ok(n) => {
                metrics::counter!("job_rows_total", "job" => name).increment(n as u64);
                if n >= batch {
                    Duration::ZERO
                } else {
                    idle
                }
            }
            Err(e) => {
                metrics::counter!("job_failures_total", "job" => name).increment(1);
                tracing::warn!(job = name, error = %e, "job run failed");
                idle.max(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs a claiming statement (`UPDATE … SET <lease> WHERE id IN (SELECT … FOR UPDATE
/// SKIP LOCKED) RETURNING id`) in its own short transaction and answers the ids. The
/// caller then works on each id with no lock held, so a provider call never sits
/// inside a transaction; the lease keeps other replicas off the row meanwhile.
pub async fn claim(
    app: &App,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Uuid>, String> {
    let db = app.db.get().await.map_err(|e| e.to_string())?;
    let rows = db.query(sql, params).await.map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

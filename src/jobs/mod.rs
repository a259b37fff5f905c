//! Background jobs. Each has a `run_once(&App) -> usize` that processes one batch
//! (tests call it directly) and is driven by `run_loop`, which sleeps less when a
//! batch was full and stops on the app's cancellation token.

pub mod create;
pub mod expirer;
pub mod housekeeping;
pub mod inbox_retry;
pub mod reconciler;
pub mod renewer;

use std::future::Future;
use std::time::{Duration, Instant};

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

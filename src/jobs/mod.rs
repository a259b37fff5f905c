//! Background jobs. Each is a [`Job`]: a name, a batch size, how long to idle
//! when a run found less than a full batch, and one `run_once` that handles one
//! batch and answers how many rows it handled. [`all`] is the list `server.rs`
//! runs, every job in the same loop ([`run`]); tests call `run_once` directly.
//!
//! Jobs that call a provider claim their rows first with SKIP LOCKED and a lease
//! (`JOB_*_LEASE`), committed before the call: no lock is held across the network,
//! and replicas share the work without handling a row twice at once.
//!
//! The outbox relay is not in the list: it is one elected publisher per database,
//! woken by `NOTIFY`, not a batch on a timer (see `events::relay`).

pub mod expirer;
pub mod housekeeping;
pub mod inbox_retry;
pub mod outbox_retention;
pub mod reconciler;
pub mod refund_follow_up;
pub mod refund_sweep;
pub mod renewer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::config::Config;
use crate::service::BillingError;
use crate::store::StoreError;

/// Why one run of a job did not complete. The loop logs it, counts it and tries
/// again after the idle interval; rows claimed by the run come back when their
/// lease ends.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Billing(#[from] BillingError),
    /// The provider (or our own re-read) did not answer: asked again later.
    #[error("not answered: {0}")]
    Unanswered(String),
}

#[async_trait::async_trait]
pub trait Job: Send + Sync {
    /// The `job` label of the job metrics and logs.
    fn name(&self) -> &'static str;
    /// Rows one run handles at most; a full batch runs again at once.
    fn batch(&self) -> usize;
    /// The wait after a run that found less than a full batch.
    fn idle(&self) -> Duration;
    /// How long a claimed row is left alone (jobs that call a provider).
    fn lease(&self) -> Option<Duration> {
        None
    }
    /// A breather between two full batches, for the rest of the database.
    fn between_batches(&self) -> Duration {
        Duration::ZERO
    }
    /// Handles one batch; answers how many rows it handled.
    async fn run_once(&self, app: &App) -> Result<usize, JobError>;
}

/// Every job a `--workers` process runs, with the configured intervals and leases.
pub fn all(config: &Config) -> Vec<Arc<dyn Job>> {
    let j = &config.jobs;
    vec![
        Arc::new(inbox_retry::InboxRetry::new(j)),
        Arc::new(reconciler::Reconciler::new(j)),
        Arc::new(renewer::Renewer::new(j)),
        Arc::new(expirer::Expirer::new(j)),
        Arc::new(refund_follow_up::RefundFollowUp::new(j)),
        Arc::new(refund_sweep::RefundSweep::new(j)),
        Arc::new(housekeeping::Housekeeping::new(j)),
        Arc::new(outbox_retention::OutboxRetention::new(j)),
    ]
}

/// Runs `job` until shutdown: again at once after a full batch, after `idle`
/// otherwise, and at least a second after a failure.
pub async fn run(app: App, job: Arc<dyn Job>) {
    let name = job.name();
    loop {
        let started = Instant::now();
        let result = job.run_once(&app).await;
        metrics::counter!("job_runs_total", "job" => name).increment(1);
        metrics::histogram!("job_run_duration_seconds", "job" => name)
            .record(started.elapsed().as_secs_f64());
        let wait = match result {
            Ok(n) => {
                metrics::counter!("job_rows_total", "job" => name).increment(n as u64);
                if n >= job.batch() {
                    job.between_batches()
                } else {
                    job.idle()
                }
            }
            Err(e) => {
                metrics::counter!("job_failures_total", "job" => name).increment(1);
                tracing::warn!(job = name, error = %e, "job run failed");
                job.idle().max(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

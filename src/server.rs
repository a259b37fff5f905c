//! Start-up and shutdown of `billing serve`: database, migrations, listener,
//! background workers. Tests start the same thing on port 0.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::Config;
use crate::db;

#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub api: bool,
    pub workers: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { api: true, workers: true }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbSetupError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

pub struct Running {
    pub app: App,
    /// The bound address (None with `--workers-only`).
    pub addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("the API is served"))
    }

    /// Graceful stop: no new connections, in-flight requests and job batches finish.
    pub async fn stop(self) {
        self.app.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits until the tasks end (after `app.shutdown` is cancelled elsewhere).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub async fn start(mut config: Config, opts: ServeOptions) -> Result<Running, StartError> {
    // Install the metrics recorder before anything records.
    let _ = crate::telemetry::metrics();
    db::create_if_missing(&config.database_url).await?;
    let applied = db::migrate(&config.database_url).await?;
    if applied > 0 {
        tracing::info!(applied, "migrations applied");
    }

    let listener = if opts.api {
        let l = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
        Some(l)
    } else {
        None
    };
    let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(addr) = addr {
        config.resolve_local_urls(addr);
    }

    let pool = db::pool(&config.database_url, 32)?;
    let app = App::new(config, pool);
    let mut tasks = Vec::new();

    if let Some(listener) = listener {
        let shutdown = app.shutdown.clone();
        let app2 = app.clone();
        tasks.push(tokio::spawn(async move {
            crate::http::serve(listener, app2, async move { shutdown.cancelled().await }).await;
        }));
        tracing::info!(addr = %addr.expect("bound"), mode = app.config.mode.as_str(), "listening");
    }
    if opts.workers {
        tasks.push(tokio::spawn(crate::events::relay::run(app.clone())));
        tasks.push(tokio::spawn(crate::events::retention::run(app.clone())));
    }

    Ok(Running { app, addr, tasks })
}

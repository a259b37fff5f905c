//! Start-up and shutdown of `billing serve`: database, migrations, listener,
//! background workers. Tests start the same thing on port 0.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::Config;
use crate::db;
use crate::jobs;
use crate::providers::cloudpayments::CloudPayments;
use crate::providers::sandbox::Sandbox;
use crate::providers::yookassa::YooKassa;
use crate::providers::Providers;
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub api: bool,
    pub workers: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            api: true,
            workers: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbSetupError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Running {
    pub app: App,
    /// The bound address (None with `--workers-only`).
    pub addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    /// Stores alerts' rows; stopped after every other task (see `service::alerts`).
    alert_writer: JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("the API is served"))
    }

    /// Graceful stop: no new connections, in-flight requests and job batches finish.
    pub async fn stop(self) {
        self.app.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the tasks end (after `app.shutdown` is cancelled elsewhere),
    /// then stores the alerts they raised on their way out.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        self.app.alerts.close.cancel();
        let _ = self.alert_writer.await;
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
            .map_err(|source| StartError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        Some(l)
    } else {
        None
    };
    let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    config.resolve_local_urls(addr.unwrap_or(config.listen_addr));

    let pool = db::pool(&config.database_url, config.database_pool_size)?;
    let (providers, sandbox) = providers(&config, addr);
    let app = App::new(config, pool, providers, sandbox);
    let alert_writer = tokio::spawn(crate::service::alerts::write(app.clone()));
    let mut tasks = Vec::new();

    if let Some(listener) = listener {
        let shutdown = app.shutdown.clone();
        let app2 = app.clone();
        tasks.push(tokio::spawn(async move {
            crate::http::serve(listener, app2, async move { shutdown.cancelled().await }).await;
        }));
        tasks.push(tokio::spawn(crate::http::tariff_cache::listen(app.clone())));
        tracing::info!(addr = %addr.expect("bound"), mode = app.config.mode.as_str(), "listening");
    }
    if opts.workers {
        tasks.push(tokio::spawn(crate::events::relay::run(app.clone())));
        for job in jobs::all(&app.config) {
            tasks.push(tokio::spawn(jobs::run(app.clone(), job)));
        }
    }

    Ok(Running {
        app,
        addr,
        tasks,
        alert_writer,
    })
}

/// The configured providers; in sandbox mode the built-in fake is served by this
/// process under `/sandbox` and the real YooKassa client talks to it over HTTP.
fn providers(config: &Config, bound: Option<SocketAddr>) -> (Providers, Option<Arc<Sandbox>>) {
    let yk = &config.yookassa;
    let api_url = yk.api_url.clone().expect("resolved at start-up");
    let sandbox = (config.mode == crate::config::Mode::Sandbox
        && bound.is_some()
        && api_url.contains("/sandbox/yookassa/"))
    .then(|| {
        let mut base = bound.expect("checked");
        if base.ip().is_unspecified() {
            base.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let sb = Sandbox::new(&yk.shop_id, yk.secret_key.expose(), true);
        let public = api_url.split("/sandbox/").next().unwrap_or("").to_owned();
        sb.set_public_base(&public);
        sb.set_webhook_url(&format!("http://{base}/webhooks/yookassa"));
        sb
    });
    let yookassa = Arc::new(
        YooKassa::new(&api_url, &yk.shop_id, yk.secret_key.clone())
            .with_timeout(config.provider_timeout)
            .with_allowed_ips(yk.allowed_ips.clone()),
    );
    // CloudPayments only with its credentials (CLOUDPAYMENTS_*); otherwise not offered.
    let cloudpayments = config.cloudpayments.as_ref().map(|cp| {
        Arc::new(
            CloudPayments::new(&cp.api_url, &cp.public_id, cp.api_secret.clone())
                .with_timeout(config.provider_timeout),
        ) as Arc<dyn crate::providers::Provider>
    });
    (
        Providers {
            yookassa,
            cloudpayments,
        },
        sandbox,
    )
}

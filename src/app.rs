//! The shared context every handler and job gets: configuration, the pool, keys,
//! providers, and the broker's health as the relay last saw it.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::auth::Keys;
use crate::http::tariff_cache::TariffCache;
use crate::providers::sandbox::Sandbox;
use crate::providers::Providers;

#[derive(Clone)]
pub struct App(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub db: Pool,
    pub keys: Keys,
    pub broker: BrokerStatus,
    pub shutdown: CancellationToken,
    pub providers: Providers,
    /// The built-in provider, in sandbox mode.
    pub sandbox: Option<Arc<Sandbox>>,
    /// `GET /api/v1/tariffs` as last answered (see `http::tariff_cache`).
    pub tariff_cache: TariffCache,
    /// Alerts on their way to the `alerts` table (see `service::alerts`).
    pub alerts: crate::service::alerts::AlertQueue,
}

impl Deref for App {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl App {
    pub fn new(
        config: Config,
        db: Pool,
        providers: Providers,
        sandbox: Option<Arc<Sandbox>>,
    ) -> App {
        let keys = Keys::new(config.jwt_secret.expose());
        let tariff_cache = TariffCache::new(config.tariff_cache_ttl);
        App(Arc::new(Inner {
            config,
            db,
            keys,
            broker: BrokerStatus::default(),
            shutdown: CancellationToken::new(),
            providers,
            sandbox,
            tariff_cache,
            alerts: Default::default(),
        }))
    }
}

/// Whether the relay currently holds a working broker connection.
#[derive(Default)]
pub struct BrokerStatus {
    connected: AtomicBool,
}

impl BrokerStatus {
    pub fn set(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }
    pub fn is_up(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

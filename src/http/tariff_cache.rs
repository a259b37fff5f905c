//! `GET /api/v1/tariffs`, cached in each serving process as the JSON it answers.
//!
//! Tariffs change through the admin API on any replica, or by hand in SQL. A
//! statement trigger on `tariffs` NOTIFYs [`CHANNEL`] when the change commits;
//! every serving process LISTENs on a session of its own and drops its copy, so a
//! change made on one replica is served by the others as soon as the notification
//! arrives. `TARIFF_CACHE_TTL` bounds how stale a copy can get when a notification
//! is missed: the listening session is down (each reconnection drops the copy too,
//! for what happened meanwhile).
//!
//! A copy is kept only if no change was announced while it was read (a generation
//! count), and one miss at a time reads the database: the others wait for its copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use warp::http::header;
use warp::reply::Response;

use super::handlers::views::TariffView;
use crate::app::App;
use crate::store::{tariffs, Connect, StoreError};

/// The channel the `tariffs` trigger notifies (sql/V7).
pub const CHANNEL: &str = "tariffs_changed";

pub struct TariffCache {
    ttl: Duration,
    generation: AtomicU64,
    copy: RwLock<Option<Copy>>,
    /// Held by the one request that reads the database on a miss.
    filling: tokio::sync::Mutex<()>,
}

struct Copy {
    generation: u64,
    taken: Instant,
    body: Bytes,
}

impl TariffCache {
    pub fn new(ttl: Duration) -> TariffCache {
        TariffCache {
            ttl,
            generation: AtomicU64::new(0),
            copy: RwLock::new(None),
            filling: tokio::sync::Mutex::new(()),
        }
    }

    /// Forgets the copy: the next request reads the database.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.copy.write().expect("tariff cache lock") = None;
    }

    fn fresh(&self) -> Option<Bytes> {
        let now = self.generation.load(Ordering::SeqCst);
        self.copy
            .read()
            .expect("tariff cache lock")
            .as_ref()
            .filter(|c| c.generation == now && c.taken.elapsed() < self.ttl)
            .map(|c| c.body.clone())
    }

    /// The active tariffs as JSON, from the copy while it is fresh.
    pub async fn body(&self, db: &Pool) -> Result<Bytes, StoreError> {
        if let Some(body) = self.fresh() {
            return Ok(body);
        }
        let _filling = self.filling.lock().await;
        if let Some(body) = self.fresh() {
            return Ok(body);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let list = tariffs::list_active(&db.conn().await?).await?;
        let views: Vec<TariffView> = list.iter().map(TariffView::from).collect();
        let body = Bytes::from(serde_json::to_vec(&views).expect("tariffs serialise"));
        let mut copy = self.copy.write().expect("tariff cache lock");
        // A change announced while we read: answer what we read, keep nothing.
        if self.generation.load(Ordering::SeqCst) == generation {
            *copy = Some(Copy {
                generation,
                taken: Instant::now(),
                body: body.clone(),
            });
        }
        Ok(body)
    }

    /// The answer to `GET /api/v1/tariffs`.
    pub async fn response(&self, db: &Pool) -> Result<Response, StoreError> {
        let body = self.body(db).await?;
        let mut response = Response::new(body.into());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}

/// Listens for tariff changes until shutdown, on a session of its own, and drops
/// the copy at each one. A lost session is reconnected (100 ms doubling to 10 s);
/// the copy is dropped at every (re)connection.
pub async fn listen(app: App) {
    let mut wait = Duration::from_millis(100);
    loop {
        match session(&app).await {
            Ok(()) => return,
            Err(e) => {
                app.tariff_cache.invalidate();
                tracing::warn!(error = %e, "tariff change listener lost its session; reconnecting");
            }
        }
        if crate::events::relay::sleep_or_shutdown(&app, wait).await {
            return;
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// One listening session: `Ok` at shutdown, `Err` when the session ends.
async fn session(app: &App) -> Result<(), String> {
    let config: tokio_postgres::Config = app
        .config
        .database_url
        .parse()
        .map_err(|e| format!("{e}"))?;
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if changed.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "session closed".to_owned()
    });
    crate::store::outbox::listen(&client, CHANNEL)
        .await
        .map_err(|e| e.to_string())?;
    // Whatever changed before LISTEN took effect.
    app.tariff_cache.invalidate();
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => {
                driver.abort();
                return Ok(());
            }
            change = changes.recv() => match change {
                Some(()) => app.tariff_cache.invalidate(),
                None => {
                    return Err(driver.await.unwrap_or_else(|e| e.to_string()));
                }
            },
        }
    }
}

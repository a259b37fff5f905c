//! The outbox relay: publishes committed outbox rows to RabbitMQ, in `id` order,
//! with publisher confirms, and marks a row sent only after the broker's ack.
//!
//! Every replica runs [`run`]; each keeps its own broker connection (so `/readyz`
//! tells the truth on every replica), and one of them — the holder of a PostgreSQL
//! session advisory lock — publishes. A replica that loses the broker gives the lock
//! up, so a replica that can still reach it takes over. Delivery is at least once:
//! a crash between the ack and the UPDATE re-sends rows, with the same `message_id`.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event, ExchangeKind,
};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::EXCHANGE;
use crate::app::App;
use crate::store::outbox::{self, Unsent};
use crate::store::Connect;
use crate::store::StoreError;

/// Rows per batch: publish them all, then await their confirms together.
pub const BATCH: i64 = 500;
/// The session advisory lock that elects the relay (one per database).
pub const LOCK_KEY: i64 = 0x6f75_7462_6f78; // "outbox"
/// The channel the outbox trigger notifies after each insert.
pub const CHANNEL: &str = "billing_outbox";

/// A safety net only: LISTEN wakes the leader at each commit.
const POLL: Duration = Duration::from_secs(1);
/// How often a standby asks for the lock.
const STANDBY_RETRY: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A broker that blocks publishers (memory or disk alarm) never confirms: give up
/// the batch, reconnect, and send it again.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
const GAUGE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not confirm the batch within {0:?}")]
    ConfirmTimeout(Duration),
    #[error(transparent)]
    Db(#[from] StoreError),
}

impl RelayError {
    fn is_broker(&self) -> bool {
        matches!(self, RelayError::Broker(_) | RelayError::ConfirmTimeout(_))
    }
}

/// A broker connection with one confirm-mode channel, the exchange declared.
pub struct Broker {
    conn: Connection,
    channel: Channel,
    /// Cancelled as soon as the connection fails (or is closed), so an idle relay
    /// notices at once and `/readyz` does not say "up" for a dead connection.
    lost: CancellationToken,
}

impl Broker {
    pub async fn connect(url: &str) -> Result<Broker, lapin::Error> {
        let props =
            ConnectionProperties::default().with_connection_name("billing outbox relay".into());
        let conn = Connection::connect(url, props).await?;
        let channel = conn.create_channel().await?;
        // The design fixes these: topic, durable, not auto-delete, no arguments.
        // Consumers own and bind their queues.
        let options = ExchangeDeclareOptions {
            durable: true,
            auto_delete: false,
            ..Default::default()
        };
        channel
            .exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Topic,
                options,
                FieldTable::default(),
            )
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;

        let lost = CancellationToken::new();
        let mut events = Box::pin(conn.events_listener());
        let watch = lost.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = events.next() => e,
                    _ = watch.cancelled() => break,
                };
                match event {
                    Some(Event::Error(e)) => {
                        tracing::debug!(error = %e, "RabbitMQ connection failed");
                        break;
                    }
                    Some(Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(%reason, "RabbitMQ blocks publishing (resource alarm): events wait")
                    }
                    Some(Event::ConnectionUnblocked) => {
                        tracing::info!("RabbitMQ unblocked publishing")
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            watch.cancel();
        });
        Ok(Broker {
            conn,
            channel,
            lost,
        })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    pub fn is_connected(&self) -> bool {
        !self.lost.is_cancelled()
            && self.conn.status().connected()
            && self.channel.status().connected()
    }

    pub async fn close(self) {
        self.lost.cancel();
        if self.conn.status().connected() {
            let _ = self.conn.close(200, "relay stopped".into()).await;
        }
    }
}

/// Publishes one batch of unsent rows (oldest first) and returns how many the
/// broker acked. The caller must be the elected relay (hold [`LOCK_KEY`]).
///
/// No transaction spans the broker round trip: read, publish, await confirms, then
/// one UPDATE for the acked rows. Nacked or unconfirmed rows stay unsent, with
/// `attempts` and `last_error`; a broker error is returned after that bookkeeping,
/// so the caller reconnects. An event nacked in a batch whose later events were
/// acked is re-sent after them: consumers order by `seq` and deduplicate by id.
pub async fn run_once(db: &Pool, channel: &Channel, limit: i64) -> Result<usize, RelayError> {
    let rows: Vec<Unsent> = {
        let client = db.conn().await?;
        outbox::unsent(&client, limit).await?
    };
    if rows.is_empty() {
        return Ok(0);
    }

    let (acked, failed, error) = publish(channel, &rows).await;
    let acked_ids: Vec<i64> = acked.iter().map(|&i| rows[i].id).collect();
    let failed_ids: Vec<i64> = failed.iter().map(|(i, _)| rows[*i].id).collect();

    let client = db.conn().await?;
    if !acked_ids.is_empty() {
        outbox::mark_sent(&client, &acked_ids).await?;
        metrics::counter!("outbox_published_total").increment(acked_ids.len() as u64);
    }
    if !failed_ids.is_empty() {
        let reason = failed
            .first()
            .map(|(_, e)| e.as_str())
            .unwrap_or("not confirmed");
        outbox::mark_failed(&client, &failed_ids, reason).await?;
        metrics::counter!("outbox_publish_failures_total").increment(failed_ids.len() as u64);
        tracing::warn!(
            failed = failed_ids.len(),
            first_id = failed_ids[0],
            error = reason,
            "outbox rows not confirmed"
        );
    }
    match error {
        Some(e) => Err(e),
        None => Ok(acked_ids.len()),
    }
}

/// Publishes `rows` in order, then awaits every confirm. Returns the indexes of
/// the acked rows, the failed ones with a reason, and a broker-level error if the
/// channel broke (the rows after it were not sent).
async fn publish(
    channel: &Channel,
    rows: &[Unsent],
) -> (Vec<usize>, Vec<(usize, String)>, Option<RelayError>) {
    let mut pending = Vec::with_capacity(rows.len());
    let mut failed = Vec::new();
    let mut error = None;
    for (i, row) in rows.iter().enumerate() {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2) // persistent
            .with_message_id(row.event_id.clone().into())
            .with_type(row.event_type.clone().into())
            .with_timestamp(row.occurred_at.timestamp().max(0) as u64);
        let sent = channel
            .basic_publish(
                EXCHANGE.into(),
                row.event_type.clone().into(),
                BasicPublishOptions::default(),
                row.body.as_bytes(),
                props,
            )
            .await;
        match sent {
            Ok(confirm) => pending.push((i, confirm)),
            Err(e) => {
                failed.extend((i..rows.len()).map(|j| (j, format!("publish: {e}"))));
                error = Some(RelayError::Broker(e));
                break;
            }
        }
    }

    let mut acked = Vec::with_capacity(pending.len());
    let indexes: Vec<usize> = pending.iter().map(|(i, _)| *i).collect();
    let confirms = futures::future::join_all(pending.into_iter().map(|(_, c)| c));
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirms).await {
        Ok(results) => {
            for (i, result) in indexes.into_iter().zip(results) {
                match result {
                    Ok(Confirmation::Ack(_)) => acked.push(i),
                    Ok(Confirmation::Nack(_)) => {
                        failed.push((i, "nacked by the broker".to_owned()))
                    }
                    // Not in confirm mode: no proof of delivery, so not sent.
                    Ok(Confirmation::NotRequested) => {
                        failed.push((i, "publisher confirms are off".to_owned()))
                    }
                    Err(e) => {
                        failed.push((i, format!("confirm: {e}")));
                        error.get_or_insert(RelayError::Broker(e));
                    }
                }
            }
        }
        Err(_) => {
            failed.extend(
                indexes
                    .into_iter()
                    .map(|i| (i, "no confirm within the timeout".to_owned())),
            );
            error.get_or_insert(RelayError::ConfirmTimeout(CONFIRM_TIMEOUT));
        }
    }
    failed.sort_by_key(|(i, _)| *i);
    (acked, failed, error)
}

/// The relay loop of one replica, until `app.shutdown`: connect to the broker
/// (with backoff), stand by for the lock, publish while holding it. Also keeps
/// the backlog gauges fresh, on every replica, whether or not the broker is up.
pub async fn run(app: App) {
    // Present from the start (at 0), so rate() and alerts work before the first failure.
    metrics::counter!("outbox_published_total").increment(0);
    metrics::counter!("outbox_publish_failures_total").increment(0);
    tokio::join!(relay_loop(&app), gauge_loop(&app));
}

async fn relay_loop(app: &App) {
    let mut backoff = Backoff::new();
    while !app.shutdown.is_cancelled() {
        let connected = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, Broker::connect(&app.config.amqp_url)) => r,
            _ = app.shutdown.cancelled() => break,
        };
        let broker = match connected {
            Ok(Ok(b)) => b,
            failure => {
                app.broker.set(false);
                let error = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {CONNECT_TIMEOUT:?}"),
                };
                if backoff.is_first() {
                    tracing::warn!(%error, "RabbitMQ unreachable: events wait in the outbox; retrying");
                } else {
                    tracing::debug!(%error, "RabbitMQ still unreachable");
                }
                if sleep_or_shutdown(app, backoff.next()).await {
                    break;
                }
                continue;
            }
        };
        app.broker.set(true);
        backoff.reset();
        tracing::info!("connected to RabbitMQ");

        let exit = with_broker(app, &broker).await;
        app.broker.set(false);
        broker.close().await;
        match exit {
            Exit::Shutdown => break,
            Exit::BrokerLost(error) => {
                tracing::warn!(%error, "lost RabbitMQ: reconnecting");
                if sleep_or_shutdown(app, backoff.next()).await {
                    break;
                }
            }
        }
    }
    app.broker.set(false);
}

enum Exit {
    Shutdown,
    BrokerLost(String),
}

/// Stands by for the lock and relays while holding it, until the broker goes away
/// or the service stops.
async fn with_broker(app: &App, broker: &Broker) -> Exit {
    let mut db_backoff = Backoff::new();
    loop {
        let mut leader = match Leadership::connect(&app.config.database_url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot open its lock connection");
                if sleep_or_shutdown(app, db_backoff.next()).await {
                    return Exit::Shutdown;
                }
                continue;
            }
        };
        // Standby: ask for the lock until it is ours.
        loop {
            if !broker.is_connected() {
                return Exit::BrokerLost("connection closed".into());
            }
            match leader.try_acquire().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "relay lock connection failed");
                    break;
                }
            }
            tokio::select! {
                _ = app.shutdown.cancelled() => return Exit::Shutdown,
                _ = broker.lost.cancelled() => {}
                _ = tokio::time::sleep(STANDBY_RETRY) => {}
            }
        }
        if !leader.is_leader() {
            if sleep_or_shutdown(app, db_backoff.next()).await {
                return Exit::Shutdown;
            }
            continue;
        }
        db_backoff.reset();
        tracing::info!("elected as the outbox relay");
        match lead(app, broker, &leader).await {
            Lead::Shutdown => return Exit::Shutdown,
            Lead::BrokerLost(e) => return Exit::BrokerLost(e),
            // Dropping `leader` ends its session (if it still exists) and so the lock.
            Lead::LockLost => tracing::warn!("relay lock connection lost: electing again"),
        }
    }
}

enum Lead {
    Shutdown,
    BrokerLost(String),
    LockLost,
}

async fn lead(app: &App, broker: &Broker, leader: &Leadership) -> Lead {
    let mut db_backoff = Backoff::new();
    loop {
        if app.shutdown.is_cancelled() {
            return Lead::Shutdown;
        }
        if leader.lost.is_cancelled() {
            return Lead::LockLost;
        }
        if !broker.is_connected() {
            return Lead::BrokerLost("connection closed".into());
        }
        match run_once(&app.db, broker.channel(), BATCH).await {
            // A full batch: there is a backlog, go on at once.
            Ok(n) if n as i64 == BATCH => db_backoff.reset(),
            Ok(_) => {
                db_backoff.reset();
                tokio::select! {
                    _ = leader.wake.notified() => {}
                    _ = leader.lost.cancelled() => {}
                    _ = broker.lost.cancelled() => {}
                    _ = app.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            Err(e) if e.is_broker() => return Lead::BrokerLost(e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot reach the database");
                if sleep_or_shutdown(app, db_backoff.next()).await {
                    return Lead::Shutdown;
                }
            }
        }
    }
}

/// A dedicated PostgreSQL session: it holds the advisory lock and LISTENs for
/// outbox inserts. Not from the pool, because the lock lives as long as the session.
struct Leadership {
    client: tokio_postgres::Client,
    /// Signalled by each notification on [`CHANNEL`].
    wake: Arc<Notify>,
    /// Cancelled when the session ends (and with it the lock).
    lost: CancellationToken,
    leader: bool,
}

impl Leadership {
    async fn connect(url: &str) -> Result<Leadership, tokio_postgres::Error> {
        let config: tokio_postgres::Config = url.parse()?;
        let (client, mut connection) = config.connect(NoTls).await?;
        let wake = Arc::new(Notify::new());
        let lost = CancellationToken::new();
        let (wake2, lost2) = (wake.clone(), lost.clone());
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => wake2.notify_one(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "relay lock connection ended");
                        break;
                    }
                }
            }
            lost2.cancel();
        });
        Ok(Leadership {
            client,
            wake,
            lost,
            leader: false,
        })
    }

    /// Takes the lock if it is free, and then LISTENs (before the first batch is
    /// read, so no commit after that read goes unnoticed).
    async fn try_acquire(&mut self) -> Result<bool, StoreError> {
        let got = outbox::try_advisory_lock(&self.client, LOCK_KEY).await?;
        if got {
            outbox::listen(&self.client, CHANNEL).await?;
            self.leader = true;
        }
        Ok(got)
    }

    fn is_leader(&self) -> bool {
        self.leader && !self.lost.is_cancelled()
    }
}

/// Keeps `outbox_backlog` and `outbox_oldest_unsent_seconds` fresh. Every replica
/// reports the same database-wide numbers (aggregate with `max`), including while
/// the broker is away, which is when they matter.
async fn gauge_loop(app: &App) {
    loop {
        if let Ok(client) = app.db.conn().await {
            if let Ok(b) = outbox::backlog(&client).await {
                metrics::gauge!("outbox_backlog").set(b.rows as f64);
                metrics::gauge!("outbox_oldest_unsent_seconds").set(b.oldest_seconds);
            }
        }
        if sleep_or_shutdown(app, GAUGE_EVERY).await {
            return;
        }
    }
}

/// Sleeps, or returns true at once if the service is stopping.
pub(crate) async fn sleep_or_shutdown(app: &App, d: Duration) -> bool {
    tokio::select! {
        _ = app.shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => app.shutdown.is_cancelled(),
    }
}

/// 100 ms doubling to 10 s.
struct Backoff {
    next: Duration,
    first: bool,
}

impl Backoff {
    const START: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(10);

    fn new() -> Backoff {
        Backoff {
            next: Self::START,
            first: true,
        }
    }

    fn is_first(&self) -> bool {
        self.first
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        self.first = false;
        d
    }

    fn reset(&mut self) {
        *self = Backoff::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_and_caps_at_10s() {
        let mut b = Backoff::new();
        let seen: Vec<u128> = (0..10).map(|_| b.next().as_millis()).collect();
        assert_eq!(
            seen,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(100));
    }
}

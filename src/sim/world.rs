//! One seed's world: its own database (a copy of a migrated template), the two fake
//! providers in this process, the broker behind the simulator's proxy, one or more
//! `billing serve` children running every job, and a consumer of the events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;

use super::proxy::Proxy;
use super::{SimError, SimResult};
use crate::bench::{self, Fake, Service};
use crate::http::auth::Keys;
use crate::providers::sandbox::cloudpayments::CloudPaymentsSandbox;

pub const CP_PUBLIC_ID: &str = "pk_sim";
pub const CP_SECRET: &str = "sim-cloudpayments-secret";
pub const RETURN_URL: &str = "https://cinema.example/return";
pub const BROKER: &str = "127.0.0.1:5672";
/// The longest a live subscription may outlast its period: the dunning schedule
/// (1d + 3d + 5d, longer than the refusal grace) plus 24 h for a renewal in flight.
pub const ACCESS_SLACK: &str = "10 days";

/// Each replica's PostgreSQL pool: several worlds share one server.
pub const POOL_SIZE: usize = 4;
const POOL_SIZE_TEXT: &str = "4";

/// How long the world may take to go quiet: an old build's slowest job (the expirer)
/// runs every 30 s, and two of its runs are waited for.
pub const QUIET_LIMIT: Duration = Duration::from_secs(90);

/// The service's wait for one provider answer in the simulated world, and how
/// late a late answer comes (past it).
pub const PROVIDER_TIMEOUT_TEXT: &str = "1s";
pub const LATE_ANSWER: Duration = Duration::from_millis(1500);

/// The jobs that move money and access (their runs tell a quiet world from a slow one).
pub const SETTLING_JOBS: [&str; 6] = [
    "inbox_retry",
    "reconciler",
    "renewer",
    "expirer",
    "refund_follow_up",
    "refund_sweep",
];

/// An event as the simulator's consumer received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id: String,
    pub event_type: String,
    pub data: Value,
}

pub struct World {
    pub db_url: String,
    pub db: tokio_postgres::Client,
    pub yookassa: Fake,
    pub cloudpayments: Arc<CloudPaymentsSandbox>,
    cp_api: String,
    pub proxy: Arc<Proxy>,
    services: Vec<Option<Service>>,
    opts: bench::Options,
    pub keys: Keys,
    pub http: reqwest::Client,
    pub events: Arc<Mutex<Vec<Received>>>,
    _broker: Connection,
    /// Whether this schema records the period each payment paid (`payments.period_end`).
    pub has_periods: bool,
}

impl World {
    /// `template`: a migrated database this world's is copied from.
    pub async fn start(
        exe: &Path,
        template: &str,
        db_url: &str,
        replicas: usize,
    ) -> SimResult<World> {
        bench::drop_db(db_url).await.map_err(SimError::new)?;
        let (admin, name) = admin(db_url).await?;
        // A template copies only while nobody else uses it, copies included.
        static COPYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let template_name = template.rsplit('/').next().unwrap_or(template);
        let create = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template_name}\"");
        let _one_at_a_time = COPYING.lock().await;
        let mut tries = 0;
        while let Err(e) = admin.batch_execute(&create).await {
            tries += 1;
            if tries > 50 {
                return Err(pg(e));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(_one_at_a_time);
        let db = bench::connect(db_url).await.map_err(SimError::new)?;
        let has_periods: i64 = db
            .query_one(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'payments' AND column_name = 'period_end'",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        let has_periods = has_periods > 0;

        let yookassa = bench::fake().await.map_err(SimError::new)?;
        let cloudpayments = CloudPaymentsSandbox::new(CP_PUBLIC_ID, CP_SECRET, true);
        let cp_addr = cloudpayments
            .spawn("127.0.0.1:0".parse().expect("addr"))
            .await
            .map_err(SimError::new)?;
        let proxy = Proxy::start(BROKER.parse::<SocketAddr>().expect("addr"))
            .await
            .map_err(SimError::new)?;
        let (broker, events) = consume().await?;
        let opts = bench::Options::new(0, 1, db_url.to_owned(), exe.to_path_buf());
        let mut world = World {
            db_url: db_url.to_owned(),
            db,
            yookassa,
            cloudpayments,
            cp_api: format!("http://{cp_addr}/sandbox/cloudpayments"),
            proxy,
            services: (0..replicas).map(|_| None).collect(),
            opts,
            keys: Keys::new(bench::JWT_KEY),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(SimError::new)?,
            events,
            _broker: broker,
            has_periods,
        };
        for i in 0..replicas {
            world.start_replica(i).await?;
        }
        Ok(world)
    }

    pub fn replicas(&self) -> usize {
        self.services.len()
    }

    /// The base URL of replica `i` (the next running one if it is down).
    pub fn url(&self, i: usize) -> String {
        let n = self.services.len();
        (0..n)
            .filter_map(|k| self.services[(i + k) % n].as_ref())
            .map(|s| s.url.clone())
            .next()
            .unwrap_or_default()
    }

    pub async fn start_replica(&mut self, i: usize) -> SimResult<()> {
        let amqp = format!("amqp://guest:guest@{}/%2f", self.proxy.addr);
        let env: Vec<(&str, &str)> = vec![
            ("AMQP_URL", &amqp),
            ("CLOUDPAYMENTS_PUBLIC_ID", CP_PUBLIC_ID),
            ("CLOUDPAYMENTS_API_SECRET", CP_SECRET),
            ("CLOUDPAYMENTS_API_URL", &self.cp_api),
            // The fake terminal sends TestMode true.
            ("CLOUDPAYMENTS_MODE", "test"),
            ("YOOKASSA_RETURN_URL", RETURN_URL),
            // Several worlds share one PostgreSQL (100 connections by default).
            ("DATABASE_POOL_SIZE", POOL_SIZE_TEXT),
            // The simulated world's clock moves by warps; its jobs run often.
            ("JOB_INBOX_RETRY_INTERVAL", "200ms"),
            ("JOB_RECONCILER_INTERVAL", "300ms"),
            ("JOB_RENEWER_INTERVAL", "300ms"),
            ("JOB_EXPIRER_INTERVAL", "300ms"),
            ("JOB_REFUND_FOLLOW_UP_INTERVAL", "300ms"),
            ("JOB_REFUND_SWEEP_INTERVAL", "300ms"),
            ("PROVIDER_TIMEOUT", PROVIDER_TIMEOUT_TEXT),
            // Published rows stay, so every event can be checked against the queue.
            ("OUTBOX_RETENTION", "36500d"),
            ("RUST_LOG", "error"),
        ];
        let service = Service::start(&self.opts, &self.yookassa, "sim", bench::Role::All, &env)
            .await
            .map_err(SimError::new)?;
        self.cloudpayments
            .set_webhook_url(&format!("{}/webhooks/cloudpayments", service.url));
        self.services[i] = Some(service);
        Ok(())
    }

    /// `kill -9` of replica `i`.
    pub async fn kill(&mut self, i: usize) {
        if let Some(s) = self.services[i].take() {
            s.stop().await;
        }
        // Notifications go to a replica that is up.
        let url = self.url(i);
        if !url.is_empty() {
            self.yookassa
                .sandbox
                .set_webhook_url(&format!("{url}/webhooks/yookassa"));
            self.cloudpayments
                .set_webhook_url(&format!("{url}/webhooks/cloudpayments"));
        }
    }

    pub async fn ensure_all_running(&mut self) -> SimResult<()> {
        for i in 0..self.services.len() {
            if self.services[i].is_none() {
                self.start_replica(i).await?;
            }
        }
        Ok(())
    }

    /// Moves the clock forward by `by`: every timestamp in the database and at the
    /// fakes moves back. A day or more makes YooKassa forget its idempotence keys.
    pub async fn warp(&self, by: Duration) -> SimResult<()> {
        self.db
            .execute(
                "SELECT sim_warp(make_interval(secs => $1))",
                &[&(by.as_secs() as f64)],
            )
            .await
            .map_err(pg)?;
        self.yookassa
            .sandbox
            .warp(chrono::Duration::from_std(by).unwrap_or_default());
        Ok(())
    }

    /// How long until the next period end of a live subscription that renews.
    pub async fn next_renewal(&self) -> SimResult<Option<Duration>> {
        let secs: Option<f64> = self
            .db
            .query_one(include_str!("sql/next_renewal.sql"), &[])
            .await
            .map_err(pg)?
            .get(0);
        Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
    }

    /// Terminates every other PostgreSQL backend of this world's database.
    pub async fn terminate_backends(&self) -> SimResult<u64> {
        let (admin, name) = admin(&self.db_url).await?;
        let n: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await
            .map_err(pg)?
            .get(0);
        Ok(n as u64)
    }

    pub async fn reconnect(&mut self) -> SimResult<()> {
        self.db = bench::connect(&self.db_url).await.map_err(SimError::new)?;
        Ok(())
    }

    /// Waits until the jobs have nothing left to change, at most `limit`: the
    /// fingerprint holds still for `quiet`, and meanwhile every job that settles
    /// money ([`SETTLING_JOBS`]) has completed two runs on every replica (so a
    /// loaded machine, where a job runs late, does not pass for a quiet one).
    /// Answers whether it got quiet before [`QUIET_LIMIT`] (plus ten times `quiet`).
    pub async fn wait_quiet(&self, quiet: Duration) -> SimResult<bool> {
        let limit = quiet * 10 + QUIET_LIMIT;
        let started = Instant::now();
        let mut last = String::new();
        let mut since = Instant::now();
        let mut runs_then = HashMap::new();
        loop {
            let now: String = self
                .db
                .query_one(include_str!("sql/fingerprint.sql"), &[])
                .await
                .map_err(pg)?
                .get(0);
            if now != last {
                last = now;
                since = Instant::now();
                runs_then = self.job_runs().await;
            } else if since.elapsed() >= quiet {
                let runs_now = self.job_runs().await;
                let ran_twice = runs_now
                    .iter()
                    .all(|(k, n)| *n >= runs_then.get(k).copied().unwrap_or(0) + 2);
                if ran_twice {
                    return Ok(true);
                }
            }
            if started.elapsed() > limit {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Completed runs of each settling job, per running replica, from `/metrics`
    /// (`job_runs_total{job="…"}`); a replica that does not answer counts nothing.
    async fn job_runs(&self) -> HashMap<(String, String), u64> {
        let mut out = HashMap::new();
        for s in self.services.iter().flatten() {
            let Ok(r) = self.http.get(format!("{}/metrics", s.url)).send().await else {
                continue;
            };
            let Ok(text) = r.text().await else { continue };
            for line in text.lines() {
                let Some(rest) = line.strip_prefix("job_runs_total{job=\"") else {
                    continue;
                };
                let Some((job, count)) = rest.split_once("\"} ") else {
                    continue;
                };
                if SETTLING_JOBS.contains(&job) {
                    if let Ok(n) = count.trim().parse::<f64>() {
                        out.insert((s.url.clone(), job.to_owned()), n as u64);
                    }
                }
            }
        }
        out
    }

    /// Stops the services and drops the database, unless it is kept for inspection
    /// (`keep`: a violation of that seed): then it is renamed `<name>_seed<seed>`, so
    /// the next seed of the same slot does not replace it, and its URL is answered.
    pub async fn stop(mut self, keep: Option<u64>) -> Option<String> {
        for s in self.services.iter_mut() {
            if let Some(s) = s.take() {
                s.stop().await;
            }
        }
        let Some(seed) = keep else {
            let _ = bench::drop_db(&self.db_url).await;
            return None;
        };
        match self.rename(seed).await {
            Ok(url) => Some(url),
            Err(e) => {
                eprintln!("seed {seed}: could not keep its database: {e}");
                None
            }
        }
    }

    async fn rename(&self, seed: u64) -> SimResult<String> {
        let (admin, name) = admin(&self.db_url).await?;
        let kept = format!("{name}_seed{seed}");
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await
            .map_err(pg)?;
        // Two statements: DROP DATABASE cannot run in the implicit transaction of one.
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{kept}\""),
            format!("ALTER DATABASE \"{name}\" RENAME TO \"{kept}\""),
        ] {
            admin.batch_execute(&sql).await.map_err(pg)?;
        }
        let base = self.db_url.rsplit_once('/').map_or("", |(b, _)| b);
        Ok(format!("{base}/{kept}"))
    }
}

/// A migrated template database for `exe`'s schema (its own `migrate`), with the
/// simulator's clock function.
pub async fn template(exe: &Path, url: &str) -> SimResult<()> {
    bench::drop_db(url).await.map_err(SimError::new)?;
    crate::db::create_if_missing(url)
        .await
        .map_err(SimError::new)?;
    let out = tokio::process::Command::new(exe)
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", url)
        .env("AMQP_URL", bench::NO_BROKER)
        .env("JWT_SECRET_KEY", bench::JWT_KEY)
        .output()
        .await
        .map_err(|e| SimError(format!("cannot run {} migrate: {e}", exe.display())))?;
    if !out.status.success() {
        return Err(SimError(format!(
            "{} migrate failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let (db, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(pg)?;
    let conn = tokio::spawn(conn);
    db.batch_execute(include_str!("sql/warp.sql"))
        .await
        .map_err(pg)?;
    // Closed before any copy is made of it.
    drop(db);
    let _ = conn.await;
    Ok(())
}

/// A PostgreSQL error with the server's message (its Display says only "db error").
pub fn pg(e: tokio_postgres::Error) -> SimError {
    match e.as_db_error() {
        Some(db) => SimError(format!("{}: {}", db.code().code(), db.message())),
        None => SimError(e.to_string()),
    }
}

async fn admin(url: &str) -> SimResult<(tokio_postgres::Client, String)> {
    bench::admin(url).await.map_err(SimError::new)
}

/// A private queue bound to every event, read into memory by a task.
async fn consume() -> SimResult<(Connection, Arc<Mutex<Vec<Received>>>)> {
    let conn = Connection::connect(
        &format!("amqp://guest:guest@{BROKER}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .map_err(|e| SimError(format!("RabbitMQ on {BROKER}: {e}")))?;
    let channel = conn.create_channel().await.map_err(SimError::new)?;
    channel
        .exchange_declare(
            "billing.events".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(SimError::new)?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(SimError::new)?;
    channel
        .queue_bind(
            queue.name().clone(),
            "billing.events".into(),
            "#".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .map_err(SimError::new)?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "sim".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(SimError::new)?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    tokio::spawn(async move {
        let _channel = channel;
        while let Some(Ok(delivery)) = consumer.next().await {
            let body: Value = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
            let _ = delivery.ack(BasicAckOptions::default()).await;
            sink.lock().unwrap().push(Received {
                event_id: body["id"].as_str().unwrap_or_default().to_owned(),
                event_type: body["type"].as_str().unwrap_or_default().to_owned(),
                data: body["data"].clone(),
            });
        }
    });
    Ok((conn, events))
}

/// Rows of a query as JSON-ish maps of text (the checks compare text).
pub async fn rows(
    db: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> SimResult<Vec<HashMap<String, Value>>> {
    let rows = db.query(sql, params).await.map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| {
            r.columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let v = match c.type_().name() {
                        "bool" => r.get::<_, Option<bool>>(i).map(Value::from),
                        "int8" => r.get::<_, Option<i64>>(i).map(Value::from),
                        "int4" => r.get::<_, Option<i32>>(i).map(Value::from),
                        "timestamptz" => r
                            .get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
                            .map(|t| Value::from(t.to_rfc3339())),
                        _ => r.get::<_, Option<String>>(i).map(Value::from),
                    };
                    (c.name().to_owned(), v.unwrap_or(Value::Null))
                })
                .collect()
        })
        .collect())
}

//! `billing bench`: the load generator shipped with the service (as pgbench ships
//! with PostgreSQL). Each scenario drops and recreates its own database, prepares
//! rows in bulk with SQL, mirrors them into a standalone sandbox provider (YooKassa
//! fake, served by this process over real HTTP), starts the service as a child
//! process (`billing serve`, test mode against the fake), drives it, and verifies
//! the result in the database and at the fake. Figures are one JSON object per
//! scenario; `verified` is false when anything is off.
//!
//! The service runs as a child so its peak resident memory (VmHWM) is its own, not
//! the load generator's or the fake's.

mod ceiling;
mod pgbench;
mod plot;
mod reads;
mod reconcile;
mod renew;
mod round_trips;
mod webhooks;

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio_postgres::NoTls;

use crate::domain::PaymentId;
use crate::domain::TariffId;
use crate::domain::UserId;
use crate::providers::sandbox::Sandbox;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/billing_bench";
pub const SHOP_ID: &str = "bench-shop";
pub const SECRET_KEY: &str = "test_bench_secret";
pub const JWT_KEY: &str = "bench-jwt-key";
pub const MONTH_TARIFF: &str = "6a1f0c52-8d0e-4c1e-9a57-0a9f1d3b2c01";
/// The price of the monthly tariff in the seed data, as the provider writes it.
pub const PRICE: &str = "299.00";
pub const PRICE_MINOR: i64 = 29_900;
/// A closed port: events stay in the outbox, where they are counted.
pub const NO_BROKER: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Webhooks,
    Ceiling,
    Reconcile,
    Renew,
    Reads,
    All,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Webhooks => "webhooks",
            Scenario::Ceiling => "ceiling",
            Scenario::Reconcile => "reconcile",
            Scenario::Renew => "renew",
            Scenario::Reads => "reads",
            Scenario::All => "all",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub n: usize,
    pub concurrency: usize,
    /// The scenario's database: dropped and recreated by every scenario.
    pub database_url: String,
    /// The `billing` binary started as the service (`billing serve`).
    pub service_exe: PathBuf,
    /// Drop the database when the scenario ends (tests); the CLI keeps it for inspection.
    pub drop_after: bool,
    /// `DATABASE_POOL_SIZE` of the service (and the ceiling's pool); None: the
    /// service's default.
    pub pool_size: Option<usize>,
    /// renew only: how many processes share the work. 1 is one `billing serve`;
    /// more are that many `billing serve --workers-only`.
    pub processes: usize,
    /// Route the service's database connections through a counting proxy and report
    /// round trips (Sync and simple-query messages) per item. The proxy is one more
    /// hop, so a counting run's timings are not the scenario's figures.
    pub count_round_trips: bool,
}

impl Options {
    /// One scenario run with the service's defaults.
    pub fn new(n: usize, concurrency: usize, database_url: String, service_exe: PathBuf) -> Self {
        Options {
            n,
            concurrency,
            database_url,
            service_exe,
            drop_after: false,
            pool_size: None,
            processes: 1,
            count_round_trips: false,
        }
    }

    /// The pool size the service runs with.
    pub fn effective_pool_size(&self) -> usize {
        self.pool_size
            .unwrap_or(crate::config::DEFAULT_DATABASE_POOL_SIZE)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

impl BenchError {
    pub fn new(e: impl std::fmt::Display) -> Self {
        BenchError(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, BenchError>;

/// Runs one scenario (or all, in order) and answers one JSON object of figures per scenario.
pub async fn run(scenario: Scenario, opts: &Options) -> Result<Vec<Value>> {
    let list = match scenario {
        Scenario::All => vec![
            Scenario::Webhooks,
            Scenario::Reconcile,
            Scenario::Renew,
            Scenario::Reads,
        ],
        one => vec![one],
    };
    let mut out = Vec::new();
    for s in &list {
        let load_before = load_average();
        let mut figures = match s {
            // webhooks measures the ceiling first, in the same run, for its ratio.
            Scenario::Webhooks => webhooks::run(opts).await?,
            Scenario::Ceiling => ceiling::run(opts).await?,
            Scenario::Reconcile => reconcile::run(opts).await?,
            Scenario::Renew => renew::run(opts).await?,
            _ => reads::run(opts).await?,
        };
        if let Some(m) = figures.as_object_mut() {
            m.insert("pool_size".into(), json!(opts.effective_pool_size()));
            m.insert("load_avg_before".into(), json!(load_before));
            m.insert("load_avg_after".into(), json!(load_average()));
        }
        if opts.drop_after {
            drop_db(&opts.database_url).await?;
        }
        out.push(figures);
    }
    Ok(out)
}

/// What `billing bench` was asked for on the command line: every combination of
/// the lists is one run.
pub struct Matrix {
    pub scenario: Scenario,
    pub n: Vec<usize>,
    pub concurrency: Vec<usize>,
    pub pool_size: Vec<usize>,
    pub processes: usize,
    pub count_round_trips: bool,
    pub database_url: String,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
}

/// `billing bench`: runs every combination, prints a table per run, writes --json
/// and --plot; exit 1 when a run did not verify, 2 when one could not run.
pub async fn cli(m: Matrix) -> std::process::ExitCode {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("billing"));
    let pools: Vec<Option<usize>> = if m.pool_size.is_empty() {
        vec![None]
    } else {
        m.pool_size.iter().copied().map(Some).collect()
    };
    let mut figures = Vec::new();
    for &n in &m.n {
        for &concurrency in &m.concurrency {
            for &pool_size in &pools {
                let opts = Options {
                    pool_size,
                    processes: m.processes.max(1),
                    count_round_trips: m.count_round_trips,
                    ..Options::new(n, concurrency, m.database_url.clone(), exe.clone())
                };
                match run(m.scenario, &opts).await {
                    Ok(f) => {
                        for one in &f {
                            println!("{}", table(one));
                        }
                        figures.extend(f);
                    }
                    Err(e) => {
                        eprintln!("bench {} (N {n}, C {concurrency}): {e}", m.scenario.name());
                        return std::process::ExitCode::from(2);
                    }
                }
            }
        }
    }
    if let Some(path) = &m.json {
        let doc = match figures.as_slice() {
            [one] if m.scenario != Scenario::All => one.clone(),
            _ => Value::Array(figures.clone()),
        };
        let text = serde_json::to_string_pretty(&doc).expect("json");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("cannot write {}: {e}", path.display());
            return std::process::ExitCode::from(2);
        }
    }
    if let Some(path) = &m.plot {
        if let Err(e) = plot::draw(&figures, path) {
            eprintln!("cannot draw {}: {e}", path.display());
            return std::process::ExitCode::from(2);
        }
    }
    if figures.iter().all(|f| f["verified"] == json!(true)) {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("bench: a run did NOT verify (see `verified` above)");
        std::process::ExitCode::FAILURE
    }
}

/// The 1-minute load average (`/proc/loadavg`), NaN where there is none.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The figures as a two-column table.
pub fn table(figures: &Value) -> String {
    let mut s = String::new();
    let name = figures["scenario"].as_str().unwrap_or("?");
    s.push_str(&format!("== {name}\n"));
    if let Some(map) = figures.as_object() {
        for (k, v) in map {
            if k == "scenario" {
                continue;
            }
            let text = match v {
                Value::Number(n) => match n.as_f64() {
                    Some(f) if n.is_f64() => format!("{f:.2}"),
                    _ => n.to_string(),
                },
                other => other.to_string(),
            };
            s.push_str(&format!("  {k:<22} {text}\n"));
        }
    }
    s
}

// ----- database -----

fn pg_config(url: &str) -> Result<tokio_postgres::Config> {
    tokio_postgres::Config::from_str(url).map_err(BenchError::new)
}

/// A session on the server's `postgres` database, and the name of the one in `url`.
pub async fn admin(url: &str) -> Result<(tokio_postgres::Client, String)> {
    let mut cfg = pg_config(url)?;
    let name = cfg
        .get_dbname()
        .ok_or_else(|| BenchError::new("the database URL names no database"))?
        .to_owned();
    cfg.dbname("postgres");
    let (client, conn) = cfg.connect(NoTls).await.map_err(BenchError::new)?;
    tokio::spawn(conn);
    Ok((client, name))
}

pub async fn drop_db(url: &str) -> Result<()> {
    let (client, name) = admin(url).await?;
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            name.replace('"', "\"\"")
        ))
        .await
        .map_err(BenchError::new)
}

/// Drops and recreates the scenario's database, migrates it, and connects.
pub async fn fresh_db(url: &str) -> Result<tokio_postgres::Client> {
    drop_db(url).await?;
    crate::db::create_if_missing(url)
        .await
        .map_err(BenchError::new)?;
    crate::db::migrate(url).await.map_err(BenchError::new)?;
    connect(url).await
}

pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = pg_config(url)?
        .connect(NoTls)
        .await
        .map_err(BenchError::new)?;
    tokio::spawn(conn);
    Ok(client)
}

pub async fn count(db: &tokio_postgres::Client, sql: &str) -> Result<i64> {
    Ok(db
        .query_one(sql, &[])
        .await
        .map_err(BenchError::new)?
        .get(0))
}

/// `n` pending purchase payments of distinct users, each with a provider id, mirrored
/// into the fake as pending and settled there (succeeded, no notification sent).
/// `check_in_secs`: when the reconciler should first look at them.
pub async fn pending_purchases(
    db: &tokio_postgres::Client,
    fake: &Sandbox,
    n: usize,
    check_in_secs: f64,
) -> Result<Vec<String>> {
    let tariff = MONTH_TARIFF.parse::<TariffId>().expect("constant");
    let rows = db
        .query(
            include_str!("sql/pending_purchases.sql"),
            &[&tariff, &PRICE_MINOR, &check_in_secs, &(n as i32)],
        )
        .await
        .map_err(BenchError::new)?;
    let mut ids = Vec::with_capacity(n);
    for r in &rows {
        let id: PaymentId = r.get(0);
        let user: UserId = r.get(1);
        let pid: String = r.get(2);
        fake.insert_pending(
            &pid,
            json!({"value": PRICE, "currency": "RUB"}),
            json!({"payment_id": id.to_string(), "user_id": user.to_string()}),
        );
        fake.settle(&pid, crate::providers::sandbox::Outcome::Succeed);
        ids.push(pid);
    }
    Ok(ids)
}

/// The notification YooKassa would send for each payment, as the fake has it now.
pub fn notifications(fake: &Sandbox, ids: &[String]) -> Vec<bytes::Bytes> {
    ids.iter()
        .map(|pid| {
            let object = fake.payment(pid).unwrap_or(Value::Null);
            let body =
                json!({"type": "notification", "event": "payment.succeeded", "object": object});
            bytes::Bytes::from(serde_json::to_vec(&body).expect("json"))
        })
        .collect()
}

/// Checks shared by the scenarios that activate purchases: every payment succeeded
/// exactly once, one live subscription each, both events of each in the outbox.
pub async fn verify_activations(db: &tokio_postgres::Client, n: usize) -> Result<(bool, Value)> {
    let n = n as i64;
    let row = db
        .query_one(include_str!("sql/activations.sql"), &[])
        .await
        .map_err(BenchError::new)?;
    let [succeeded, active, linked, outbox, dup_events, activated]: [i64; 6] = [
        row.get("succeeded"),
        row.get("active"),
        row.get("linked"),
        row.get("outbox"),
        row.get("dup_events"),
        row.get("activated"),
    ];
    let ok = succeeded == n
        && active == n
        && linked == n
        && outbox == 2 * n
        && activated == n
        && dup_events == 0;
    Ok((
        ok,
        json!({"activations": active, "succeeded": succeeded, "outbox_rows": outbox, "duplicate_events": dup_events}),
    ))
}

// ----- the service under test -----

/// `billing serve` as a child process, in test mode against the fake.
pub struct Service {
    child: tokio::process::Child,
    pub url: String,
    pub log: PathBuf,
    /// Counts the child's database round trips when the run asked for it.
    pub round_trips: Option<round_trips::Counter>,
}

/// Which parts of `billing serve` a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// HTTP and workers.
    All,
    /// `--no-workers`.
    Api,
    /// `--workers-only`: no listener, so nothing to wait for at start-up.
    Workers,
}

pub struct Fake {
    pub sandbox: Arc<Sandbox>,
    pub api_url: String,
}

pub async fn fake() -> Result<Fake> {
    let sandbox = Sandbox::new(SHOP_ID, SECRET_KEY, true);
    let addr = sandbox
        .spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .map_err(BenchError::new)?;
    Ok(Fake {
        sandbox,
        api_url: format!("http://{addr}/sandbox/yookassa/v3"),
    })
}

impl Service {
    pub async fn start(
        opts: &Options,
        fake: &Fake,
        scenario: &str,
        role: Role,
        extra: &[(&str, &str)],
    ) -> Result<Service> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(BenchError::new)?;
            l.local_addr().map_err(BenchError::new)?.port()
        };
        let (database_url, round_trips) = if opts.count_round_trips {
            let counter = round_trips::Counter::start(&opts.database_url).await?;
            (counter.url.clone(), Some(counter))
        } else {
            (opts.database_url.clone(), None)
        };
        let log = std::env::temp_dir().join(format!("billing-bench-{scenario}-{port}.log"));
        let log_file = std::fs::File::create(&log).map_err(BenchError::new)?;
        let mut cmd = tokio::process::Command::new(&opts.service_exe);
        cmd.arg("serve");
        match role {
            Role::All => {}
            Role::Api => {
                cmd.arg("--no-workers");
            }
            Role::Workers => {
                cmd.arg("--workers-only");
            }
        }
        cmd.env_clear()
            .env("DATABASE_URL", &database_url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("AMQP_URL", NO_BROKER)
            .env("YOOKASSA_SHOP_ID", SHOP_ID)
            .env("YOOKASSA_SECRET_KEY", SECRET_KEY)
            .env("YOOKASSA_API_URL", &fake.api_url)
            .env("YOOKASSA_RETURN_URL", "https://cinema.example/return")
            .env("YOOKASSA_WEBHOOK_ALLOWED_IPS", "127.0.0.1/32")
            .env("JWT_SECRET_KEY", JWT_KEY)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        if let Some(size) = opts.pool_size {
            cmd.env("DATABASE_POOL_SIZE", size.to_string());
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| BenchError(format!("cannot start {}: {e}", opts.service_exe.display())))?;
        let url = format!("http://127.0.0.1:{port}");
        if role != Role::Workers {
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(BenchError(format!(
                        "the service exited at start-up ({status}); see {}",
                        log.display()
                    )));
                }
                if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
                    if r.status().is_success() {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    return Err(BenchError(format!(
                        "the service did not answer /healthz within 30 s; see {}",
                        log.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            fake.sandbox
                .set_webhook_url(&format!("{url}/webhooks/yookassa"));
        }
        Ok(Service {
            child,
            url,
            log,
            round_trips,
        })
    }

    /// Whether the child is still running (a workers-only child has no /healthz).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The child's peak resident set (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return f64::NAN;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

// ----- load -----

/// Latencies in microseconds, 1 µs .. 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

pub struct Load {
    pub hist: Histogram<u64>,
    pub elapsed: Duration,
    pub failures: usize,
}

impl Load {
    pub fn per_s(&self) -> f64 {
        self.hist.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// throughput_per_s, p50/p90/p99/max in ms.
    pub fn figures(&self, prefix: &str) -> Map<String, Value> {
        let ms = |q: f64| round2(self.hist.value_at_quantile(q) as f64 / 1000.0);
        let mut m = Map::new();
        m.insert(
            format!("{prefix}throughput_per_s"),
            json!(round2(self.per_s())),
        );
        m.insert(format!("{prefix}p50_ms"), json!(ms(0.50)));
        m.insert(format!("{prefix}p90_ms"), json!(ms(0.90)));
        m.insert(format!("{prefix}p99_ms"), json!(ms(0.99)));
        m.insert(
            format!("{prefix}max_ms"),
            json!(round2(self.hist.max() as f64 / 1000.0)),
        );
        m.insert(format!("{prefix}failures"), json!(self.failures));
        m
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs `op(0..n)` from `concurrency` workers pulling the next index; each call's
/// latency is recorded, `false` counts as a failure.
pub async fn drive<F, Fut>(n: usize, concurrency: usize, op: F) -> Load
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let next = next.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut failures = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                if !op(i).await {
                    failures += 1;
                }
                let us = t.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                let _ = hist.record(us);
            }
            (hist, failures)
        }));
    }
    let mut hist = histogram();
    let mut failures = 0;
    for t in tasks {
        if let Ok((h, f)) = t.await {
            let _ = hist.add(&h);
            failures += f;
        } else {
            failures += 1;
        }
    }
    Load {
        hist,
        elapsed: started.elapsed(),
        failures,
    }
}

/// An HTTP client for the load: one connection per worker, kept alive.
pub fn http_client(concurrency: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(BenchError::new)
}

/// Polls `sql` (a count) until it reaches `n` or `limit` passes; answers the time taken.
pub async fn wait_for_count(
    db: &tokio_postgres::Client,
    sql: &str,
    n: usize,
    started: Instant,
    limit: Duration,
) -> Result<Option<Duration>> {
    loop {
        if count(db, sql).await? >= n as i64 {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > limit {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `db_round_trips` and `db_round_trips_per_item` of a counting run.
pub fn round_trip_figures(m: &mut Map<String, Value>, trips: Option<u64>, items: usize) {
    if let Some(trips) = trips {
        m.insert("db_round_trips".into(), json!(trips));
        m.insert(
            "db_round_trips_per_item".into(),
            json!(round2(trips as f64 / items.max(1) as f64)),
        );
    }
}

pub fn base(scenario: &str, opts: &Options) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("scenario".into(), json!(scenario));
    m.insert("n".into(), json!(opts.n));
    m.insert("concurrency".into(), json!(opts.concurrency));
    m
}

//! `billing sim`: seeded random schedules of operations and faults against the
//! real service, checked against the money invariants (TigerBeetle's VOPR and
//! Jepsen are the models).
//!
//! One seed fixes the schedule: which viewer buys what where, what the viewer does
//! at the checkout, which notifications arrive (0–3 times, late, out of order, or
//! never), which provider faults, refunds, cancels, warps of time, `kill -9`s,
//! terminated PostgreSQL backends and broker cuts happen, in which order. The
//! service is real (`billing serve` children over a real PostgreSQL and RabbitMQ),
//! the providers are the sandbox fakes in this process. The timing of the real
//! processes is not the seed's to fix, so a replay repeats the schedule, not every
//! interleaving.
//!
//! After every step the checks that must always hold run ([`check::always`]);
//! after the last, every fault ends, the fakes turn honest, time passes until the
//! jobs have nothing left to do, and every invariant is checked
//! ([`check::settled`]).
//!
//! Time passes by warps: every timestamp in the database (and at the fake) moves
//! back, which to a service that decides by the database's `now()` is the clock
//! moving forward.

mod check;
mod ops;
mod proxy;
mod rng;
mod world;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

pub use check::Violation;
use ops::Schedule;
use world::World;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/billing_sim";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SimError(pub String);

impl SimError {
    pub fn new(e: impl std::fmt::Display) -> Self {
        SimError(e.to_string())
    }
}

pub type SimResult<T> = Result<T, SimError>;

#[derive(Debug, Clone)]
pub struct Options {
    pub seeds: Range<u64>,
    pub steps: usize,
    pub replicas: usize,
    /// Seeds run at once, each in its own world.
    pub parallel: usize,
    /// The service under test (`billing serve`): this binary, or an older build.
    pub service_exe: PathBuf,
    /// Databases are this URL with `_tpl` and `_<slot>` appended to its name.
    pub database_url: String,
    /// How long the world must hold still to count as settled (after a warp, and at
    /// the end). Every settling job must also have completed two runs meanwhile
    /// (read from each replica's `/metrics`), so an old build whose jobs ignore
    /// `JOB_*_INTERVAL`, or a loaded machine, is waited for rather than misjudged.
    pub quiet: Duration,
}

/// What one seed did and found.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub seed: u64,
    pub steps: usize,
    pub counts: BTreeMap<String, u64>,
    /// The step a violation was seen after (None: in the settled world).
    pub failed_at: Option<Option<usize>>,
    pub violations: Vec<Violation>,
    pub log: Vec<String>,
    pub wall: Duration,
    /// Did the world go quiet before the final checks?
    pub quiet: bool,
    /// The seed could not run to its end (the simulator's own failure, e.g. a lost
    /// connection of its own): neither a pass nor a violation.
    pub error: Option<String>,
}

impl SeedReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }
}

fn db_url(base: &str, suffix: &str) -> String {
    match base.rsplit_once('/') {
        Some((server, name)) => format!("{server}/{name}_{suffix}"),
        None => format!("{base}_{suffix}"),
    }
}

/// Runs one seed in a world made from `template`, in database slot `slot`.
pub async fn run_seed(
    seed: u64,
    opts: &Options,
    template: &str,
    slot: usize,
) -> SimResult<SeedReport> {
    let started = Instant::now();
    let mut world = World::start(
        &opts.service_exe,
        template,
        &db_url(&opts.database_url, &slot.to_string()),
        opts.replicas.max(1),
    )
    .await?;
    let mut schedule = Schedule::new(seed);
    let mut violations = Vec::new();
    let mut failed_at = None;
    for step in 0..opts.steps {
        schedule.step(&mut world, step, opts.quiet).await?;
        let mut found = std::mem::take(&mut schedule.found);
        found.extend(check::always(&world).await?);
        if !found.is_empty() {
            violations = found;
            failed_at = Some(Some(step));
            break;
        }
    }
    let mut quiet = true;
    if failed_at.is_none() {
        schedule.end_faults(&world);
        world.ensure_all_running().await?;
        let settle = opts.quiet.max(Duration::from_millis(1500));
        for hours in [0u64, 2, 26] {
            world.warp(Duration::from_secs(hours * 3600)).await?;
            quiet &= world.wait_quiet(settle).await?;
        }
        // Work still in flight (a relay publishing its last rows, a job mid-batch on
        // a loaded machine) can look like a violation: a violation must survive the
        // world going quiet again.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            violations = check::settled(&world).await?;
            if violations.is_empty() {
                break;
            }
            quiet &= world.wait_quiet(settle * 2).await?;
        }
        if !violations.is_empty() {
            failed_at = Some(None);
        }
    }
    // A violated world's database stays for inspection, renamed after its seed (a
    // later run's seed of the same number replaces it).
    let keep = (!violations.is_empty()).then_some(seed);
    if let Some(url) = world.stop(keep).await {
        eprintln!("seed {seed}: its database is kept for inspection: {url}");
    }
    Ok(SeedReport {
        seed,
        steps: opts.steps,
        counts: schedule.counts,
        failed_at,
        violations,
        log: schedule.log,
        wall: started.elapsed(),
        quiet,
        error: None,
    })
}

/// Runs every seed (in `parallel` worlds at once) and answers their reports.
pub async fn run(opts: &Options) -> SimResult<Vec<SeedReport>> {
    let template = db_url(&opts.database_url, "tpl");
    world::template(&opts.service_exe, &template).await?;
    let slots = fit_connections(opts, &template).await?;
    let free = std::sync::Arc::new(std::sync::Mutex::new((0..slots).collect::<Vec<_>>()));
    let reports: Vec<SimResult<SeedReport>> = futures::stream::iter(opts.seeds.clone())
        .map(|seed| {
            let free = free.clone();
            let template = template.clone();
            async move {
                let slot = free.lock().unwrap().pop().expect("a free slot");
                let started = Instant::now();
                let r = run_seed(seed, opts, &template, slot)
                    .await
                    .unwrap_or_else(|e| SeedReport {
                        seed,
                        steps: opts.steps,
                        counts: BTreeMap::new(),
                        failed_at: None,
                        violations: Vec::new(),
                        log: Vec::new(),
                        wall: started.elapsed(),
                        quiet: false,
                        error: Some(e.0),
                    });
                free.lock().unwrap().push(slot);
                let verdict = match (&r.error, r.violations.is_empty()) {
                    (Some(e), _) => format!("could not run: {e}"),
                    (None, true) => "ok".into(),
                    (None, false) => "VIOLATION".into(),
                };
                eprintln!("seed {seed}: {verdict} in {:.1} s", r.wall.as_secs_f64());
                Ok(r)
            }
        })
        .buffer_unordered(slots)
        .collect()
        .await;
    let _ = crate::bench::drop_db(&template).await;
    let mut out = Vec::new();
    for r in reports {
        out.push(r?);
    }
    out.sort_by_key(|r| r.seed);
    Ok(out)
}

/// How many worlds run at once: `--parallel`, unless PostgreSQL would run out of
/// connections (each replica opens up to its pool and the relay's; the simulator
/// holds three per world). Says so when it lowers it.
async fn fit_connections(opts: &Options, template: &str) -> SimResult<usize> {
    let wanted = opts.parallel.max(1);
    let per_world = opts.replicas.max(1) * (world::POOL_SIZE + 1) + 3;
    let (admin, _) = crate::bench::admin(template).await.map_err(SimError::new)?;
    let row = admin
        .query_one(
            "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int \
                    - (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend')",
            &[],
        )
        .await
        .map_err(world::pg)?;
    let free = row.get::<_, i32>(0).max(0) as usize;
    let fits = (free / per_world).max(1);
    if fits < wanted {
        eprintln!(
            "--parallel {wanted} lowered to {fits}: each world needs up to {per_world} PostgreSQL connections and {free} are free"
        );
    }
    Ok(wanted.min(fits))
}

/// The figures of a run, as `--json` writes them.
pub fn summary(reports: &[SeedReport], wall: Duration, opts: &Options) -> Value {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in reports {
        for (k, n) in &r.counts {
            *counts.entry(k.clone()).or_default() += n;
        }
    }
    let errors: Vec<Value> = reports
        .iter()
        .filter_map(|r| Some(json!({"seed": r.seed, "error": r.error.as_ref()?})))
        .collect();
    let failed: Vec<Value> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| {
            json!({
                "seed": r.seed,
                "step": r.failed_at.flatten(),
                "violations": r.violations.iter().map(|v| json!({"invariant": v.invariant, "detail": v.detail})).collect::<Vec<_>>(),
                "replay": replay_command(r.seed, opts),
            })
        })
        .collect();
    json!({
        "seeds": reports.len(),
        "steps_per_seed": opts.steps,
        "replicas": opts.replicas,
        "parallel": opts.parallel,
        "quiet_ms": opts.quiet.as_millis() as u64,
        "service": opts.service_exe.display().to_string(),
        "operations": counts,
        "wall_s": (wall.as_secs_f64() * 10.0).round() / 10.0,
        "seeds_per_hour": (reports.len() as f64 / wall.as_secs_f64() * 3600.0).round(),
        "not_quiet": reports.iter().filter(|r| !r.quiet).count(),
        "could_not_run": errors,
        "violations": failed,
    })
}

fn replay_command(seed: u64, opts: &Options) -> String {
    let mut cmd = format!(
        "billing sim --seed {seed} --steps {} --replicas {} --quiet-ms {}",
        opts.steps,
        opts.replicas,
        opts.quiet.as_millis()
    );
    if opts.service_exe != std::env::current_exe().unwrap_or_default() {
        cmd.push_str(&format!(" --service-binary {}", opts.service_exe.display()));
    }
    cmd
}

/// `billing sim`: exit 0 when every seed held every invariant, 1 on a violation,
/// 2 when the simulation could not run.
pub async fn cli(opts: Options, json_path: Option<PathBuf>) -> std::process::ExitCode {
    let started = Instant::now();
    let reports = match run(&opts).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sim: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let figures = summary(&reports, started.elapsed(), &opts);
    for r in reports.iter().filter(|r| !r.violations.is_empty()) {
        println!("== seed {} violated an invariant", r.seed);
        match r.failed_at {
            Some(Some(step)) => println!("after step {step}"),
            _ => println!("in the settled world, after {} steps", r.steps),
        }
        for v in &r.violations {
            println!("  [{}] {}", v.invariant, v.detail);
        }
        println!("operations:");
        for line in &r.log {
            println!("  {line}");
        }
        println!("replay: {}", replay_command(r.seed, &opts));
    }
    println!("{}", serde_json::to_string_pretty(&figures).expect("json"));
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&figures).expect("json");
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("cannot write {}: {e}", path.display());
            return std::process::ExitCode::from(2);
        }
    }
    if reports.iter().any(|r| !r.violations.is_empty()) {
        std::process::ExitCode::FAILURE
    } else if reports.iter().any(|r| r.error.is_some()) {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// `A..B` (B excluded) or `A..=B`.
pub fn parse_seeds(text: &str) -> Result<Range<u64>, String> {
    let bad = || format!("{text:?} is not a seed range like 1..20");
    if let Some((a, b)) = text.split_once("..=") {
        let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        return Ok(a..b + 1);
    }
    let (a, b) = text.split_once("..").ok_or_else(bad)?;
    Ok(a.parse().map_err(|_| bad())?..b.parse().map_err(|_| bad())?)
}

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use billing::config::Config;
use billing::domain::UserId;
use billing::server::{self, ServeOptions};

/// Billing service of an online cinema.
#[derive(Parser)]
#[command(name = "billing", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP API, webhooks and background workers.
    Serve {
        /// Only the HTTP API and webhooks (workers run elsewhere).
        #[arg(long, conflicts_with = "workers_only")]
        no_workers: bool,
        /// Only the background workers, no HTTP listener.
        #[arg(long)]
        workers_only: bool,
    },
    /// Apply migrations and exit.
    Migrate,
    /// Send fixture notifications to a running service, signed, and print each answer.
    Replay {
        /// Fixture files (fixtures/yookassa/*.json).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// The service's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
        /// Put this payment into the fixture: our payment id (resolved to the provider's
        /// id through DATABASE_URL) or a provider payment id.
        #[arg(long)]
        payment: Option<String>,
    },
    /// Print a JWT signed with JWT_SECRET_KEY, for trying the API.
    Token {
        #[arg(long)]
        user: UserId,
        #[arg(long)]
        superuser: bool,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// The load generator: runs a scenario against a child `billing serve`, verifies it.
    Bench {
        #[arg(value_enum)]
        scenario: billing::bench::Scenario,
        /// Items (notifications, renewals, requests); a list runs each: `1000,10000`.
        #[arg(long, value_delimiter = ',', default_value = "2000")]
        n: Vec<usize>,
        /// Requests in flight; a list runs each.
        #[arg(long, value_delimiter = ',', default_value = "64")]
        concurrency: Vec<usize>,
        /// DATABASE_POOL_SIZE of the service (and the ceiling); a list runs each.
        /// Unset: the service's default.
        #[arg(long, value_delimiter = ',')]
        pool_size: Vec<usize>,
        /// renew: processes sharing the work; above 1, each is `serve --workers-only`.
        #[arg(long, default_value_t = 1)]
        processes: usize,
        /// Count the service's round trips to PostgreSQL through a proxy (one more
        /// hop: the timings of such a run are not the scenario's figures).
        #[arg(long)]
        count_round_trips: bool,
        /// Write the figures as JSON (one object for one run; an array otherwise).
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Draw throughput and latency percentiles per scenario against N (SVG).
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
        /// Dropped and recreated by every scenario (never read from DATABASE_URL).
        #[arg(long, default_value = billing::bench::DEFAULT_DATABASE_URL)]
        database_url: String,
    },
    /// Seeded random schedules of operations and faults against the real service,
    /// checked against the money invariants; prints a violation's operations and
    /// the command that replays it.
    Sim {
        /// One seed (a replay).
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// A range of seeds, `A..B` (B excluded) or `A..=B`.
        #[arg(long, value_parser = billing::sim::parse_seeds, default_value = "1..21")]
        seeds: std::ops::Range<u64>,
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Service processes, each running every job.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Seeds run at once, each in its own world.
        #[arg(long, default_value_t = 2)]
        parallel: usize,
        /// The service under test; this binary by default.
        #[arg(long)]
        service_binary: Option<std::path::PathBuf>,
        /// How long the world must hold still to count as settled (ms): longer than
        /// the service's longest job interval (over 30000 for a build that ignores
        /// JOB_*_INTERVAL).
        #[arg(long, default_value_t = 1000)]
        quiet_ms: u64,
        /// Write the run's figures as JSON.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Databases are named after this one (`_tpl`, `_0`, `_1`…), dropped and recreated.
        #[arg(long, default_value = billing::sim::DEFAULT_DATABASE_URL)]
        database_url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    billing::telemetry::init_logs(config.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                no_workers,
                workers_only,
            } => {
                serve(
                    config,
                    ServeOptions {
                        api: !workers_only,
                        workers: !no_workers,
                    },
                )
                .await
            }
            Command::Migrate => {
                let result = async {
                    billing::db::create_if_missing(&config.database_url).await?;
                    billing::db::migrate(&config.database_url).await
                }
                .await;
                match result {
                    Ok(n) => {
                        println!("applied {n} migration(s)");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("migrate: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Replay {
                files,
                url,
                payment,
            } => match billing::replay::run(&config, &files, &url, payment.as_deref()).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("replay: {e}");
                    ExitCode::from(2)
                }
            },
            Command::Token {
                user,
                superuser,
                ttl,
            } => {
                let keys = billing::http::auth::Keys::new(config.jwt_secret.expose());
                println!("{}", keys.issue(user, superuser, ttl));
                ExitCode::SUCCESS
            }
            Command::Bench {
                scenario,
                n,
                concurrency,
                pool_size,
                processes,
                count_round_trips,
                json,
                plot,
                database_url,
            } => {
                billing::bench::cli(billing::bench::Matrix {
                    scenario,
                    n,
                    concurrency,
                    pool_size,
                    processes,
                    count_round_trips,
                    database_url,
                    json,
                    plot,
                })
                .await
            }
            Command::Sim {
                seed,
                seeds,
                steps,
                replicas,
                parallel,
                service_binary,
                quiet_ms,
                json,
                database_url,
            } => {
                let opts = billing::sim::Options {
                    seeds: seed.map(|s| s..s + 1).unwrap_or(seeds),
                    steps,
                    replicas,
                    parallel,
                    service_exe: service_binary.unwrap_or_else(|| {
                        std::env::current_exe().unwrap_or_else(|_| "billing".into())
                    }),
                    database_url,
                    quiet: std::time::Duration::from_millis(quiet_ms),
                };
                billing::sim::cli(opts, json).await
            }
        }
    })
}

async fn serve(config: Config, opts: ServeOptions) -> ExitCode {
    if config.mode == billing::config::Mode::Sandbox {
        tracing::warn!("SANDBOX MODE: the built-in fake provider stands in for YooKassa; it moves no real money");
    }
    let running = match server::start(config, opts).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("start-up failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = running.app.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        shutdown.cancel();
    });
    running.wait().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

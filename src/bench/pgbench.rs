//! The machine's own ceiling: `pgbench`'s built-in `tpcb-like` script (three
//! updates, a select, an insert, one commit per transaction) on a database of its
//! own, at the scenario's concurrency, for as many transactions as the scenario has
//! items. Whatever the service does per notification, PostgreSQL on this machine
//! commits no faster than this.

use serde_json::{json, Map, Value};

use super::{admin, pg_config, round2, BenchError, Options, Result};

/// Figures `pgbench_tps`, `pgbench_latency_ms`, `pgbench_scale`; or `pgbench:
/// "not on PATH"` when it is not installed.
pub async fn ceiling(opts: &Options) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    if which("pgbench").is_none() {
        m.insert("pgbench".into(), json!("not on PATH"));
        return Ok(m);
    }
    let cfg = pg_config(&opts.database_url)?;
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = cfg.get_user().unwrap_or("postgres").to_owned();
    let (client, name) = admin(&opts.database_url).await?;
    let db = format!("{name}_pgbench");
    let recreate = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
    client
        .batch_execute(&recreate)
        .await
        .map_err(BenchError::new)?;
    client
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await
        .map_err(BenchError::new)?;

    // One branch per client, as pgbench's documentation asks: fewer and the clients
    // queue on the branch rows, which measures lock waits instead of commits.
    let clients = opts.concurrency.max(1);
    let scale = clients;
    let threads = clients.min(2);
    let per_client = (opts.n / clients).max(1);
    let common = ["-h", &host, "-p", &port, "-U", &user];
    let init = run(&[
        &common[..],
        &["-i", "-q", "-I", "dtGvp", "-s", &scale.to_string(), &db],
    ]
    .concat())
    .await?;
    if !init.status.success() {
        return Err(BenchError(format!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        )));
    }
    let out = run(&[
        &common[..],
        &[
            "-n",
            "-b",
            "tpcb-like",
            "-c",
            &clients.to_string(),
            "-j",
            &threads.to_string(),
            "-t",
            &per_client.to_string(),
            &db,
        ],
    ]
    .concat())
    .await?;
    let _ = client.batch_execute(&recreate).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(BenchError(format!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let tps = figure(&text, "tps = ")
        .ok_or_else(|| BenchError(format!("no tps in pgbench's output: {text}")))?;
    m.insert("pgbench_tps".into(), json!(round2(tps)));
    if let Some(ms) = figure(&text, "latency average = ") {
        m.insert("pgbench_latency_ms".into(), json!(round2(ms)));
    }
    m.insert("pgbench_scale".into(), json!(scale));
    m.insert("pgbench_transactions".into(), json!(per_client * clients));
    Ok(m)
}

async fn run(args: &[&str]) -> Result<std::process::Output> {
    tokio::process::Command::new("pgbench")
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .await
        .map_err(BenchError::new)
}

/// The number after `label` on the first line that has it.
fn figure(text: &str, label: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = &l[l.find(label)? + label.len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::figure;

    #[test]
    fn reads_tps_and_latency_from_pgbench_output() {
        let out = "number of failed transactions: 0 (0.000%)\n\
                   latency average = 3.214 ms\n\
                   initial connection time = 12.345 ms\n\
                   tps = 2489.123456 (without initial connection time)\n";
        assert_eq!(figure(out, "tps = "), Some(2489.123456));
        assert_eq!(figure(out, "latency average = "), Some(3.214));
        assert_eq!(figure(out, "nothing = "), None);
    }
}

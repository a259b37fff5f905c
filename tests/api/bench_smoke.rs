//! Every bench scenario with a tiny N, so the load generator cannot rot. Asserts
//! only that each verifies its own result and reports its figures; never a timing.

use billing::bench::{self, Options, Scenario};

fn opts(scenario: Scenario) -> Options {
    Options {
        drop_after: true,
        ..Options::new(
            20,
            4,
            format!(
                "postgres://postgres@127.0.0.1:5432/billing_bench_smoke_{}_{}",
                scenario.name(),
                uuid::Uuid::new_v4().simple()
            ),
            env!("CARGO_BIN_EXE_billing").into(),
        )
    }
}

async fn check(scenario: Scenario, keys: &[&str]) {
    let opts = opts(scenario);
    let result = bench::run(scenario, &opts).await;
    let _ = bench::drop_db(&opts.database_url).await;
    let figures = result.expect("the scenario runs");
    assert_eq!(figures.len(), 1);
    let f = &figures[0];
    assert_eq!(f["verified"], true, "{}", bench::table(f));
    for k in keys {
        assert!(f.get(*k).is_some(), "missing key {k}: {f}");
    }
}

#[tokio::test]
async fn webhooks_bench_verifies_and_reports_its_figures() {
    check(
        Scenario::Webhooks,
        &[
            "scenario",
            "n",
            "concurrency",
            "throughput_per_s",
            "ceiling_per_s",
            "ratio",
            "p50_ms",
            "p99_ms",
            "max_rss_mib",
            "verified",
            "activations",
            "outbox_rows",
        ],
    )
    .await;
}

#[tokio::test]
async fn ceiling_bench_verifies() {
    check(
        Scenario::Ceiling,
        &["scenario", "n", "ceiling_per_s", "verified"],
    )
    .await;
}

#[tokio::test]
async fn reconcile_bench_verifies() {
    check(
        Scenario::Reconcile,
        &[
            "scenario",
            "n",
            "seconds",
            "charges",
            "max_rss_mib",
            "verified",
        ],
    )
    .await;
}

#[tokio::test]
async fn renew_bench_charges_each_subscription_once() {
    check(
        Scenario::Renew,
        &[
            "scenario",
            "n",
            "seconds",
            "charges",
            "max_rss_mib",
            "verified",
        ],
    )
    .await;
}

#[tokio::test]
async fn reads_bench_verifies() {
    check(
        Scenario::Reads,
        &[
            "scenario",
            "n",
            "concurrency",
            "throughput_per_s",
            "p50_ms",
            "p99_ms",
            "healthz_throughput_per_s",
            "tariffs_vs_healthz",
            "profile_vs_healthz",
            "max_rss_mib",
            "verified",
        ],
    )
    .await;
}

//! A few fixed seeds of `billing sim`, so the simulator cannot rot. Asserts that
//! every invariant held and that the schedules exercised what they should; never a
//! timing.

use billing::sim::{self, Options};

#[tokio::test]
async fn a_few_fixed_seeds_hold_every_invariant() {
    let opts = Options {
        seeds: 1..5,
        steps: 40,
        replicas: 2,
        parallel: 2,
        service_exe: env!("CARGO_BIN_EXE_billing").into(),
        database_url: format!(
            "postgres://postgres@127.0.0.1:5432/billing_sim_smoke_{}",
            uuid::Uuid::new_v4().simple()
        ),
        quiet: std::time::Duration::from_millis(1000),
    };
    let reports = sim::run(&opts).await.expect("the simulation runs");
    assert_eq!(reports.len(), 4);
    for r in &reports {
        assert!(
            r.passed(),
            "seed {}: {:#?}\n{}",
            r.seed,
            r.violations,
            r.log.join("\n")
        );
    }
    let done: u64 = reports
        .iter()
        .flat_map(|r| r.counts.iter())
        .filter(|(kind, _)| ["buy", "checkout", "warp"].contains(&kind.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert!(done > 0, "the schedules bought, paid and let time pass");
}

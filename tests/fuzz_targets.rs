//! The fuzz targets (`billing::fuzzing`, run by libFuzzer from `fuzz/`) on stable,
//! in seconds: the seed corpus, every input a fuzz run found (kept under
//! `tests/fuzz_regressions/<target>/`), and proptest's random bytes. A target that
//! stops compiling or starts failing its properties fails here.

use std::path::Path;

use billing::fuzzing::{CLOUDPAYMENTS_FIXTURES, TARGETS, YOOKASSA_FIXTURES};
use proptest::collection::vec;
use proptest::prelude::*;

/// The fixtures as the JSON targets read them raw (a first byte of 0), and edited
/// (each fixture chosen by the second byte, then a few edits).
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for fixture in YOOKASSA_FIXTURES.iter().chain(CLOUDPAYMENTS_FIXTURES) {
        let mut raw = vec![0u8];
        raw.extend_from_slice(fixture.as_bytes());
        seeds.push(raw);
    }
    for i in 0..16u8 {
        seeds.push(vec![1, i, 3, 2, 7, 1, 5, 9, i, 4, 2, 6, 1, 1, 0, 3]);
        seeds.push(vec![i; 40]);
    }
    seeds
}

#[test]
fn every_target_keeps_its_properties_on_the_seed_corpus() {
    for (name, run) in TARGETS {
        for seed in seeds() {
            run(&seed);
        }
        let found = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz_regressions")
            .join(name);
        if let Ok(dir) = std::fs::read_dir(&found) {
            for file in dir {
                let path = file.unwrap().path();
                run(&std::fs::read(&path).unwrap());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_target_keeps_its_properties_on_random_bytes(data in vec(any::<u8>(), 0..700)) {
        for (_, run) in TARGETS {
            run(&data);
        }
    }
}

/// Found by the `duration` target: `<n>d` whose seconds do not fit in 64 bits
/// panicked (debug) or wrapped around to a short duration (release), so
/// `RENEW_BEFORE=213503982334602d` renewed 4 days early, silently.
#[test]
fn a_duration_longer_than_a_century_is_a_config_error_not_a_wrapped_number() {
    for (var, text) in [
        ("RENEW_BEFORE", "213503982334602d"),
        ("RECONCILE_AFTER", "18446744073709551615m"),
        ("REFUSAL_GRACE", "36526d"),
        ("DUNNING_SCHEDULE", "1d,999999999999999h"),
    ] {
        let err = billing::config::Config::from_lookup(|name| (name == var).then(|| text.into()))
            .expect_err(text);
        assert_eq!(err.var, var, "{text}");
        assert!(err.to_string().contains("100 years"), "{err}");
    }
    let century = billing::config::Config::from_lookup(|name| {
        (name == "REFUSAL_GRACE").then(|| "36525d".into())
    })
    .expect("a century is the longest duration");
    assert_eq!(century.refusal_grace.as_secs(), 36_525 * 86_400);
}

/// Found by the `yookassa_answer` target: a payment or refund answer whose `id` is
/// empty (or anything YooKassa does not issue) was read as a payment, so a create
/// answered that way stored an id no later request may put in a URL, and the
/// payment could never be re-read. Such an answer is unreadable: the create's
/// outcome stays unknown and is looked up by our metadata, as for a cut-off body.
#[test]
fn a_yookassa_answer_without_a_usable_id_is_unreadable() {
    use billing::providers::yookassa::wire;
    use serde_json::json;
    for id in [
        json!(""),
        json!("../refunds"),
        json!("a?b"),
        json!("x".repeat(65)),
    ] {
        let payment = json!({
            "id": id, "status": "succeeded", "paid": true,
            "amount": {"value": "299.00", "currency": "RUB"},
        });
        assert!(wire::payment(&payment).is_err(), "payment id {id}");
        let refund = json!({
            "id": id, "payment_id": "2d9e5a6f-000f-5000-8000-1c36bb1c6a4d",
            "status": "succeeded", "amount": {"value": "1.00", "currency": "RUB"},
        });
        assert!(wire::refund(&refund).is_err(), "refund id {id}");
    }
}

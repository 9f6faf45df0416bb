//! The soak (`crates/harness/src/soak`): two replicas of the built binary, as the `deploy/`
//! ServiceAccount, run a licensed fleet on the simulated cloud with a CML test server per
//! instance, while labs come and go, Workers are made and broken by hand, and faults fire all at
//! once. `make test` runs it for 2 minutes, `make soak` for `SOAK_MINUTES` (default 10) on the
//! release build; `SOAK_SEED` replays a run's faults.

use ccm_harness::soak;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_under_combined_faults() {
    let report = soak::run(soak::Config::from_env(2.0)).await;
    println!("{}", report.text);
    assert!(
        report.violations.is_empty(),
        "{} violations:\n{}",
        report.violations.len(),
        report.text
    );
}

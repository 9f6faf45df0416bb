//! Writes the reference week of bookings as CSV to stdout:
//! `cargo run -p ccm-planning --example reference_week -- [SEED] > examples/schedules/reference-week.csv`
//! (seed 1 is the committed one).

fn main() {
    let seed = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SEED is a number"))
        .unwrap_or(1);
    print!(
        "{}",
        ccm_planning::schedule::to_csv(&ccm_planning::reference::week(seed))
    );
}

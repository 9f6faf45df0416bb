//! What the platform's placement alone costs: the hours labs hold workers when each lab is
//! placed first fit onto the workers holding labs (in the order they came up), a new worker
//! comes just in time for a lab that fits none, and a worker goes the moment its last lab ends.
//! Labs never move once placed, so a worker is paid for until its last lab ends, however empty
//! it is by then; the lower bound repacks every moment and pays none of that.
//!
//! A reference, not a bound: a fleet whose idle workers come first in the placement order
//! makes the platform pack labs differently (better or worse). When the replay's hours holding
//! labs equal these, the autoscaler added nothing to how labs share workers, and its whole
//! cost above them is idle and booting hours.

use ccm_core::planner::{Offer, Resources};
use jiff::Timestamp;

use crate::{bound::assigned_to, schedule::Booking};

/// The hours, per template (in the order of `offers`), that the labs assigned to it hold
/// workers under first-fit placement with each worker there just in time.
pub(crate) fn holding_hours(
    bookings: &[Booking],
    offers: &[Offer],
    assigned: &[Option<usize>],
) -> Vec<f64> {
    offers
        .iter()
        .enumerate()
        .map(|(k, offer)| template_hours(&assigned_to(k, bookings, assigned), &offer.capacity))
        .collect()
}

/// One worker holding labs.
struct Held<'a> {
    labs: Vec<&'a Booking>,
    used: Resources,
}

/// The hours one template's labs (in schedule order) hold workers of `capacity`.
fn template_hours(labs: &[&Booking], capacity: &Resources) -> f64 {
    let mut times: Vec<Timestamp> = labs.iter().flat_map(|b| [b.start, b.end]).collect();
    times.sort();
    times.dedup();
    let mut workers: Vec<Held> = Vec::new();
    let mut hours = 0.0;
    let mut last: Option<Timestamp> = None;
    for now in times {
        if let Some(before) = last {
            hours += workers.len() as f64 * now.duration_since(before).as_secs_f64() / 3600.0;
        }
        last = Some(now);
        end_labs(&mut workers, now);
        for lab in labs.iter().filter(|b| b.start == now) {
            place(&mut workers, lab, capacity);
        }
    }
    hours
}

/// Labs that ended leave their worker; a worker left empty goes.
fn end_labs(workers: &mut Vec<Held>, now: Timestamp) {
    for w in workers.iter_mut() {
        let (ended, left): (Vec<&Booking>, Vec<&Booking>) =
            w.labs.iter().partition(|b| b.end <= now);
        w.used = ended.iter().fold(w.used, |used, b| used.minus(&b.needs));
        w.labs = left;
    }
    workers.retain(|w| !w.labs.is_empty());
}

/// First fit onto the workers holding labs, else a new worker at the end of the order.
fn place<'a>(workers: &mut Vec<Held<'a>>, lab: &'a Booking, capacity: &Resources) {
    match workers
        .iter_mut()
        .find(|w| capacity.minus(&w.used).fits(&lab.needs))
    {
        Some(w) => {
            w.used = w.used.plus(&lab.needs);
            w.labs.push(lab);
        }
        None => workers.push(Held {
            labs: vec![lab],
            used: lab.needs,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccm_core::License;

    const T0: i64 = 1_800_000_000;

    /// A lab of `nodes` nodes from `start` to `end`, in minutes after T0.
    fn lab(id: &str, nodes: f64, start: i64, end: i64) -> Booking {
        let at = |m: i64| Timestamp::from_second(T0 + m * 60).unwrap_or(Timestamp::UNIX_EPOCH);
        Booking {
            id: id.into(),
            needs: Resources {
                nodes,
                ..Resources::default()
            },
            licenses: vec![License::Personal],
            start: at(start),
            end: at(end),
            known_at: at(start),
        }
    }

    fn hours(labs: &[Booking]) -> f64 {
        let capacity = Resources {
            nodes: 10.0,
            ..Resources::default()
        };
        template_hours(&labs.iter().collect::<Vec<_>>(), &capacity)
    }

    #[test]
    fn labs_hold_workers_until_the_last_one_on_each_ends() {
        let cases = [
            // (labs as (nodes, start, end) in minutes, hours)
            (vec![], 0.0),
            (vec![(4.0, 0, 60)], 1.0),
            // Two that fit share a worker: paid once.
            (vec![(4.0, 0, 60), (6.0, 0, 60)], 1.0),
            // Two that do not: two workers.
            (vec![(6.0, 0, 60), (6.0, 0, 60)], 2.0),
            // The worker stays for its longest lab, though nearly empty (repacking would not).
            (vec![(6.0, 0, 60), (4.0, 0, 180), (6.0, 0, 60)], 3.0 + 1.0),
            // A gap: the worker goes and a new one comes.
            (vec![(4.0, 0, 60), (4.0, 120, 180)], 2.0),
            // A lab ending as another starts frees its room first: one worker throughout.
            (vec![(6.0, 0, 60), (4.0, 0, 120), (6.0, 60, 120)], 2.0),
        ];
        for (list, want) in cases {
            let labs: Vec<Booking> = list
                .iter()
                .enumerate()
                .map(|(k, &(n, s, e))| lab(&format!("l{k}"), n, s, e))
                .collect();
            let got = hours(&labs);
            assert!((got - want).abs() < 1e-9, "{list:?}: {got} != {want}");
        }
    }

    #[test]
    fn placement_is_first_fit_in_schedule_order_onto_workers_in_the_order_they_came() {
        // a (6) opens w1, b (6) opens w2, and c (4) fits both: it goes to w1, the first to come
        // up, which then stays to minute 120 (2 h) while w2 goes at 60 (1 h). On w2, c would
        // have cost 2.5 h in all.
        let labs = [
            lab("a", 6.0, 0, 30),
            lab("b", 6.0, 0, 60),
            lab("c", 4.0, 0, 120),
        ];
        assert!((hours(&labs) - (2.0 + 1.0)).abs() < 1e-9);
    }
}

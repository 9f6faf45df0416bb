//! A clairvoyant lower bound on the instance-hours of any policy that serves every lab on time
//! with the same boot times. While labs are in their timeslots they must sit on Ready workers,
//! and no packing puts more on a worker than its capacity in any one dimension, so at every
//! moment at least `needed = max over dimensions of ceil(load / capacity)` workers of each
//! template are Ready: the bound integrates that exactly over the schedule.
//!
//! Boots add to it. Take each level k of `needed` (the times when `needed >= k`). The fleet
//! starts empty, so before the level is first reached a boot raised the Ready count from below
//! k to k; and across each later gap of length g between two stretches at that level, either
//! k workers stayed Ready the whole gap (g hours beyond `needed`) or the count fell below k and
//! a boot raised it again. A boot is billed for at least the shortest boot there is (launch or
//! start, license registration included), and each boot's completion raises the count across
//! one level only, so no boot is counted twice. Hence the bound adds, per level, the shortest
//! boot once and `min(g, shortest boot)` per gap. It is a proven bound, not an optimum: packing
//! losses, lead times and `minWorkers` only add to what a real policy uses. Each lab counts
//! against the template the controller's own assignment gives it.

use ccm_core::planner::{self, Offer, Resources, Wanted};

use crate::schedule::Booking;

/// The template each booking counts against (by index into `offers`), as the controller's
/// assignment gives it; `None` when no template holds it.
pub(crate) fn assignment(bookings: &[Booking], offers: &[Offer]) -> Vec<Option<usize>> {
    let wanted: Vec<Wanted> = bookings.iter().map(Booking::wanted).collect();
    let (shares, _) = planner::assign(&wanted, offers);
    bookings
        .iter()
        .map(|b| {
            offers.iter().position(|o| {
                shares
                    .get(&o.name)
                    .is_some_and(|items| items.iter().any(|i| i.id == b.id))
            })
        })
        .collect()
}

/// The bookings the assignment gives to template `k`, in schedule order.
pub(crate) fn assigned_to<'a>(
    k: usize,
    bookings: &'a [Booking],
    assigned: &[Option<usize>],
) -> Vec<&'a Booking> {
    bookings
        .iter()
        .zip(assigned)
        .filter(|(_, a)| **a == Some(k))
        .map(|(b, _)| b)
        .collect()
}

/// The bound, in instance-hours, over the whole schedule, per template (in the order of
/// `offers`); `shortest_boot[k]` is the shortest a worker of `offers[k]` takes from launch or
/// start to Ready.
pub(crate) fn instance_hours(
    bookings: &[Booking],
    offers: &[Offer],
    assigned: &[Option<usize>],
    shortest_boot: &[std::time::Duration],
) -> Vec<f64> {
    offers
        .iter()
        .enumerate()
        .map(|(k, offer)| {
            let labs = assigned_to(k, bookings, assigned);
            let steps = needed_steps(&labs, &offer.capacity);
            let boot = shortest_boot.get(k).copied().unwrap_or_default();
            ready_hours(&steps) + boot_hours(&steps, boot.as_secs_f64() / 3600.0)
        })
        .collect()
}

/// Workers the labs in their timeslots at `now` need at least, summed over templates.
pub(crate) fn needed_at(
    bookings: &[Booking],
    assigned: &[Option<usize>],
    offers: &[Offer],
    now: jiff::Timestamp,
) -> u32 {
    offers
        .iter()
        .enumerate()
        .map(|(k, offer)| {
            let load = bookings
                .iter()
                .zip(assigned)
                .filter(|(b, a)| **a == Some(k) && b.start <= now && now < b.end)
                .fold(Resources::default(), |sum, (b, _)| sum.plus(&b.needs));
            workers_needed(&load, &offer.capacity) as u32
        })
        .sum()
}

/// One stretch of constant load: its length in hours and the workers it needs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Step {
    hours: f64,
    needed: u32,
}

/// The workers one template's labs need, as steps between consecutive starts and ends (the
/// load is constant in each, so integrals over them are exact).
fn needed_steps(labs: &[&Booking], capacity: &Resources) -> Vec<Step> {
    let mut edges: Vec<jiff::Timestamp> = labs.iter().flat_map(|b| [b.start, b.end]).collect();
    edges.sort();
    edges.dedup();
    edges
        .windows(2)
        .map(|w| {
            let load = labs
                .iter()
                .filter(|b| b.start <= w[0] && b.end >= w[1])
                .fold(Resources::default(), |sum, b| sum.plus(&b.needs));
            Step {
                hours: w[1].duration_since(w[0]).as_secs_f64() / 3600.0,
                needed: workers_needed(&load, capacity) as u32,
            }
        })
        .collect()
}

/// Hours of Ready workers the steps need.
fn ready_hours(steps: &[Step]) -> f64 {
    steps.iter().map(|s| f64::from(s.needed) * s.hours).sum()
}

/// Hours of booting (or of staying Ready through a short gap) the steps force, per level: the
/// shortest boot before the level is first reached, and `min(gap, shortest boot)` per gap.
fn boot_hours(steps: &[Step], boot: f64) -> f64 {
    let top = steps.iter().map(|s| s.needed).max().unwrap_or(0);
    (1..=top)
        .map(|level| {
            let mut hours = 0.0;
            let mut gap: Option<f64> = None;
            for s in steps {
                match (s.needed >= level, gap) {
                    (true, None) => hours += boot,
                    (true, Some(g)) if g > 0.0 => hours += g.min(boot),
                    (true, Some(_)) | (false, _) => {}
                }
                gap = match (s.needed >= level, gap) {
                    (true, _) => Some(0.0),
                    (false, Some(g)) => Some(g + s.hours),
                    (false, None) => None,
                };
            }
            hours
        })
        .sum()
}

/// The fewest workers whose capacity covers `load` in every dimension.
fn workers_needed(load: &Resources, capacity: &Resources) -> f64 {
    [
        (load.cpu, capacity.cpu),
        (load.memory_gib, capacity.memory_gib),
        (load.storage_gib, capacity.storage_gib),
        (load.nodes, capacity.nodes),
    ]
    .iter()
    .filter(|(_, cap)| *cap > 0.0)
    .map(|(need, cap)| (need / cap - 1e-9).ceil().max(0.0))
    .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(list: &[(f64, u32)]) -> Vec<Step> {
        list.iter()
            .map(|&(hours, needed)| Step { hours, needed })
            .collect()
    }

    #[test]
    fn boots_add_the_shortest_boot_per_level_and_the_shorter_of_gap_and_boot_per_gap() {
        let boot = 0.2;
        let cases = [
            // (steps as (hours, needed), boot hours the bound adds)
            (vec![], 0.0),
            (vec![(2.0, 0)], 0.0),
            (vec![(2.0, 1)], 0.2),
            (vec![(1.0, 0), (2.0, 1), (1.0, 0)], 0.2),
            // A short gap: staying Ready through it is cheaper than a boot.
            (vec![(1.0, 1), (0.1, 0), (1.0, 1)], 0.2 + 0.1),
            // A long gap: a boot at least.
            (vec![(1.0, 1), (1.0, 0), (1.0, 1)], 0.2 + 0.2),
            // Two levels, each reached once.
            (vec![(1.0, 2)], 0.4),
            // The second level twice, with a long gap at that level only.
            (vec![(1.0, 2), (1.0, 1), (1.0, 2)], 0.2 + 0.2 + 0.2),
        ];
        for (list, want) in cases {
            let got = boot_hours(&steps(&list), boot);
            assert!((got - want).abs() < 1e-9, "{list:?}: {got} != {want}");
        }
    }

    #[test]
    fn ready_hours_integrate_the_needed_workers() {
        assert!((ready_hours(&steps(&[(1.5, 2), (0.5, 0), (1.0, 3)])) - 6.0).abs() < 1e-9);
    }
}

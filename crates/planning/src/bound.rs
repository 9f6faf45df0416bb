//! A clairvoyant lower bound on instance-hours: while labs are in their timeslots they must sit
//! on running workers, and no packing puts more on a worker than its capacity in any one
//! dimension. So at every moment at least `max over dimensions of ceil(load / capacity)`
//! workers of each template run, whatever the policy and however fast workers boot; the bound
//! is that number integrated exactly over the schedule. It is a proven bound, not an optimum:
//! boot times, packing losses and `minWorkers` only add to what any real policy uses. Each lab
//! counts against the template the controller's own assignment gives it.

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

/// The bound, in instance-hours, over the whole schedule.
pub fn instance_hours(bookings: &[Booking], offers: &[Offer]) -> f64 {
    let assigned = assignment(bookings, offers);
    offers
        .iter()
        .enumerate()
        .map(|(k, offer)| {
            let labs: Vec<&Booking> = bookings
                .iter()
                .zip(&assigned)
                .filter(|(_, a)| **a == Some(k))
                .map(|(b, _)| b)
                .collect();
            template_hours(&labs, &offer.capacity)
        })
        .sum()
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

/// The bound for one template's labs: between consecutive starts and ends the load is
/// constant, so the integral is exact.
fn template_hours(labs: &[&Booking], capacity: &Resources) -> f64 {
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
            let hours = w[1].duration_since(w[0]).as_secs_f64() / 3600.0;
            workers_needed(&load, capacity) * hours
        })
        .sum()
}

/// The fewest workers whose capacity covers `load` in every dimension.
fn workers_needed(load: &Resources, capacity: &Resources) -> f64 {
    [
        (load.cpu, capacity.cpu),
        (load.memory_gb, capacity.memory_gb),
        (load.storage_gb, capacity.storage_gb),
        (load.nodes, capacity.nodes),
    ]
    .iter()
    .filter(|(_, cap)| *cap > 0.0)
    .map(|(need, cap)| (need / cap - 1e-9).ceil().max(0.0))
    .fold(0.0, f64::max)
}

//! The reference week: a seeded generator of bookings shaped like a training platform's week.
//! Weekday classes start together at 09:00 and 13:30 and are booked days ahead; evenings bring
//! self-study labs booked minutes to an hour ahead; Wednesday and Friday afternoons hold exam
//! blocks; the weekend is quiet. Times are UTC, from Monday 2026-12-07.

use ccm_core::{License, planner::Resources, units};
use jiff::{SignedDuration, Timestamp};

use crate::schedule::Booking;

/// Monday 00:00 of the reference week.
const MONDAY: &str = "2026-12-07T00:00:00Z";

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// What a lab of `nodes` nodes takes, as the platform states it: a core and 2 GB per node, 2 GB
/// of disk per node plus 10.
fn needs(nodes: u32) -> Resources {
    let n = f64::from(nodes);
    Resources {
        cpu: n,
        memory_gib: units::gib_from_gb(2.0 * n),
        storage_gib: units::gib_from_gb(2.0 * n + 10.0),
        nodes: n,
    }
}

struct Generator {
    rng: fastrand::Rng,
    monday: Timestamp,
    bookings: Vec<Booking>,
}

impl Generator {
    fn at(&self, seconds: i64) -> Timestamp {
        self.monday
            .checked_add(SignedDuration::from_secs(seconds))
            .unwrap_or(self.monday)
    }

    /// One lab, known `notice` seconds before it starts.
    fn book(
        &mut self,
        id: String,
        nodes: u32,
        licenses: &[License],
        start: i64,
        hours: f64,
        notice: i64,
    ) {
        let end = start + (hours * HOUR as f64) as i64;
        self.bookings.push(Booking {
            id,
            needs: needs(nodes),
            licenses: licenses.to_vec(),
            start: self.at(start),
            end: self.at(end),
            known_at: self.at((start - notice).max(-7 * DAY)),
        });
    }

    /// A class: `students` labs of one topology at once, booked one to ten days ahead.
    fn class(&mut self, name: &str, start: i64, hours: f64) {
        let students = self.rng.u32(8..=16);
        let nodes = *self.rng.choice(&[6u32, 8, 10, 12]).unwrap_or(&8);
        let notice = self.rng.i64(DAY..=10 * DAY);
        for s in 0..students {
            // Students join over the first minutes, each with their own instance.
            let late = self.rng.i64(0..=5) * MINUTE;
            let id = format!("{name}-s{s:02}");
            self.book(
                id,
                nodes,
                &[License::Enterprise],
                start + late,
                hours,
                notice,
            );
        }
    }

    /// Self-study: labs one by one through a window, booked minutes to an hour ahead.
    fn self_study(&mut self, name: &str, from: i64, to: i64, count: u32) {
        for k in 0..count {
            let start = self.rng.i64(from..to) / (5 * MINUTE) * (5 * MINUTE);
            let nodes = self.rng.u32(3..=8);
            let hours = *self.rng.choice(&[1.0, 1.5, 2.0, 3.0]).unwrap_or(&2.0);
            let notice = self.rng.i64(5..=60) * MINUTE;
            let licenses = [License::Personal, License::Enterprise];
            self.book(
                format!("{name}-{k:02}"),
                nodes,
                &licenses,
                start,
                hours,
                notice,
            );
        }
    }

    /// An exam block: candidates with a big topology each, booked days ahead.
    fn exam(&mut self, name: &str, start: i64) {
        let candidates = self.rng.u32(12..=24);
        let notice = self.rng.i64(2 * DAY..=7 * DAY);
        for c in 0..candidates {
            let id = format!("{name}-c{c:02}");
            self.book(id, 20, &[License::Enterprise], start, 4.0, notice);
        }
    }
}

/// The reference week for `seed`, sorted by start then id.
pub fn week(seed: u64) -> Vec<Booking> {
    let monday = MONDAY.parse().unwrap_or(Timestamp::UNIX_EPOCH);
    let mut g = Generator {
        rng: fastrand::Rng::with_seed(seed),
        monday,
        bookings: Vec::new(),
    };
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    for (d, day) in DAYS.iter().enumerate() {
        let base = d as i64 * DAY;
        if d < 5 {
            for c in 0..g.rng.u32(2..=4) {
                g.class(&format!("{day}-am{c}"), base + 9 * HOUR, 3.5);
            }
            for c in 0..g.rng.u32(1..=3) {
                g.class(&format!("{day}-pm{c}"), base + 13 * HOUR + 30 * MINUTE, 3.5);
            }
            let evening = g.rng.u32(10..=25);
            g.self_study(
                &format!("{day}-eve"),
                base + 18 * HOUR,
                base + 22 * HOUR,
                evening,
            );
            if d == 2 || d == 4 {
                g.exam(&format!("{day}-exam"), base + 14 * HOUR);
            }
        } else {
            let quiet = g.rng.u32(3..=8);
            g.self_study(
                &format!("{day}-study"),
                base + 10 * HOUR,
                base + 20 * HOUR,
                quiet,
            );
        }
    }
    g.bookings
        .sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
    g.bookings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_week_is_seeded_and_shaped_like_a_training_platform() {
        let week = week(1);
        assert_eq!(week, super::week(1), "the same seed, the same week");
        assert_ne!(week, super::week(2));
        let hour_of = |b: &Booking| (b.start.as_second() % DAY) / HOUR;
        let at_nine = week
            .iter()
            .filter(|b| b.id.contains("-am") && hour_of(b) == 9)
            .count();
        assert!(
            at_nine >= 5 * 2 * 8,
            "classes start together at 09:00: {at_nine}"
        );
        let weekend = week
            .iter()
            .filter(|b| b.id.starts_with("sat") || b.id.starts_with("sun"));
        assert!(weekend.count() <= 16, "a quiet weekend");
        let notice = |b: &Booking| b.start.as_second() - b.known_at.as_second();
        assert!(
            week.iter().any(|b| notice(b) <= 10 * MINUTE),
            "some booked minutes ahead"
        );
        assert!(
            week.iter().any(|b| notice(b) >= 5 * DAY),
            "some booked days ahead"
        );
        assert!(week.iter().any(|b| b.id.contains("exam")));
    }
}

//! Turns at RunInstances. A launch that would wait seconds for its token must not wait inside a
//! reconcile: with a backlog of launches on EC2's default limits (2 per second), every reconcile
//! slot would be taken by a waiting launch, and booted workers would wait minutes for the
//! reconcile that marks them Running. Instead each launch takes a turn, paced as the
//! RunInstances bucket refills (burst, then its rate: the generic cell rate algorithm), and
//! comes back when its turn is due.

use crate::lock::Locked;
use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

/// A turn due this soon is waited for in place (longer waits at 2 launches a second would keep
/// reconcile slots busy all along).
pub const WAIT_IN_PLACE: Duration = Duration::from_millis(100);
/// A turn not taken this long after it was due is forgotten (its worker went away).
const FORGOTTEN_AFTER: Duration = Duration::from_secs(300);

pub struct LaunchTurns {
    /// Between two turns: one token's refill.
    interval: Duration,
    /// How far ahead of the pace a burst may run.
    tolerance: Duration,
    state: Mutex<State>,
}

struct State {
    /// When the next turn would be due with no burst left (the theoretical arrival time).
    paced: Instant,
    /// The turns handed out, by the launch's ClientToken.
    due: HashMap<String, Instant>,
    pruned: Instant,
}

impl LaunchTurns {
    /// Turns for a bucket of `burst` tokens refilled at `per_second`.
    pub fn new(burst: u32, per_second: u32) -> LaunchTurns {
        let interval = Duration::from_secs(1) / per_second.max(1);
        let now = Instant::now();
        LaunchTurns {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            state: Mutex::new(State {
                paced: now,
                due: HashMap::new(),
                pruned: now,
            }),
        }
    }

    /// Whether the launch with ClientToken `token` may go now (`None`), or how long until its
    /// turn. A launch keeps the turn it was given until it takes it.
    pub fn turn(&self, token: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut state = self.state.locked();
        if let Some(due) = state.due.get(token).copied() {
            if due <= now + WAIT_IN_PLACE {
                state.due.remove(token);
                return None;
            }
            return Some(due - now);
        }
        let paced = state.paced.max(now);
        let due = paced
            .checked_sub(self.tolerance)
            .map_or(now, |d| d.max(now));
        state.paced = paced + self.interval;
        if due <= now + WAIT_IN_PLACE {
            return None;
        }
        if now.duration_since(state.pruned) > FORGOTTEN_AFTER {
            state.due.retain(|_, d| *d + FORGOTTEN_AFTER > now);
            state.pruned = now;
        }
        state.due.insert(token.to_owned(), due);
        Some(due - now)
    }

    /// Launches waiting for their turn.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.state.locked().due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_then_turns_follow_the_refill_rate() {
        let turns = LaunchTurns::new(5, 2);
        let waits: Vec<Option<Duration>> = (0..8).map(|i| turns.turn(&format!("t{i}"))).collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            waits,
            vec![None, None, None, None, None, ms(500), ms(1000), ms(1500)],
            "5 at once, then 2 per second"
        );
        assert_eq!(turns.waiting(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_launch_keeps_its_turn_until_it_takes_it() {
        let turns = LaunchTurns::new(1, 1);
        assert_eq!(turns.turn("a"), None);
        assert_eq!(turns.turn("b"), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            turns.turn("b"),
            Some(Duration::from_millis(500)),
            "asking again does not lose the turn, nor take another"
        );
        assert_eq!(turns.turn("c"), Some(Duration::from_millis(1500)));
        tokio::time::advance(Duration::from_millis(450)).await;
        assert_eq!(turns.turn("b"), None, "due within the wait in place: go");
        assert_eq!(turns.waiting(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn turns_not_taken_are_forgotten() {
        let turns = LaunchTurns::new(1, 1);
        for i in 0..4 {
            turns.turn(&format!("gone{i}"));
        }
        assert_eq!(turns.waiting(), 3);
        tokio::time::advance(FORGOTTEN_AFTER * 2 + Duration::from_secs(10)).await;
        turns.turn("x");
        turns.turn("y");
        assert_eq!(turns.waiting(), 1, "only the new turn is kept");
    }
}

//! How long a worker takes to come up or go down, as a spread the replay draws from: a fixed
//! duration (`8m`) or a uniform range (`8m..12m`).

use std::{fmt, str::FromStr, time::Duration};

use ccm_core::GoDuration;

/// A duration, fixed or drawn uniformly from a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    /// The shortest.
    pub low: Duration,
    /// The longest (equal to `low` when fixed).
    pub high: Duration,
}

impl Spread {
    /// Always `d`.
    pub const fn fixed(d: Duration) -> Spread {
        Spread { low: d, high: d }
    }

    /// One draw.
    pub fn draw(&self, rng: &mut fastrand::Rng) -> Duration {
        let (low, high) = (self.low.as_millis() as u64, self.high.as_millis() as u64);
        Duration::from_millis(if high > low { rng.u64(low..=high) } else { low })
    }
}

impl FromStr for Spread {
    type Err = String;

    fn from_str(s: &str) -> Result<Spread, String> {
        let parse = |d: &str| {
            d.trim()
                .parse::<GoDuration>()
                .map(Duration::from)
                .map_err(|e| e.to_string())
        };
        let spread = match s.split_once("..") {
            Some((low, high)) => Spread {
                low: parse(low)?,
                high: parse(high)?,
            },
            None => Spread::fixed(parse(s)?),
        };
        if spread.high < spread.low {
            return Err(format!("{s:?}: the range ends before it starts"));
        }
        Ok(spread)
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", GoDuration::from(self.low))
        } else {
            write!(
                f,
                "{}..{}",
                GoDuration::from(self.low),
                GoDuration::from(self.high)
            )
        }
    }
}

/// The durations a worker's life is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durations {
    /// Launch to Ready (EC2 running, CML ready).
    pub launch: Spread,
    /// Start of a stopped worker to Ready.
    pub start: Spread,
    /// License registration, after CML is ready (zero without licensing).
    pub license: Spread,
    /// Stop request to stopped.
    pub stop: Spread,
    /// Terminate request to gone.
    pub terminate: Spread,
}

impl Durations {
    /// The shortest any boot to Ready can take: a launch or a start, and the license
    /// registration when the template is licensed.
    pub fn shortest_boot(&self, licensed: bool) -> Duration {
        let license = if licensed {
            self.license.low
        } else {
            Duration::ZERO
        };
        self.launch.low.min(self.start.low) + license
    }
}

impl Default for Durations {
    /// What a CML 2.9 metal worker takes on EC2, roughly: 10 minutes to boot, 4 to start again.
    fn default() -> Durations {
        Durations {
            launch: Spread {
                low: Duration::from_secs(8 * 60),
                high: Duration::from_secs(12 * 60),
            },
            start: Spread {
                low: Duration::from_secs(3 * 60),
                high: Duration::from_secs(5 * 60),
            },
            license: Spread::fixed(Duration::from_secs(60)),
            stop: Spread::fixed(Duration::from_secs(2 * 60)),
            terminate: Spread::fixed(Duration::from_secs(2 * 60)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_parse_draw_within_bounds_and_print_back() {
        let s: Spread = "8m..12m".parse().expect("range");
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1000 {
            let d = s.draw(&mut rng);
            assert!(d >= s.low && d <= s.high, "{d:?}");
        }
        assert_eq!(s.to_string(), "8m..12m");
        let fixed: Spread = "90s".parse().expect("fixed");
        assert_eq!(fixed.draw(&mut rng), Duration::from_secs(90));
        assert!("12m..8m".parse::<Spread>().is_err());
        assert!("soon".parse::<Spread>().is_err());
    }
}

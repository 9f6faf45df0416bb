//! `scaleUpLeadTime`: how far ahead a template provides for demand, fixed or learnt from its
//! workers' measured launches (`auto`), and the quantiles of those measurements.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::GoDuration;

/// Boots of each kind a template keeps measured.
pub const KEPT: usize = 20;

/// Launches measured before `auto` trusts them.
pub const TRUSTED_AFTER: u32 = 3;

/// The least `auto` adds to a measured p95: a boot somewhat slower than the last ones (their
/// p95 is close to the slowest of them), and the round that notices the demand.
pub const MIN_MARGIN: Duration = Duration::from_secs(2 * 60);

/// The most `auto` adds to a measured p95.
pub const MAX_MARGIN: Duration = Duration::from_secs(5 * 60);

/// `scaleUpLeadTime`: fixed, or learnt from the template's boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeadTime {
    /// The p95 of measured launches plus a margin.
    Auto,
    /// This long.
    Fixed(GoDuration),
}

impl Serialize for LeadTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LeadTime::Auto => s.serialize_str("auto"),
            LeadTime::Fixed(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for LeadTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "auto" {
            return Ok(LeadTime::Auto);
        }
        text.parse::<GoDuration>()
            .map(LeadTime::Fixed)
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for LeadTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LeadTime".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let duration = crate::DURATION_PATTERN
            .trim_start_matches('^')
            .trim_end_matches('$');
        schemars::json_schema!({
            "type": "string",
            "pattern": format!("^(auto|{duration})$"),
        })
    }
}

/// The median and the 95th percentile of some measured boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    /// Median, in seconds.
    pub p50_seconds: u64,
    /// 95th percentile, in seconds.
    pub p95_seconds: u64,
    /// How many boots they are computed from.
    pub count: u32,
}

/// The quantiles of `seconds` (nearest rank); `None` when there are none.
pub fn measure(seconds: impl IntoIterator<Item = u64>) -> Option<Measured> {
    let mut seconds: Vec<u64> = seconds.into_iter().collect();
    seconds.sort_unstable();
    let at =
        |q: f64| seconds[((seconds.len() as f64 * q).ceil() as usize).clamp(1, seconds.len()) - 1];
    (!seconds.is_empty()).then(|| Measured {
        p50_seconds: at(0.50),
        p95_seconds: at(0.95),
        count: seconds.len() as u32,
    })
}

impl Measured {
    /// How far ahead `auto` provides with these boots, once [`TRUSTED_AFTER`] are measured: the
    /// p95 plus their spread (p95 - p50: a boot slower than those seen is likelier the wider
    /// they spread), at least [`MIN_MARGIN`] and at most [`MAX_MARGIN`].
    pub fn ahead(&self) -> Option<Duration> {
        let spread = Duration::from_secs(self.p95_seconds.saturating_sub(self.p50_seconds));
        (self.count >= TRUSTED_AFTER)
            .then(|| Duration::from_secs(self.p95_seconds) + spread.clamp(MIN_MARGIN, MAX_MARGIN))
    }
}

/// The lead time in use: the template's own (`setting`), with `auto` what its measured
/// `launches` call for ([`Measured::ahead`]); else the controller's `flag`.
pub fn in_use(setting: Option<LeadTime>, launches: Option<Measured>, flag: Duration) -> Duration {
    match setting {
        Some(LeadTime::Fixed(d)) => d.as_std(),
        Some(LeadTime::Auto) => launches.and_then(|m| m.ahead()).unwrap_or(flag),
        None => flag,
    }
}

/// How far ahead a stopped worker is started for demand: with `auto`, what the template's
/// measured `starts` call for ([`Measured::ahead`]), never more than `lead` (the lead time in
/// use); otherwise, or before starts are measured, `lead` itself.
pub fn start_in_use(
    setting: Option<LeadTime>,
    starts: Option<Measured>,
    lead: Duration,
) -> Duration {
    match (setting, starts.and_then(|m| m.ahead())) {
        (Some(LeadTime::Auto), Some(ahead)) => ahead.min(lead),
        _ => lead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        assert_eq!(measure([]), None);
        let m = measure([300, 100, 200]).expect("three");
        assert_eq!((m.p50_seconds, m.p95_seconds, m.count), (200, 300, 3));
        let m = measure(1..=20).expect("twenty");
        assert_eq!((m.p50_seconds, m.p95_seconds), (10, 19));
    }

    #[test]
    fn auto_starts_stopped_workers_a_measured_start_ahead_never_more_than_the_lead_time() {
        let lead = Duration::from_secs(17 * 60);
        let starts = measure([180, 240, 300]);
        let auto = Some(LeadTime::Auto);
        assert_eq!(
            start_in_use(auto, starts, lead),
            Duration::from_secs(300 + 120),
            "p95 300 s plus the least margin (its spread is 60 s)"
        );
        assert_eq!(
            start_in_use(auto, measure([180, 240]), lead),
            lead,
            "two starts are not enough"
        );
        assert_eq!(start_in_use(auto, None, lead), lead);
        assert_eq!(
            start_in_use(auto, measure([1500, 1500, 1500]), lead),
            lead,
            "starts slower than launches: the lead time"
        );
        let fixed = Some(LeadTime::Fixed(crate::GoDuration::from_mins(20)));
        assert_eq!(start_in_use(fixed, starts, lead), lead);
        assert_eq!(start_in_use(None, starts, lead), lead);
    }

    #[test]
    fn auto_trusts_three_launches_and_adds_the_margin() {
        let flag = Duration::from_secs(35 * 60);
        let two = measure([600, 700]);
        assert_eq!(in_use(Some(LeadTime::Auto), two, flag), flag);
        let three = measure([600, 700, 650]);
        assert_eq!(
            in_use(Some(LeadTime::Auto), three, flag),
            Duration::from_secs(700 + 120),
            "a spread of 50 s: the least margin"
        );
        let fixed = LeadTime::Fixed(GoDuration::from_mins(20));
        assert_eq!(in_use(Some(fixed), three, flag), Duration::from_secs(1200));
        assert_eq!(in_use(None, three, flag), flag);
    }

    #[test]
    fn the_margin_is_the_spread_of_the_boots_between_one_and_five_minutes() {
        // Table: p50, p95 -> what auto adds to the p95.
        for (p50, p95, margin) in [
            (600, 600, MIN_MARGIN),
            (600, 650, MIN_MARGIN),
            (600, 780, Duration::from_secs(180)),
            (600, 900, MAX_MARGIN),
            (300, 1500, MAX_MARGIN),
        ] {
            let m = Measured {
                p50_seconds: p50,
                p95_seconds: p95,
                count: 20,
            };
            assert_eq!(
                m.ahead(),
                Some(Duration::from_secs(p95) + margin),
                "{p50} {p95}"
            );
        }
        let few = Measured {
            p50_seconds: 600,
            p95_seconds: 700,
            count: TRUSTED_AFTER - 1,
        };
        assert_eq!(few.ahead(), None);
    }

    #[test]
    fn reads_auto_or_a_duration() {
        let auto: LeadTime = serde_json::from_str("\"auto\"").expect("auto");
        assert_eq!(auto, LeadTime::Auto);
        let fixed: LeadTime = serde_json::from_str("\"20m\"").expect("20m");
        assert_eq!(fixed, LeadTime::Fixed(GoDuration::from_mins(20)));
        assert!(serde_json::from_str::<LeadTime>("\"soon\"").is_err());
        assert_eq!(serde_json::to_string(&auto).expect("json"), "\"auto\"");
    }
}

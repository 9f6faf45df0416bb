//! A template's scaling schedule: windows of the week in which it keeps a different
//! `minWorkers` or `warmWorkers`, e.g. a warm worker on weekday evenings only, when labs are
//! booked minutes ahead, instead of one around the clock. Pure: the time is an input.
//!
//! A window opens on each of its days at `from` and closes at `to`, in the schedule's time
//! zone (daylight saving included); a `to` at or before `from` closes the next day. While
//! windows are open, each level is the highest any of them sets (a window that sets neither
//! level changes nothing); otherwise the spec's levels hold. A window is provided for a lead
//! time ahead, as demand is, so its workers are up when it opens.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use jiff::{
    Timestamp, ToSpan,
    civil::{Date, Time, Weekday},
    tz::TimeZone,
};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The levels a schedule changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Levels {
    /// `minWorkers`.
    pub min_workers: u32,
    /// `warmWorkers`.
    pub warm_workers: u32,
}

impl Levels {
    /// Each level the higher of the two.
    pub fn max(self, other: Levels) -> Levels {
        Levels {
            min_workers: self.min_workers.max(other.min_workers),
            warm_workers: self.warm_workers.max(other.warm_workers),
        }
    }
}

/// `spec.scaling.schedule`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingSchedule {
    /// IANA time zone of the windows' times, e.g. `Europe/Berlin`.
    #[serde(default = "utc")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
    )]
    pub time_zone: String,

    /// The windows; where several are open at once, each level is the highest they set.
    #[schemars(length(min = 1, max = 32))]
    pub windows: Vec<ScalingWindow>,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// One window of the week.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingWindow {
    /// The days it opens on.
    #[schemars(length(min = 1, max = 7))]
    pub days: Vec<Day>,

    /// When it opens (`HH:MM`).
    pub from: ClockTime,

    /// When it closes (`HH:MM`); at or before `from`: the next day.
    pub to: ClockTime,

    /// `minWorkers` while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub min_workers: Option<u32>,

    /// `warmWorkers` while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub warm_workers: Option<u32>,
}

/// A day of the week.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    fn weekday(self) -> Weekday {
        match self {
            Day::Mon => Weekday::Monday,
            Day::Tue => Weekday::Tuesday,
            Day::Wed => Weekday::Wednesday,
            Day::Thu => Weekday::Thursday,
            Day::Fri => Weekday::Friday,
            Day::Sat => Weekday::Saturday,
            Day::Sun => Weekday::Sunday,
        }
    }
}

/// A time of day to the minute, written `HH:MM` (00:00 to 23:59).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockTime(Time);

/// The pattern the API server enforces for [`ClockTime`].
pub const CLOCK_TIME_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$";

/// Why a time of day was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time of day {0:?}: expected HH:MM from 00:00 to 23:59")]
pub struct ParseClockTimeError(String);

impl FromStr for ClockTime {
    type Err = ParseClockTimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refused = || ParseClockTimeError(s.to_owned());
        let (h, m) = s.split_once(':').ok_or_else(refused)?;
        let two_digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(h) || !two_digits(m) {
            return Err(refused());
        }
        let (h, m) = (
            h.parse().map_err(|_| refused())?,
            m.parse().map_err(|_| refused())?,
        );
        Time::new(h, m, 0, 0).map(ClockTime).map_err(|_| refused())
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0.hour(), self.0.minute())
    }
}

impl Serialize for ClockTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for ClockTime {
    fn schema_name() -> Cow<'static, str> {
        "ClockTime".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": CLOCK_TIME_PATTERN })
    }
}

/// Why a schedule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?} (an IANA name such as Europe/Berlin, or UTC)")]
pub struct UnknownTimeZone(String);

/// A schedule ready to answer: its time zone looked up.
#[derive(Clone, Debug)]
pub struct Resolved {
    zone: TimeZone,
    windows: Vec<ScalingWindow>,
}

/// Longest look-ahead considered: a week covers every window once.
const WEEK: Duration = Duration::from_secs(7 * 86_400);

impl ScalingSchedule {
    /// Looks up the time zone (from the tz database built into the binary).
    pub fn resolve(&self) -> Result<Resolved, UnknownTimeZone> {
        let zone =
            TimeZone::get(&self.time_zone).map_err(|_| UnknownTimeZone(self.time_zone.clone()))?;
        Ok(Resolved {
            zone,
            windows: self.windows.clone(),
        })
    }

    /// The highest level of each kind any window sets, or `base`'s when higher: what to keep
    /// when the schedule cannot be read (more workers than needed, never too few).
    pub fn highest(&self, base: Levels) -> Levels {
        self.windows
            .iter()
            .fold(base, |l, w| l.max(w.levels(Levels::default())))
    }
}

impl ScalingWindow {
    /// The levels it sets, `base` where it sets none.
    fn levels(&self, base: Levels) -> Levels {
        Levels {
            min_workers: self.min_workers.unwrap_or(base.min_workers),
            warm_workers: self.warm_workers.unwrap_or(base.warm_workers),
        }
    }

    /// When it is open if it opens on `date`: `None` when it does not open that day.
    fn opening(&self, date: Date, zone: &TimeZone) -> Option<(Timestamp, Timestamp)> {
        if !self.days.iter().any(|d| d.weekday() == date.weekday()) {
            return None;
        }
        let close_date = if self.to.0 <= self.from.0 {
            date.tomorrow().ok()?
        } else {
            date
        };
        let open = date.to_datetime(self.from.0).to_zoned(zone.clone()).ok()?;
        let close = close_date
            .to_datetime(self.to.0)
            .to_zoned(zone.clone())
            .ok()?;
        Some((open.timestamp(), close.timestamp()))
    }
}

impl Resolved {
    /// The levels at `at`: the highest of the windows open then, `base` with none open.
    pub fn levels_at(&self, base: Levels, at: Timestamp) -> Levels {
        let today = at.to_zoned(self.zone.clone()).date();
        let open: Vec<&ScalingWindow> = self
            .windows
            .iter()
            .filter(|w| {
                // A window open at `at` opened today or yesterday (none lasts over a day).
                [today.yesterday().ok(), Some(today)]
                    .into_iter()
                    .flatten()
                    .filter_map(|d| w.opening(d, &self.zone))
                    .any(|(open, close)| open <= at && at < close)
            })
            .collect();
        match open.split_first() {
            None => base,
            Some((first, rest)) => rest
                .iter()
                .fold(first.levels(base), |l, w| l.max(w.levels(base))),
        }
    }

    /// The highest levels from `now` to `now + ahead` (at most a week): the levels only change
    /// where a window opens or closes, so it is enough to look at `now` and at each of those.
    pub fn levels_within(&self, base: Levels, now: Timestamp, ahead: Duration) -> Levels {
        let until = now.checked_add(ahead.min(WEEK)).unwrap_or(Timestamp::MAX);
        let first = now.to_zoned(self.zone.clone()).date();
        let last = until.to_zoned(self.zone.clone()).date();
        let mut levels = self.levels_at(base, now);
        let mut date = first.yesterday().unwrap_or(first);
        while date <= last {
            for (open, close) in self
                .windows
                .iter()
                .filter_map(|w| w.opening(date, &self.zone))
            {
                for edge in [open, close] {
                    if now < edge && edge <= until {
                        levels = levels.max(self.levels_at(base, edge));
                    }
                }
            }
            let Ok(next) = date.checked_add(1.day()) else {
                break;
            };
            date = next;
        }
        levels
    }
}

#[cfg(test)]
mod tests;

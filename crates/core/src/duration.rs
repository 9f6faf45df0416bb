//! A Go-style duration (`30m`, `4h`, `1h30m`) as the CRDs spell timeouts and grace periods.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The pattern the API server enforces; kept to whole numbers of `ms`, `s`, `m` and `h` so the
/// value reads the same to people, to the API server and to this parser.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,9}(ms|s|m|h))+$";

/// A non-negative duration written as one or more `<number><unit>` pairs, units `ms`, `s`, `m`, `h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(Duration);

impl GoDuration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// A duration of `mins` minutes.
    pub const fn from_mins(mins: u64) -> Self {
        Self(Duration::from_secs(mins * 60))
    }

    /// A duration of `hours` hours.
    pub const fn from_hours(hours: u64) -> Self {
        Self(Duration::from_secs(hours * 3600))
    }

    /// As a standard library `Duration`.
    pub const fn as_std(self) -> Duration {
        self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected one or more <number><unit> pairs with unit ms, s, m or h (e.g. 30m, 1h30m)"
)]
pub struct ParseDurationError {
    input: String,
}

impl FromStr for GoDuration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurationError {
            input: s.to_owned(),
        };
        if s.is_empty() {
            return Err(err());
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 9 {
                return Err(err());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let (unit, len) = if rest.starts_with("ms") {
                (Duration::from_millis(1), 2)
            } else if rest.starts_with('s') {
                (Duration::from_secs(1), 1)
            } else if rest.starts_with('m') {
                (Duration::from_secs(60), 1)
            } else if rest.starts_with('h') {
                (Duration::from_secs(3600), 1)
            } else {
                return Err(err());
            };
            rest = &rest[len..];
            let part = unit.checked_mul(u32::try_from(value).map_err(|_| err())?);
            total = part.and_then(|p| total.checked_add(p)).ok_or_else(err)?;
        }
        Ok(Self(total))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis == 0 {
            return f.write_str("0s");
        }
        let (h, rem) = (millis / 3_600_000, millis % 3_600_000);
        let (m, rem) = (rem / 60_000, rem % 60_000);
        let (s, ms) = (rem / 1000, rem % 1000);
        for (value, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if value > 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonical_forms() {
        for (text, secs) in [
            ("30m", 1800),
            ("4h", 14400),
            ("1h30m", 5400),
            ("45s", 45),
            ("0s", 0),
        ] {
            let d: GoDuration = text.parse().unwrap();
            assert_eq!(d.as_std(), Duration::from_secs(secs), "{text}");
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(
            "1500ms".parse::<GoDuration>().unwrap().to_string(),
            "1s500ms"
        );
        assert_eq!("90m".parse::<GoDuration>().unwrap().to_string(), "1h30m");
        assert_eq!("90s".parse::<GoDuration>().unwrap().to_string(), "1m30s");
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            "",
            "4",
            "h",
            "4 hours",
            "-5m",
            "1.5h",
            "5d",
            "10mm",
            "1234567890s",
        ] {
            assert!(
                bad.parse::<GoDuration>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn pattern_agrees_with_parser_on_samples() {
        // The API server enforces the pattern; the parser must accept all it lets through.
        let accepted = ["1ms", "59s", "10m", "3h", "1h1m1s1ms", "999999999h"];
        for text in accepted {
            assert!(text.parse::<GoDuration>().is_ok(), "{text}");
        }
    }
}

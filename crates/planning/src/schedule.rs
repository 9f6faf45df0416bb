//! A schedule of lab bookings, from CSV or JSON: what each lab needs, which licenses may hold
//! it, its timeslot, and when the booking became known. A malformed line is refused with its
//! line and field named. `memory_gb` and `storage_gb` are decimal GB, as in the Control Plane
//! API's lab definitions; a booking holds them in GiB, the planner's unit.

use ccm_core::{
    License,
    planner::{DemandItem, Resources, Wanted},
    units,
};
use jiff::Timestamp;
use serde::Deserialize;

/// One booked lab.
#[derive(Clone, Debug, PartialEq)]
pub struct Booking {
    /// The lab instance's id.
    pub id: String,
    /// What it takes of a worker (memory and storage in GiB).
    pub needs: Resources,
    /// The licenses that may hold it.
    pub licenses: Vec<License>,
    /// When its timeslot starts: it should be on a ready worker by then.
    pub start: Timestamp,
    /// When it ends and leaves its worker.
    pub end: Timestamp,
    /// When the platform learned of it (demand from then on).
    pub known_at: Timestamp,
}

impl Booking {
    /// The booking as unplaced demand, with the licenses that may hold it.
    pub fn wanted(&self) -> Wanted {
        Wanted {
            item: DemandItem {
                id: self.id.clone(),
                timeslot_start: self.start,
                needs: self.needs,
            },
            affinity: self.licenses.clone(),
        }
    }
}

/// Why a schedule was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("line {line}, field {field}: {message}")]
pub struct ScheduleError {
    /// 1-based line (CSV) or 1-based entry (JSON).
    pub line: usize,
    /// The field at fault.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ScheduleError {
    fn new(line: usize, field: &str, message: impl Into<String>) -> ScheduleError {
        ScheduleError {
            line,
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// The CSV columns, in any order after a header line naming them.
const COLUMNS: [&str; 9] = [
    "id",
    "start",
    "end",
    "known_at",
    "nodes",
    "cpu_cores",
    "memory_gb",
    "storage_gb",
    "licenses",
];

/// One booking as written, before checking.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: String,
    start: String,
    end: String,
    known_at: String,
    nodes: f64,
    cpu_cores: f64,
    memory_gb: f64,
    storage_gb: f64,
    licenses: Vec<String>,
}

/// Parses a schedule: JSON when it starts with `[`, CSV otherwise.
pub fn parse(text: &str) -> Result<Vec<Booking>, ScheduleError> {
    if text.trim_start().starts_with('[') {
        parse_json(text)
    } else {
        parse_csv(text)
    }
}

fn parse_json(text: &str) -> Result<Vec<Booking>, ScheduleError> {
    let entries: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| ScheduleError::new(e.line(), "(json)", e.to_string()))?;
    entries
        .into_iter()
        .enumerate()
        .map(|(k, v)| {
            let raw: Raw = serde_json::from_value(v).map_err(|e| {
                ScheduleError::new(k + 1, &json_field(&e.to_string()), e.to_string())
            })?;
            check(k + 1, raw)
        })
        .collect()
}

/// The field a serde message names (`missing field `x``, `unknown field `x``), if any.
fn json_field(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .map_or_else(|| "(entry)".to_owned(), str::to_owned)
}

fn parse_csv(text: &str) -> Result<Vec<Booking>, ScheduleError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(k, l)| (k + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (header_line, header) = lines
        .next()
        .ok_or_else(|| ScheduleError::new(1, "(header)", "empty schedule"))?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let column = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| ScheduleError::new(header_line, name, "missing from the header"))
    };
    let at: Vec<usize> = COLUMNS
        .iter()
        .map(|c| column(c))
        .collect::<Result<_, _>>()?;
    lines
        .map(|(line, text)| {
            let fields: Vec<&str> = text.split(',').map(str::trim).collect();
            if fields.len() != names.len() {
                return Err(ScheduleError::new(
                    line,
                    "(line)",
                    format!("{} fields, the header has {}", fields.len(), names.len()),
                ));
            }
            let field = |k: usize| fields[at[k]];
            let number = |k: usize| {
                field(k).parse::<f64>().map_err(|_| {
                    ScheduleError::new(line, COLUMNS[k], format!("{:?} is not a number", field(k)))
                })
            };
            let raw = Raw {
                id: field(0).to_owned(),
                start: field(1).to_owned(),
                end: field(2).to_owned(),
                known_at: field(3).to_owned(),
                nodes: number(4)?,
                cpu_cores: number(5)?,
                memory_gb: number(6)?,
                storage_gb: number(7)?,
                licenses: field(8).split('|').map(str::to_owned).collect(),
            };
            check(line, raw)
        })
        .collect()
}

/// `bookings` as CSV that [`parse`] reads back the same.
pub fn to_csv(bookings: &[Booking]) -> String {
    let mut out = COLUMNS.join(",") + "\n";
    for b in bookings {
        let licenses: Vec<&str> = b
            .licenses
            .iter()
            .map(|l| match l {
                License::Personal => "PERSONAL",
                License::Enterprise => "ENTERPRISE",
                License::Evaluation => "EVALUATION",
            })
            .collect();
        out += &format!(
            "{},{},{},{},{},{},{},{},{}\n",
            b.id,
            b.start,
            b.end,
            b.known_at,
            b.needs.nodes,
            b.needs.cpu,
            csv_gb(b.needs.memory_gib),
            csv_gb(b.needs.storage_gib),
            licenses.join("|")
        );
    }
    out
}

/// GiB as the decimal GB a schedule is written in, to the byte: what was read as a whole
/// number of GB is written back as that number, without the float error of the round trip.
fn csv_gb(gib: f64) -> f64 {
    (units::gb_from_gib(gib) * 1e9).round() / 1e9
}

/// A booking from what was written, or the first field that is wrong.
fn check(line: usize, raw: Raw) -> Result<Booking, ScheduleError> {
    let time = |field: &str, value: &str| {
        value.parse::<Timestamp>().map_err(|e| {
            ScheduleError::new(
                line,
                field,
                format!("{value:?} is not an RFC 3339 time: {e}"),
            )
        })
    };
    if raw.id.is_empty() {
        return Err(ScheduleError::new(line, "id", "empty"));
    }
    let (start, end, known_at) = (
        time("start", &raw.start)?,
        time("end", &raw.end)?,
        time("known_at", &raw.known_at)?,
    );
    if end <= start {
        return Err(ScheduleError::new(line, "end", "not after start"));
    }
    if known_at > start {
        return Err(ScheduleError::new(line, "known_at", "after start"));
    }
    for (field, value) in [
        ("nodes", raw.nodes),
        ("cpu_cores", raw.cpu_cores),
        ("memory_gb", raw.memory_gb),
        ("storage_gb", raw.storage_gb),
    ] {
        if !value.is_finite() || value < 0.0 {
            return Err(ScheduleError::new(
                line,
                field,
                format!("{value} is not a size"),
            ));
        }
    }
    let licenses = raw
        .licenses
        .iter()
        .map(|l| match l.trim().to_uppercase().as_str() {
            "PERSONAL" => Ok(License::Personal),
            "ENTERPRISE" => Ok(License::Enterprise),
            "EVALUATION" => Ok(License::Evaluation),
            other => Err(ScheduleError::new(
                line,
                "licenses",
                format!("{other:?} is not PERSONAL, ENTERPRISE or EVALUATION"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if licenses.is_empty() {
        return Err(ScheduleError::new(line, "licenses", "empty"));
    }
    Ok(Booking {
        id: raw.id,
        needs: Resources {
            cpu: raw.cpu_cores,
            memory_gib: units::gib_from_gb(raw.memory_gb),
            storage_gib: units::gib_from_gb(raw.storage_gb),
            nodes: raw.nodes,
        },
        licenses,
        start,
        end,
        known_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "id,start,end,known_at,nodes,cpu_cores,memory_gb,storage_gb,licenses";

    #[test]
    fn csv_and_json_give_the_same_booking() {
        let csv = format!(
            "{HEADER}\n# a comment\nccna-1,2026-12-07T09:00:00Z,2026-12-07T12:00:00Z,2026-12-01T10:00:00Z,12,24,48,20,ENTERPRISE|PERSONAL\n"
        );
        let json = r#"[{"id": "ccna-1", "start": "2026-12-07T09:00:00Z", "end": "2026-12-07T12:00:00Z",
            "known_at": "2026-12-01T10:00:00Z", "nodes": 12, "cpu_cores": 24, "memory_gb": 48,
            "storage_gb": 20, "licenses": ["ENTERPRISE", "PERSONAL"]}]"#;
        let from_csv = parse(&csv).expect("csv");
        assert_eq!(from_csv, parse(json).expect("json"));
        assert_eq!(
            from_csv[0].licenses,
            vec![License::Enterprise, License::Personal]
        );
        assert_eq!(from_csv[0].needs.nodes, 12.0);
        assert_eq!(parse(&to_csv(&from_csv)).expect("written back"), from_csv);
    }

    #[test]
    fn a_malformed_schedule_is_refused_with_the_line_and_field_named() {
        let row = "a,2026-12-07T09:00:00Z,2026-12-07T12:00:00Z,2026-12-01T10:00:00Z,12,24,48,20,ENTERPRISE";
        let cases = [
            (
                format!("{HEADER}\n{row}\n{}", row.replace(",12,", ",twelve,")),
                3,
                "nodes",
            ),
            (
                format!(
                    "{HEADER}\n{}",
                    row.replace("2026-12-07T12:00:00Z", "2026-12-07T08:00:00Z")
                ),
                2,
                "end",
            ),
            (
                format!(
                    "{HEADER}\n{}",
                    row.replace("2026-12-01T10:00:00Z", "2026-12-08T10:00:00Z")
                ),
                2,
                "known_at",
            ),
            (
                format!("{HEADER}\n{}", row.replace("ENTERPRISE", "GOLD")),
                2,
                "licenses",
            ),
            (
                format!(
                    "{HEADER}\n{}",
                    row.replace("2026-12-07T09:00:00Z", "monday")
                ),
                2,
                "start",
            ),
            (format!("{HEADER}\n{row},extra"), 2, "(line)"),
            (HEADER.replace(",licenses", ""), 1, "licenses"),
            (
                r#"[{"id": "a", "start": "2026-12-07T09:00:00Z"}]"#.to_owned(),
                1,
                "end",
            ),
        ];
        for (text, line, field) in cases {
            let e = parse(&text).expect_err(&text);
            assert_eq!((e.line, e.field.as_str()), (line, field), "{e}");
        }
    }
}

//! `--sweep`: the same replay over the values of one or two knobs, for the trade-off between
//! labs on time and instance-hours. A count knob is set on every template; the lead time and
//! the grace period likewise (the lead time is the controller's).

use std::time::Duration;

use ccm_core::{GoDuration, lead_time::LeadTime};

use crate::{
    Booking, Outcome,
    replay::{Settings, Template, replay},
};

/// What a sweep may vary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Knob {
    /// `minWorkers` of every template.
    MinWorkers,
    /// `warmWorkers` of every template.
    WarmWorkers,
    /// `maxStoppedWorkers` of every template.
    MaxStoppedWorkers,
    /// `maxWorkers` of every template.
    MaxWorkers,
    /// `scaleDownGracePeriod` of every template.
    ScaleDownGracePeriod,
    /// `scaleUpLeadTime` of every template, and the controller's `--scale-up-lead-time`.
    LeadTime,
}

impl Knob {
    const NAMES: [(&'static str, Knob); 6] = [
        ("minWorkers", Knob::MinWorkers),
        ("warmWorkers", Knob::WarmWorkers),
        ("maxStoppedWorkers", Knob::MaxStoppedWorkers),
        ("maxWorkers", Knob::MaxWorkers),
        ("scaleDownGracePeriod", Knob::ScaleDownGracePeriod),
        ("leadTime", Knob::LeadTime),
    ];

    fn name(self) -> &'static str {
        Knob::NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }

    fn is_duration(self) -> bool {
        matches!(self, Knob::ScaleDownGracePeriod | Knob::LeadTime)
    }
}

/// One knob and the values it takes: counts, or durations in seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Axis {
    /// The template it is set on (`None`: every template).
    pub template: Option<String>,
    /// The knob.
    pub knob: Knob,
    /// Its values, in order.
    pub values: Vec<u64>,
}

impl std::str::FromStr for Axis {
    type Err = String;

    /// `warmWorkers=0..3`, `leadTime=20m..60m/10m` (a step), `leadTime=20m,35m,60m`, or a
    /// template's own: `personal-standard.warmWorkers=0..2`.
    fn from_str(s: &str) -> Result<Axis, String> {
        let (name, range) = s
            .split_once('=')
            .ok_or(format!("{s:?}: expected KNOB=VALUES"))?;
        let (template, name) = match name.rsplit_once('.') {
            Some((t, n)) => (Some(t.to_owned()), n),
            None => (None, name),
        };
        let knob = Knob::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                let names: Vec<&str> = Knob::NAMES.iter().map(|(n, _)| *n).collect();
                format!("{name:?} is not one of {}", names.join(", "))
            })?;
        let value = |v: &str| -> Result<u64, String> {
            if knob.is_duration() {
                let d: GoDuration = v.parse().map_err(|e| format!("{e}"))?;
                Ok(d.as_std().as_secs())
            } else {
                v.parse().map_err(|_| format!("{v:?} is not a count"))
            }
        };
        let values = if let Some((low, rest)) = range.split_once("..") {
            let (high, step) = match rest.split_once('/') {
                Some((high, step)) => (value(high)?, value(step)?),
                None if knob.is_duration() => (value(rest)?, 600),
                None => (value(rest)?, 1),
            };
            let low = value(low)?;
            if step == 0 || high < low {
                return Err(format!("{s:?}: an empty range"));
            }
            (low..=high).step_by(step as usize).collect()
        } else {
            range.split(',').map(value).collect::<Result<Vec<_>, _>>()?
        };
        if values.len() > 50 {
            return Err(format!("{s:?}: more than 50 values"));
        }
        Ok(Axis {
            template,
            knob,
            values,
        })
    }
}

/// One point of a sweep: the knobs' values and what the replay found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Point {
    /// Each knob's value, as `name=value`.
    pub setting: Vec<String>,
    /// The replay's figures.
    pub outcome: Outcome,
}

/// Replays every combination of the axes' values (one or two axes).
pub fn sweep(
    templates: &[Template],
    bookings: &[Booking],
    settings: &Settings,
    axes: &[Axis],
) -> Vec<Point> {
    let mut combos: Vec<Vec<(&Axis, u64)>> = vec![Vec::new()];
    for axis in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                axis.values.iter().map(move |v| {
                    let mut next = c.clone();
                    next.push((axis, *v));
                    next
                })
            })
            .collect();
    }
    combos
        .into_iter()
        .map(|combo| {
            let (mut ts, mut s) = (templates.to_vec(), settings.clone());
            for (axis, value) in &combo {
                apply(axis, *value, &mut ts, &mut s);
            }
            Point {
                setting: combo.iter().map(|(a, v)| label(a, *v)).collect(),
                outcome: replay(&ts, bookings, &s),
            }
        })
        .collect()
}

fn apply(axis: &Axis, value: u64, templates: &mut [Template], settings: &mut Settings) {
    let (knob, count) = (axis.knob, u32::try_from(value).unwrap_or(u32::MAX));
    let chosen = |t: &Template| axis.template.as_ref().is_none_or(|name| *name == t.name);
    for t in templates.iter_mut().filter(|t| chosen(t)) {
        let v = &mut t.view;
        match knob {
            Knob::MinWorkers => v.min_workers = count,
            Knob::WarmWorkers => v.warm_workers = count,
            Knob::MaxStoppedWorkers => v.max_stopped_workers = count,
            Knob::MaxWorkers => v.max_workers = count,
            Knob::ScaleDownGracePeriod => v.grace = Duration::from_secs(value),
            Knob::LeadTime => {
                t.lead_time = Some(LeadTime::Fixed(GoDuration::from(Duration::from_secs(
                    value,
                ))))
            }
        }
    }
    if knob == Knob::LeadTime && axis.template.is_none() {
        settings.lead_time = Duration::from_secs(value);
    }
}

fn label(axis: &Axis, value: u64) -> String {
    let scope = axis
        .template
        .as_ref()
        .map(|t| format!("{t}."))
        .unwrap_or_default();
    let knob = axis.knob;
    if knob.is_duration() {
        let d = GoDuration::from(Duration::from_secs(value));
        format!("{scope}{}={d}", knob.name())
    } else {
        format!("{scope}{}={value}", knob.name())
    }
}

/// The cheapest point with at least `on_time` of the labs on time, if any.
pub fn best(points: &[Point], on_time: f64) -> Option<&Point> {
    points
        .iter()
        .filter(|p| p.outcome.on_time_ratio() >= on_time)
        .min_by(|a, b| a.outcome.running_hours.total_cmp(&b.outcome.running_hours))
}

/// The trade-off as a table, and the best point at 99.9 % on time.
pub fn table(points: &[Point]) -> String {
    let mut out = String::new();
    let width = points
        .iter()
        .map(|p| p.setting.join(" ").len())
        .max()
        .unwrap_or(7)
        .max(7);
    out += &format!(
        "{:<width$}  {:>9}  {:>5}  {:>10}  {:>9}  {:>8}\n",
        "setting", "on time", "late", "running h", "/ bound", "launches"
    );
    for p in points {
        let o = &p.outcome;
        let ratio = o
            .cost_ratio()
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        out += &format!(
            "{:<width$}  {:>8.2}%  {:>5}  {:>10.1}  {:>9}  {:>8}\n",
            p.setting.join(" "),
            100.0 * o.on_time_ratio(),
            o.late.len() + o.never_served.len(),
            o.running_hours,
            ratio,
            o.launches
        );
    }
    match best(points, 0.999) {
        Some(p) => out += &format!("\nbest with >= 99.9 % on time: {}\n", p.setting.join(" ")),
        None => out += "\nno setting has >= 99.9 % of the labs on time\n",
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_ranges_steps_and_lists_and_refuse_the_rest() {
        let a: Axis = "warmWorkers=0..3".parse().expect("range");
        assert_eq!((a.knob, a.values), (Knob::WarmWorkers, vec![0, 1, 2, 3]));
        let a: Axis = "leadTime=20m..60m/20m".parse().expect("step");
        assert_eq!(a.values, vec![1200, 2400, 3600]);
        let a: Axis = "leadTime=20m,35m".parse().expect("list");
        assert_eq!((a.template, a.values), (None, vec![1200, 2100]));
        let a: Axis = "personal-standard.warmWorkers=0,2".parse().expect("scoped");
        assert_eq!(a.template.as_deref(), Some("personal-standard"));
        let a: Axis = "t.leadTime=20m".parse().expect("a template's lead time");
        assert_eq!((a.template.as_deref(), a.knob), (Some("t"), Knob::LeadTime));
        for bad in [
            "warmWorkers",
            "colour=1..2",
            "warmWorkers=3..1",
            "warmWorkers=a..b",
            "minWorkers=0..100",
        ] {
            assert!(bad.parse::<Axis>().is_err(), "{bad}");
        }
    }
}

use std::time::Duration;

use jiff::Timestamp;

use super::*;

fn window(
    days: &[Day],
    from: &str,
    to: &str,
    min: Option<u32>,
    warm: Option<u32>,
) -> ScalingWindow {
    ScalingWindow {
        days: days.to_vec(),
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        min_workers: min,
        warm_workers: warm,
    }
}

fn schedule(zone: &str, windows: Vec<ScalingWindow>) -> Resolved {
    ScalingSchedule {
        time_zone: zone.to_owned(),
        windows,
    }
    .resolve()
    .unwrap()
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

const BASE: Levels = Levels {
    min_workers: 1,
    warm_workers: 0,
};

fn warm(n: u32) -> Levels {
    Levels {
        warm_workers: n,
        ..BASE
    }
}

const WEEKDAYS: [Day; 5] = [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri];

#[test]
fn a_window_holds_from_its_opening_to_its_closing_on_its_days() {
    let s = schedule(
        "UTC",
        vec![window(&WEEKDAYS, "18:00", "22:00", None, Some(1))],
    );
    // 2026-12-07 is a Monday; 2026-12-12 a Saturday.
    for (time, expected) in [
        ("2026-12-07T17:59:59Z", BASE),
        ("2026-12-07T18:00:00Z", warm(1)),
        ("2026-12-07T21:59:59Z", warm(1)),
        ("2026-12-07T22:00:00Z", BASE),
        ("2026-12-12T19:00:00Z", BASE),
    ] {
        assert_eq!(s.levels_at(BASE, at(time)), expected, "{time}");
    }
}

#[test]
fn a_window_closing_at_or_before_its_opening_runs_past_midnight() {
    let s = schedule(
        "UTC",
        vec![window(&[Day::Fri], "22:00", "06:00", Some(0), None)],
    );
    let night = Levels {
        min_workers: 0,
        warm_workers: 0,
    };
    // Friday 2026-12-11 22:00 to Saturday 06:00.
    assert_eq!(s.levels_at(BASE, at("2026-12-11T21:00:00Z")), BASE);
    assert_eq!(s.levels_at(BASE, at("2026-12-12T03:00:00Z")), night);
    assert_eq!(s.levels_at(BASE, at("2026-12-12T06:00:00Z")), BASE);
    // Thursday night is not Friday's.
    assert_eq!(s.levels_at(BASE, at("2026-12-11T03:00:00Z")), BASE);
    let all_day = schedule(
        "UTC",
        vec![window(&[Day::Sun], "00:00", "00:00", None, Some(2))],
    );
    assert_eq!(all_day.levels_at(BASE, at("2026-12-13T23:59:00Z")), warm(2));
    assert_eq!(all_day.levels_at(BASE, at("2026-12-14T00:00:00Z")), BASE);
}

#[test]
fn overlapping_windows_give_each_level_its_highest() {
    let s = schedule(
        "UTC",
        vec![
            window(&WEEKDAYS, "08:00", "18:00", Some(2), None),
            window(&WEEKDAYS, "12:00", "20:00", Some(1), Some(3)),
        ],
    );
    let both = Levels {
        min_workers: 2,
        warm_workers: 3,
    };
    assert_eq!(s.levels_at(BASE, at("2026-12-08T13:00:00Z")), both);
    // The second alone: its minWorkers 1, even though the spec's is 1 too.
    assert_eq!(
        s.levels_at(BASE, at("2026-12-08T19:00:00Z")),
        Levels {
            min_workers: 1,
            warm_workers: 3
        }
    );
}

#[test]
fn a_window_that_lowers_a_level_lowers_it() {
    let s = schedule(
        "UTC",
        vec![window(
            &[Day::Sat, Day::Sun],
            "00:00",
            "00:00",
            Some(0),
            None,
        )],
    );
    assert_eq!(
        s.levels_at(BASE, at("2026-12-12T12:00:00Z")),
        Levels {
            min_workers: 0,
            warm_workers: 0
        }
    );
}

#[test]
fn a_window_is_provided_for_a_lead_time_ahead_and_no_longer_after_it_closes() {
    let s = schedule(
        "UTC",
        vec![window(&WEEKDAYS, "18:00", "22:00", None, Some(1))],
    );
    let lead = Duration::from_secs(35 * 60);
    for (time, expected) in [
        ("2026-12-07T17:24:00Z", BASE),
        ("2026-12-07T17:25:00Z", warm(1)),
        ("2026-12-07T21:59:00Z", warm(1)),
        ("2026-12-07T22:00:00Z", BASE),
        // Friday evening's window, then none until Monday's.
        ("2026-12-11T22:30:00Z", BASE),
    ] {
        assert_eq!(s.levels_within(BASE, at(time), lead), expected, "{time}");
    }
    // A window shorter than the look-ahead, wholly inside it, still counts.
    let short = schedule(
        "UTC",
        vec![window(&[Day::Mon], "10:00", "10:10", None, Some(4))],
    );
    assert_eq!(
        short.levels_within(BASE, at("2026-12-07T09:50:00Z"), Duration::from_secs(3600)),
        warm(4)
    );
}

#[test]
fn a_lowering_window_gives_way_a_lead_time_before_it_closes() {
    // Nights without a minimum worker: the minimum is back up by 06:00.
    let s = schedule(
        "UTC",
        vec![window(&WEEKDAYS, "22:00", "06:00", Some(0), None)],
    );
    let night = Levels {
        min_workers: 0,
        warm_workers: 0,
    };
    let lead = Duration::from_secs(30 * 60);
    assert_eq!(
        s.levels_within(BASE, at("2026-12-08T05:00:00Z"), lead),
        night
    );
    assert_eq!(
        s.levels_within(BASE, at("2026-12-08T05:30:00Z"), lead),
        BASE
    );
}

#[test]
fn times_follow_the_zone_and_its_daylight_saving() {
    let s = schedule(
        "Europe/Berlin",
        vec![window(&WEEKDAYS, "18:00", "22:00", None, Some(1))],
    );
    // 18:00 in Berlin is 17:00 UTC in winter and 16:00 UTC in summer.
    assert_eq!(s.levels_at(BASE, at("2026-12-07T16:30:00Z")), BASE);
    assert_eq!(s.levels_at(BASE, at("2026-12-07T17:00:00Z")), warm(1));
    assert_eq!(s.levels_at(BASE, at("2026-07-06T16:00:00Z")), warm(1));
    assert_eq!(s.levels_at(BASE, at("2026-07-06T20:00:00Z")), BASE);
}

#[test]
fn an_unknown_zone_is_refused_and_the_highest_levels_stand_in() {
    let spec = ScalingSchedule {
        time_zone: "Mars/Olympus_Mons".into(),
        windows: vec![
            window(&WEEKDAYS, "18:00", "22:00", None, Some(2)),
            window(&[Day::Sat], "00:00", "00:00", Some(0), None),
        ],
    };
    let err = spec.resolve().unwrap_err();
    assert!(err.to_string().contains("Mars/Olympus_Mons"), "{err}");
    // A window that lowers a level never lowers it here.
    assert_eq!(spec.highest(BASE), warm(2));
}

#[test]
fn times_of_day_parse_and_print_as_hh_mm() {
    for ok in ["00:00", "09:05", "23:59"] {
        assert_eq!(ok.parse::<ClockTime>().unwrap().to_string(), ok);
    }
    for bad in [
        "", "9:00", "24:00", "12:60", "12-00", "12:00:00", "ab:cd", "+1:00",
    ] {
        assert!(bad.parse::<ClockTime>().is_err(), "{bad:?}");
    }
}

#[test]
fn the_schedule_reads_as_the_crd_spells_it() {
    let spec: ScalingSchedule = serde_json::from_value(serde_json::json!({
        "windows": [{"days": ["Sat", "Sun"], "from": "10:00", "to": "20:00", "warmWorkers": 1}]
    }))
    .unwrap();
    assert_eq!(spec.time_zone, "UTC");
    assert_eq!(spec.windows[0].warm_workers, Some(1));
    assert_eq!(spec.windows[0].min_workers, None);
    let bad = serde_json::from_value::<ScalingSchedule>(serde_json::json!({
        "windows": [{"days": ["Sat"], "from": "25:00", "to": "20:00"}]
    }));
    assert!(bad.unwrap_err().to_string().contains("25:00"));
}

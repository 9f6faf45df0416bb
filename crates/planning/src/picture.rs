//! The picture of a replay, as SVG: over time, the workers the labs in their timeslots need at
//! least (the lower bound's count), the workers up, and the workers ready, as steps.

use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;

/// The fleet at one moment of the replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When.
    pub at: Timestamp,
    /// Workers the labs in their timeslots need at least, summed over templates.
    pub needed: u32,
    /// Workers up (not stopped): booting, ready, draining or stopping.
    pub up: u32,
    /// Workers ready for labs.
    pub ready: u32,
}

const MARGIN_LEFT: f64 = 56.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_TOP: f64 = 36.0;
const MARGIN_BOTTOM: f64 = 40.0;

/// The series drawn, with their colours and legend names.
const SERIES: [(&str, &str); 3] = [
    ("needed by the labs (lower bound)", "#999999"),
    ("workers up", "#d62728"),
    ("workers ready", "#1f77b4"),
];

/// An SVG of `width` x `height` pixels; `title` goes on top.
pub fn svg(samples: &[Sample], title: &str, width: u32, height: u32) -> String {
    let (w, h) = (f64::from(width), f64::from(height));
    let plot_w = (w - MARGIN_LEFT - MARGIN_RIGHT).max(1.0);
    let plot_h = (h - MARGIN_TOP - MARGIN_BOTTOM).max(1.0);
    let top = samples
        .iter()
        .map(|s| s.needed.max(s.up).max(s.ready))
        .max()
        .unwrap_or(0)
        .max(1);
    let (first, last) = match (samples.first(), samples.last()) {
        (Some(f), Some(l)) => (f.at.as_second(), l.at.as_second().max(f.at.as_second() + 1)),
        _ => (0, 1),
    };
    let x = |at: Timestamp| {
        MARGIN_LEFT + plot_w * (at.as_second() - first) as f64 / (last - first) as f64
    };
    let y = |n: u32| MARGIN_TOP + plot_h * (1.0 - f64::from(n) / f64::from(top));
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{MARGIN_LEFT}\" y=\"20\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    axes(&mut out, top, first, last, (plot_w, plot_h), &y);
    let values: [fn(&Sample) -> u32; 3] = [|s| s.needed, |s| s.up, |s| s.ready];
    for ((name, colour), value) in SERIES.iter().zip(values) {
        let mut points = String::new();
        let mut previous: Option<u32> = None;
        for s in samples {
            let v = value(s);
            if let Some(p) = previous.filter(|p| *p != v) {
                // A step: across at the old value, then up or down.
                let _ = write!(points, "{:.1},{:.1} ", x(s.at), y(p));
            }
            let _ = write!(points, "{:.1},{:.1} ", x(s.at), y(v));
            previous = Some(v);
        }
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"><title>{name}</title></polyline>",
            points.trim_end()
        );
    }
    legend(&mut out, w);
    out.push_str("</svg>\n");
    out
}

fn axes(
    out: &mut String,
    top: u32,
    first: i64,
    last: i64,
    plot: (f64, f64),
    y: &dyn Fn(u32) -> f64,
) {
    let (plot_w, plot_h) = plot;
    let bottom = MARGIN_TOP + plot_h;
    let _ = writeln!(
        out,
        "<path d=\"M{MARGIN_LEFT},{MARGIN_TOP} V{bottom} H{:.1}\" stroke=\"black\" fill=\"none\"/>",
        MARGIN_LEFT + plot_w
    );
    let step = (top / 5).max(1);
    for n in (0..=top).step_by(step as usize) {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{n}</text>",
            MARGIN_LEFT - 6.0,
            y(n) + 4.0
        );
    }
    // A tick a day (or at the ends of a shorter replay).
    let day = 86_400;
    let span = (last - first).max(1);
    let mut tick = if span > day {
        first - first.rem_euclid(day) + day
    } else {
        first
    };
    while tick <= last {
        let at = MARGIN_LEFT + plot_w * (tick - first) as f64 / span as f64;
        let label = Timestamp::from_second(tick)
            .map(|t| t.strftime("%a %d %H:%M").to_string())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<text x=\"{at:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            bottom + 16.0
        );
        tick += if span > day { day } else { span };
    }
    let _ = writeln!(
        out,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">workers</text>",
        MARGIN_TOP + plot_h / 2.0,
        MARGIN_TOP + plot_h / 2.0
    );
}

fn legend(out: &mut String, width: f64) {
    for (k, (name, colour)) in SERIES.iter().enumerate() {
        let x = width - MARGIN_RIGHT - 230.0;
        let y = 14.0 + 13.0 * k as f64;
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"11\">{name}</text>",
            y - 4.0,
            x + 18.0,
            y - 4.0,
            x + 24.0
        );
    }
}

/// The trade-off of a sweep as SVG: each setting a point, instance-hours running across, the
/// share of labs on time up.
pub fn trade_off_svg(
    points: &[(String, f64, f64)],
    title: &str,
    width: u32,
    height: u32,
) -> String {
    let (w, h) = (f64::from(width), f64::from(height));
    let plot_w = (w - MARGIN_LEFT - MARGIN_RIGHT).max(1.0);
    let plot_h = (h - MARGIN_TOP - MARGIN_BOTTOM).max(1.0);
    let hours = points.iter().map(|p| p.1);
    let (low, high) = hours.fold((f64::MAX, 0.0_f64), |(l, h), v| (l.min(v), h.max(v)));
    let (low, high) = if low <= high {
        (low * 0.95, high * 1.05 + 1.0)
    } else {
        (0.0, 1.0)
    };
    let ratios = points.iter().map(|p| p.2);
    let bottom_ratio = ratios.fold(1.0_f64, f64::min).min(0.99) - 0.005;
    let x = |v: f64| MARGIN_LEFT + plot_w * (v - low) / (high - low);
    let y = |r: f64| MARGIN_TOP + plot_h * (1.0 - (r - bottom_ratio) / (1.0 - bottom_ratio));
    let bottom = MARGIN_TOP + plot_h;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{MARGIN_LEFT}\" y=\"20\" font-size=\"14\">{}</text>\n\
         <path d=\"M{MARGIN_LEFT},{MARGIN_TOP} V{bottom} H{:.1}\" stroke=\"black\" fill=\"none\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">instance-hours running</text>\n\
         <text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">labs on time</text>\n",
        escape(title),
        MARGIN_LEFT + plot_w,
        MARGIN_LEFT + plot_w / 2.0,
        bottom + 30.0,
        MARGIN_TOP + plot_h / 2.0,
        MARGIN_TOP + plot_h / 2.0,
    );
    for (label, at) in [(format!("{:.0}", low), low), (format!("{:.0}", high), high)] {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            x(at),
            bottom + 14.0
        );
    }
    for r in [bottom_ratio, 1.0] {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.1} %</text>",
            MARGIN_LEFT - 6.0,
            y(r) + 4.0,
            100.0 * r
        );
    }
    for (setting, hours, ratio) in points {
        let (px, py) = (x(*hours), y(*ratio));
        let _ = writeln!(
            out,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"#1f77b4\"><title>{}</title></circle>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            escape(setting),
            px + 6.0,
            py - 6.0,
            escape(setting)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picture_is_an_svg_of_the_size_asked_with_three_series() {
        let at = |h: i64| Timestamp::from_second(1_800_000_000 + h * 3600).expect("time");
        let samples: Vec<Sample> = (0..60)
            .map(|h| Sample {
                at: at(h),
                needed: (h % 7) as u32,
                up: (h % 7) as u32 + 1,
                ready: (h % 7) as u32,
            })
            .collect();
        let text = svg(&samples, "week <1> & more", 960, 400);
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(root.attribute("width"), Some("960"));
        assert_eq!(root.attribute("height"), Some("400"));
        let lines = root
            .children()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        assert_eq!(lines, 3);
        let points = [
            ("a=1".to_owned(), 100.0, 1.0),
            ("a=0".to_owned(), 80.0, 0.98),
        ];
        let trade = trade_off_svg(&points, "sweep", 800, 400);
        let doc = roxmltree::Document::parse(&trade).expect("well-formed XML");
        assert_eq!(doc.root_element().attribute("width"), Some("800"));
        let dots = doc
            .root_element()
            .children()
            .filter(|n| n.has_tag_name("circle"))
            .count();
        assert_eq!(dots, 2);
        roxmltree::Document::parse(&trade_off_svg(&[], "none", 100, 80)).expect("empty sweep");
        // An empty replay still draws a valid, empty picture.
        roxmltree::Document::parse(&svg(&[], "empty", 100, 80)).expect("empty picture");
    }
}

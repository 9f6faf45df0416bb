//! What the template learns from its workers' boots: the last ones measured (from each worker's
//! `status.boot`), their p50 and p95 by kind, and the lead time `scaleUpLeadTime: auto` makes
//! of them.

use std::time::Duration;

use kube::ResourceExt;

use crate::{
    crd::{BootDurations, BootKind, BootQuantiles, BootSample, GoDuration, Worker, WorkerTemplate},
    lead_time::{self, KEPT},
};

/// `before` (the template's `status.bootDurations`) with the boots of `workers` not seen yet,
/// keeping the newest.
pub fn recorded(before: Option<&BootDurations>, workers: &[&Worker]) -> Option<BootDurations> {
    let mut durations = before.cloned().unwrap_or_default();
    for w in workers {
        let Some(boot) = w.status.as_ref().and_then(|s| s.boot.as_ref()) else {
            continue;
        };
        let (Some(ready_at), Some(seconds)) = (&boot.ready_at, boot.seconds) else {
            continue;
        };
        let sample = BootSample {
            worker: w.name_any(),
            kind: boot.kind,
            seconds,
            ready_at: ready_at.clone(),
        };
        let seen = durations
            .recent
            .iter()
            .any(|s| s.worker == sample.worker && s.ready_at == sample.ready_at);
        if !seen {
            durations.recent.push(sample);
        }
    }
    durations.recent.sort_by_key(|s| s.ready_at.0);
    for kind in [BootKind::Launch, BootKind::Start] {
        let of_kind = durations.recent.iter().filter(|s| s.kind == kind).count();
        let mut extra = of_kind.saturating_sub(KEPT);
        durations.recent.retain(|s| {
            let drop = s.kind == kind && extra > 0;
            extra -= usize::from(drop);
            !drop
        });
    }
    durations.launch = quantiles(&durations, BootKind::Launch);
    durations.start = quantiles(&durations, BootKind::Start);
    (!durations.recent.is_empty()).then_some(durations)
}

fn quantiles(d: &BootDurations, kind: BootKind) -> Option<BootQuantiles> {
    let of_kind = d.recent.iter().filter(|s| s.kind == kind);
    lead_time::measure(of_kind.map(|s| s.seconds)).map(|m| BootQuantiles {
        p50_seconds: m.p50_seconds,
        p95_seconds: m.p95_seconds,
        count: m.count,
    })
}

/// The lead time of this round: the template's own, learnt with `auto` once enough launches
/// are measured, else the controller's `flag`.
pub fn lead_time(t: &WorkerTemplate, boots: Option<&BootDurations>, flag: Duration) -> Duration {
    let launches = measured(boots, BootKind::Launch);
    lead_time::in_use(t.spec.scaling.scale_up_lead_time, launches, flag)
}

/// How far ahead this round starts stopped workers: with `auto`, learnt from the measured
/// starts once there are enough, never more than `lead` (this round's lead time); else `lead`.
pub fn start_lead_time(
    t: &WorkerTemplate,
    boots: Option<&BootDurations>,
    lead: Duration,
) -> Duration {
    let starts = measured(boots, BootKind::Start);
    lead_time::start_in_use(t.spec.scaling.scale_up_lead_time, starts, lead)
}

fn measured(boots: Option<&BootDurations>, kind: BootKind) -> Option<lead_time::Measured> {
    let d = boots?;
    let q = match kind {
        BootKind::Launch => d.launch.as_ref(),
        BootKind::Start => d.start.as_ref(),
    }?;
    Some(lead_time::Measured {
        p50_seconds: q.p50_seconds,
        p95_seconds: q.p95_seconds,
        count: q.count,
    })
}

/// The lead time as status shows it.
pub fn shown(lead: Duration) -> GoDuration {
    GoDuration::from(lead)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(boots: &mut Option<BootDurations>, workers: &[&Worker]) {
        *boots = recorded(boots.as_ref(), workers);
    }

    fn worker(name: &str, kind: &str, minute: i64, seconds: u64) -> Worker {
        let ready =
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + minute * 60).expect("time");
        serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"templateRef": {"name": "t"}},
            "status": {"phase": "Running", "boot": {"kind": kind, "startedAt": ready.to_string(),
                "readyAt": ready.to_string(), "seconds": seconds}}
        }))
        .expect("worker")
    }

    fn template(lead: Option<&str>) -> WorkerTemplate {
        let mut scaling = json!({"maxWorkers": 5});
        if let Some(l) = lead {
            scaling["scaleUpLeadTime"] = json!(l);
        }
        crate::crd::fixtures::template(json!({"spec": {"scaling": scaling}}))
    }

    #[test]
    fn boots_are_counted_once_by_kind_and_auto_uses_the_p95_of_launches_and_of_starts() {
        let flag = Duration::from_secs(35 * 60);
        let mut boots: Option<BootDurations> = None;
        let a = worker("a", "Launch", 0, 600);
        let b = worker("b", "Launch", 1, 480);
        let refs = [&a, &b];
        record(&mut boots, &refs);
        record(&mut boots, &refs);
        let d = boots.clone().expect("measured");
        assert_eq!(d.recent.len(), 2, "the same boots seen twice count once");
        assert_eq!(d.launch.as_ref().map(|q| q.count), Some(2));
        let auto = template(Some("auto"));
        assert_eq!(
            lead_time(&auto, boots.as_ref(), flag),
            flag,
            "two launches are not enough"
        );
        let c = worker("c", "Launch", 2, 720);
        let s = worker("s", "Start", 3, 200);
        record(&mut boots, &[&c, &s]);
        let d = boots.clone().expect("measured");
        assert_eq!(
            d.launch.as_ref().map(|q| (q.p50_seconds, q.p95_seconds)),
            Some((600, 720))
        );
        assert_eq!(d.start.as_ref().map(|q| q.count), Some(1));
        assert_eq!(
            lead_time(&auto, boots.as_ref(), flag),
            Duration::from_secs(720 + 120),
            "the p95 plus its spread over the p50"
        );
        let lead = lead_time(&auto, boots.as_ref(), flag);
        assert_eq!(
            start_lead_time(&auto, boots.as_ref(), lead),
            lead,
            "one start is not enough"
        );
        let (s2, s3) = (worker("s2", "Start", 4, 240), worker("s3", "Start", 5, 300));
        record(&mut boots, &[&s2, &s3]);
        assert_eq!(
            start_lead_time(&auto, boots.as_ref(), lead),
            Duration::from_secs(300 + 120),
            "the p95 of starts plus the least margin"
        );
        assert_eq!(
            lead_time(&template(Some("20m")), boots.as_ref(), flag),
            Duration::from_secs(1200)
        );
        assert_eq!(
            start_lead_time(&template(Some("20m")), boots.as_ref(), lead),
            lead,
            "a fixed lead time starts stopped workers that far ahead"
        );
        assert_eq!(lead_time(&template(None), boots.as_ref(), flag), flag);
        // The newest 20 of a kind are kept.
        let many: Vec<Worker> = (0..30)
            .map(|k| worker(&format!("w{k}"), "Launch", 10 + k, 100))
            .collect();
        let refs: Vec<&Worker> = many.iter().collect();
        record(&mut boots, &refs);
        let d = boots.expect("measured");
        assert_eq!(d.launch.map(|q| q.count), Some(20));
        assert_eq!(
            d.recent
                .iter()
                .filter(|s| s.kind == BootKind::Start)
                .count(),
            3
        );
    }
}

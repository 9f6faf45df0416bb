//! The last scale-up and scale-down of each template, remembered across reconciles: a reconcile
//! can start from a cached template that does not show the previous one's status write yet, and
//! must neither lose those records nor misjudge the grace period that follows a scale-up.

use crate::lock::Locked;
use std::{collections::HashMap, sync::Mutex};

use crate::crd::{ScalingRecord, WorkerTemplateStatus};

/// The last scale-up and the last scale-down.
type Last = (Option<ScalingRecord>, Option<ScalingRecord>);

#[derive(Default)]
pub struct ScalingHistory {
    by_template: Mutex<HashMap<String, Last>>,
}

fn newer(a: Option<ScalingRecord>, b: Option<ScalingRecord>) -> Option<ScalingRecord> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.time.0 > a.time.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl ScalingHistory {
    /// Puts the newest known records into `status`.
    pub fn recall(&self, uid: &str, status: &mut WorkerTemplateStatus) {
        let known = self.by_template.locked();
        if let Some((up, down)) = known.get(uid) {
            status.last_scale_up = newer(status.last_scale_up.take(), up.clone());
            status.last_scale_down = newer(status.last_scale_down.take(), down.clone());
        }
    }

    pub fn remember(&self, uid: &str, status: &WorkerTemplateStatus) {
        self.by_template.locked().insert(
            uid.to_owned(),
            (status.last_scale_up.clone(), status.last_scale_down.clone()),
        );
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    use super::*;

    fn record(second: i64) -> ScalingRecord {
        ScalingRecord {
            time: Time(Timestamp::from_second(1_800_000_000 + second).expect("time")),
            count: 1,
            reason: "demand".into(),
        }
    }

    #[test]
    fn a_stale_status_gets_the_newest_records_back() {
        let history = ScalingHistory::default();
        let written = WorkerTemplateStatus {
            last_scale_up: Some(record(10)),
            ..WorkerTemplateStatus::default()
        };
        history.remember("t", &written);
        let mut stale = WorkerTemplateStatus {
            last_scale_up: Some(record(5)),
            ..WorkerTemplateStatus::default()
        };
        history.recall("t", &mut stale);
        assert_eq!(stale.last_scale_up, Some(record(10)));
        let mut newer_in_cache = WorkerTemplateStatus {
            last_scale_up: Some(record(20)),
            ..WorkerTemplateStatus::default()
        };
        history.recall("t", &mut newer_in_cache);
        assert_eq!(newer_in_cache.last_scale_up, Some(record(20)));
    }
}

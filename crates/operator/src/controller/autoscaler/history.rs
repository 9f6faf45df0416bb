//! The last scale-up and scale-down of each template, remembered across reconciles: a reconcile
//! can start from a cached template that does not show the previous one's status write yet, and
//! must neither lose those records nor misjudge the grace period that follows a scale-up.

use crate::lock::Locked;
use std::{collections::HashMap, sync::Mutex};

use crate::crd::{ScalingRecord, WorkerTemplateStatus};

/// The last scale-up and the last scale-down.
#[derive(Default)]
pub struct ScalingHistory {
    by_template: Mutex<HashMap<String, Records>>,
}

fn newer(a: Option<ScalingRecord>, b: Option<ScalingRecord>) -> Option<ScalingRecord> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.time.0 > a.time.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// A template's last scale-up and scale-down.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Records {
    pub last_scale_up: Option<ScalingRecord>,
    pub last_scale_down: Option<ScalingRecord>,
}

impl ScalingHistory {
    /// The newest records: `status`'s, or those last written when the cached status lags.
    pub fn recalled(&self, uid: &str, status: &WorkerTemplateStatus) -> Records {
        let known = self.by_template.locked();
        let last = known.get(uid).cloned().unwrap_or_default();
        Records {
            last_scale_up: newer(status.last_scale_up.clone(), last.last_scale_up),
            last_scale_down: newer(status.last_scale_down.clone(), last.last_scale_down),
        }
    }

    pub fn remember(&self, uid: &str, status: &WorkerTemplateStatus) {
        let last = Records {
            last_scale_up: status.last_scale_up.clone(),
            last_scale_down: status.last_scale_down.clone(),
        };
        self.by_template.locked().insert(uid.to_owned(), last);
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
        let stale = WorkerTemplateStatus {
            last_scale_up: Some(record(5)),
            ..WorkerTemplateStatus::default()
        };
        assert_eq!(
            history.recalled("t", &stale).last_scale_up,
            Some(record(10))
        );
        let newer_in_cache = WorkerTemplateStatus {
            last_scale_up: Some(record(20)),
            ..WorkerTemplateStatus::default()
        };
        assert_eq!(
            history.recalled("t", &newer_in_cache).last_scale_up,
            Some(record(20))
        );
    }
}

//! Sync: push the worker's record to the platform's remotes and say in `Synced` which hold it.

use std::time::Duration;

use super::observe::Observed;
use crate::{
    controller::{reasons, worker::context::WorkerContext},
    crd::{
        Worker, WorkerStatus,
        conditions::{self, ConditionType, NewCondition, Stamp},
    },
    mirror::{self, RemoteName, SyncState, record},
    remote::RemoteError,
};

/// Pushes the record `next` describes; sets `Synced` in `next` and returns how soon to retry a
/// remote that does not hold it yet. Without remotes it does nothing; without the template (the
/// record needs its capacity and license) the remotes keep the last record.
pub(super) async fn push(
    worker: &Worker,
    observed: &Observed,
    next: &mut WorkerStatus,
    ctx: &WorkerContext,
) -> Option<Duration> {
    if ctx.remotes.is_empty() {
        return None;
    }
    let template = observed.template.as_ref()?;
    let record = record::derive(worker, template, next)?;
    let states = ctx.remotes.push(&record).await;
    if let Some(synced) = synced(&states) {
        let stamp = Stamp {
            generation: worker.metadata.generation,
            now: observed.facts.now,
        };
        conditions::set(&mut next.conditions, synced, stamp);
    }
    mirror::retry_in(&states)
}

/// The `Synced` condition from each remote's state; `None` without remotes.
fn synced(states: &[(RemoteName, SyncState)]) -> Option<NewCondition> {
    if states.is_empty() {
        return None;
    }
    let failing: Vec<(RemoteName, &RemoteError)> = states
        .iter()
        .filter_map(|(name, s)| match s {
            SyncState::Failing { error, .. } => Some((*name, error)),
            SyncState::Synced => None,
        })
        .collect();
    let held: Vec<&str> = states.iter().map(|(n, _)| n.as_str()).collect();
    Some(match failing.as_slice() {
        [] => NewCondition::new(
            ConditionType::Synced,
            true,
            reasons::SYNCED,
            format!("the current record is held by {}", held.join(" and ")),
        ),
        [(name, error), ..] => NewCondition::new(
            ConditionType::Synced,
            false,
            reasons::remote_failing(*name, error.kind),
            failing
                .iter()
                .map(|(n, e)| format!("{}: {e}", n.as_str()))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mirror::tests::failing, remote::RemoteErrorKind};

    #[test]
    fn synced_names_every_remote_and_failures_name_the_remote() {
        assert_eq!(synced(&[]), None);
        let both = [
            (RemoteName::ControlPlane, SyncState::Synced),
            (RemoteName::Etcd, SyncState::Synced),
        ];
        let c = synced(&both).expect("condition");
        assert!(c.status);
        assert_eq!(c.reason, "Synced");
        assert!(c.message.contains("ControlPlane and Etcd"), "{}", c.message);

        let etcd_down = [
            (RemoteName::ControlPlane, SyncState::Synced),
            (RemoteName::Etcd, failing(RemoteErrorKind::Unavailable)),
        ];
        let c = synced(&etcd_down).expect("condition");
        assert!(!c.status);
        assert_eq!(c.reason, "EtcdUnavailable");
        assert!(c.message.starts_with("Etcd: Unavailable"), "{}", c.message);

        let both_down = [
            (
                RemoteName::ControlPlane,
                failing(RemoteErrorKind::BadResponse),
            ),
            (RemoteName::Etcd, failing(RemoteErrorKind::Timeout)),
        ];
        let c = synced(&both_down).expect("condition");
        assert_eq!(c.reason, "ControlPlaneBadResponse");
        assert!(c.message.contains("Etcd: Timeout"), "{}", c.message);
    }
}

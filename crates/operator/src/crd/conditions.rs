//! The conditions the controller writes into status, and the helpers that read and write them.

use std::borrow::Cow;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// Every condition type the controller writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
pub enum ConditionType {
    /// Worker: CML is ready and the worker takes labs. Template: the config is valid and its
    /// image resolved.
    Ready,
    /// Worker: an instance was launched (or adopted) for it.
    Launched,
    /// Worker: its instance was launched from another launch spec than the template's now.
    Drifted,
    /// Worker: both remotes hold its current record.
    Synced,
    /// Worker: a CML endpoint does not answer, so the fields it feeds are unknown.
    CmlDegraded,
    /// Template: the autoscaler wants more than it may make (`maxWorkers`, unknown demand).
    ScalingLimited,
    /// Worker: registered and authorized with Smart Licensing (templates with `licensing`).
    Licensed,
}

impl ConditionType {
    /// Every value, in declaration order: derived, so a new variant is in it.
    pub const ALL: &'static [ConditionType] = <ConditionType as strum::VariantArray>::VARIANTS;

    /// The `type` field as written.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A condition as a reconcile decides it, before it goes into a status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCondition {
    pub type_: ConditionType,
    pub status: bool,
    pub reason: Cow<'static, str>,
    pub message: String,
}

impl NewCondition {
    pub fn new(
        type_: ConditionType,
        status: bool,
        reason: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> NewCondition {
        NewCondition {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// What every condition written by one reconcile carries: the object's generation it describes
/// and the reconcile's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub generation: Option<i64>,
    pub now: Timestamp,
}

/// The condition of `type_`, if present.
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether the condition of `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Sets a condition; its transition time moves only when its status changes. A condition that
/// already reads so is left as it is, without allocating (most reconciles change nothing).
pub fn set(conditions: &mut Vec<Condition>, new: NewCondition, stamp: Stamp) {
    let status = if new.status { "True" } else { "False" };
    let mut message = new.message;
    // The API server limits messages to 32 KiB; keep them short and readable.
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
    }
    let type_ = new.type_.as_str();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.status = status.to_owned();
                c.last_transition_time = Time(stamp.now);
            }
            if c.reason != new.reason {
                c.reason = new.reason.into_owned();
            }
            if c.message != message {
                c.message = message;
            }
            c.observed_generation = stamp.generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: new.reason.into_owned(),
            message,
            observed_generation: stamp.generation,
            last_transition_time: Time(stamp.now),
        }),
    }
}

const MAX_MESSAGE_CHARS: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(second: i64, generation: Option<i64>) -> Stamp {
        Stamp {
            generation,
            now: Timestamp::from_second(second).unwrap(),
        }
    }

    fn ready(status: bool, reason: &'static str, message: impl Into<String>) -> NewCondition {
        NewCondition::new(ConditionType::Ready, status, reason, message)
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let (t0, t1) = (stamp(1_800_000_000, Some(1)), stamp(1_800_000_100, Some(1)));
        let mut cs = Vec::new();
        set(&mut cs, ready(false, "Booting", "waiting"), t0);
        set(&mut cs, ready(false, "Booting", "still waiting"), t1);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, Time(t0.now));
        assert_eq!(cs[0].message, "still waiting");
        set(&mut cs, ready(true, "CmlReady", "ready"), t1);
        assert_eq!(cs[0].last_transition_time, Time(t1.now));
        assert!(is_true(&cs, ConditionType::Ready));
        assert!(!is_true(&cs, ConditionType::Launched));
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let now = stamp(1_800_000_000, None);
        let mut cs = Vec::new();
        set(&mut cs, ready(false, "Broken", "é".repeat(2000)), now);
        assert_eq!(cs[0].message, "é".repeat(1024));
        set(&mut cs, ready(false, "Broken", "short"), now);
        assert_eq!(cs[0].message, "short");
    }

    #[test]
    fn types_are_written_by_their_names() {
        let names: Vec<&str> = ConditionType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "Ready",
                "Launched",
                "Drifted",
                "Synced",
                "CmlDegraded",
                "ScalingLimited",
                "Licensed"
            ]
        );
    }
}

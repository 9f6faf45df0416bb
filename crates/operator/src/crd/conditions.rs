//! Helpers for `metav1.Condition` lists in status.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Sets a condition; its transition time moves only when its status changes. A condition that
/// already reads so is left as it is, without allocating (most reconciles change nothing).
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" };
    let mut message: String = message.into();
    // The API server limits messages to 32 KiB; keep them short and readable.
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
    }
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.status = status.to_owned();
                c.last_transition_time = Time(now);
            }
            if c.reason != reason {
                c.reason = reason.to_owned();
            }
            if c.message != message {
                c.message = message;
            }
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

const MAX_MESSAGE_CHARS: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = Timestamp::from_second(1_800_000_100).unwrap();
        let mut cs = Vec::new();
        set(&mut cs, "Ready", false, "Booting", "waiting", Some(1), t0);
        set(
            &mut cs,
            "Ready",
            false,
            "Booting",
            "still waiting",
            Some(1),
            t1,
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, Time(t0));
        assert_eq!(cs[0].message, "still waiting");
        set(&mut cs, "Ready", true, "CmlReady", "ready", Some(2), t1);
        assert_eq!(cs[0].last_transition_time, Time(t1));
        assert!(is_true(&cs, "Ready"));
        assert!(!is_true(&cs, "Launched"));
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut cs = Vec::new();
        set(
            &mut cs,
            "Ready",
            false,
            "Broken",
            "é".repeat(2000),
            None,
            now,
        );
        assert_eq!(cs[0].message, "é".repeat(1024));
        set(&mut cs, "Ready", false, "Broken", "short", None, now);
        assert_eq!(cs[0].message, "short");
    }
}

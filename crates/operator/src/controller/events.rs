//! Events (`events.k8s.io/v1`) on the objects the controller works on. A repeat of the same
//! Event on the same object within a while becomes a count on the first one, as kube's
//! `Recorder` does; unlike it, only a bounded number of recent Events is remembered, so a fleet
//! of thousands of workers neither keeps every Event in memory nor scans them all on each one.

use crate::lock::Locked;
use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent, events::v1::EventSeries},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};

/// An Event as a reconcile decides it, before it is published on an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    pub warning: bool,
    /// A reason from the bounded set in `controller::reasons`.
    pub reason: Cow<'static, str>,
    /// What the controller was doing, e.g. `Reconcile`, `ProbeCml`, `Scale`.
    pub action: &'static str,
    pub note: String,
}

impl EventSpec {
    pub fn normal(
        reason: impl Into<Cow<'static, str>>,
        action: &'static str,
        note: impl Into<String>,
    ) -> EventSpec {
        EventSpec {
            warning: false,
            reason: reason.into(),
            action,
            note: note.into(),
        }
    }

    pub fn warning(
        reason: impl Into<Cow<'static, str>>,
        action: &'static str,
        note: impl Into<String>,
    ) -> EventSpec {
        EventSpec {
            warning: true,
            ..EventSpec::normal(reason, action, note)
        }
    }
}

/// How long an Event is remembered for counting repeats.
const REPEAT_WINDOW: Duration = Duration::from_secs(6 * 60);
/// How many recent Events are remembered at most.
const REMEMBERED: usize = 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    uid: String,
    namespace: String,
    name: String,
    warning: bool,
    reason: String,
    action: String,
    note: String,
}

struct Seen {
    event: String,
    count: i32,
    at: Timestamp,
}

#[derive(Default)]
struct Recent {
    seen: HashMap<Key, Seen>,
    order: VecDeque<Key>,
}

impl Recent {
    fn remember(&mut self, key: Key, seen: Seen) {
        if self.seen.insert(key.clone(), seen).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
    }
}

pub struct EventSink {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<Recent>,
}

impl EventSink {
    pub fn new(client: Client, controller: &str, instance: &str) -> EventSink {
        EventSink {
            client,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            recent: Mutex::new(Recent::default()),
        }
    }

    /// Publishes an Event about `regarding`, or counts a repeat of a recent one.
    pub async fn publish(
        &self,
        regarding: ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let key = Key {
            uid: regarding.uid.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            name: regarding.name.clone().unwrap_or_default(),
            warning,
            reason: reason.to_owned(),
            action: action.to_owned(),
            note: note.clone(),
        };
        let now = Timestamp::now();
        let repeat = {
            let recent = self.recent.locked();
            recent
                .seen
                .get(&key)
                .filter(|s| now.duration_since(s.at).unsigned_abs() < REPEAT_WINDOW)
                .map(|s| (s.event.clone(), s.count + 1))
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let (event, count) = match repeat {
            Some((name, count)) => {
                let series = K8sEvent {
                    series: Some(EventSeries {
                        count,
                        last_observed_time: MicroTime(now),
                    }),
                    ..K8sEvent::default()
                };
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                    .await?;
                (name, count)
            }
            None => {
                let name = format!(
                    "{}.{:016x}",
                    key.name.chars().take(200).collect::<String>(),
                    fastrand::u64(..)
                );
                let event = K8sEvent {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    action: Some(action.to_owned()),
                    reason: Some(reason.to_owned()),
                    note: Some(note),
                    type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding),
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    ..K8sEvent::default()
                };
                api.create(&PostParams::default(), &event).await?;
                (name, 1)
            }
        };
        self.recent.locked().remember(
            key,
            Seen {
                event,
                count,
                at: now,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Key {
        Key {
            uid: format!("uid-{i}"),
            namespace: "ns".into(),
            name: format!("w{i}"),
            warning: false,
            reason: "Launched".into(),
            action: "Reconcile".into(),
            note: "n".into(),
        }
    }

    #[test]
    fn only_a_bounded_number_of_events_is_remembered() {
        let mut recent = Recent::default();
        for i in 0..REMEMBERED + 10 {
            let seen = Seen {
                event: format!("e{i}"),
                count: 1,
                at: Timestamp::now(),
            };
            recent.remember(key(i), seen);
        }
        assert_eq!(recent.seen.len(), REMEMBERED);
        assert_eq!(recent.order.len(), REMEMBERED);
        assert!(!recent.seen.contains_key(&key(0)), "the oldest went first");
        assert!(recent.seen.contains_key(&key(REMEMBERED + 9)));
    }
}

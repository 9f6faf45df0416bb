//! What the WorkerTemplate controller (the autoscaler) keeps for itself, beside what every
//! controller shares.

use std::{collections::HashMap, ops::Deref, sync::Arc, sync::Mutex};

use super::{Expectations, ScalingHistory};
use crate::{controller::Context, expiring::Expiring, lock::Locked};

pub struct TemplateContext {
    shared: Arc<Context>,
    /// Workers created by the autoscaler that the Worker cache does not show yet.
    pub(crate) expectations: Expectations,
    /// Each template's last scale-up and scale-down, as last written.
    pub(crate) scaling_history: ScalingHistory,
    /// Lab instances already reported as unplaceable, per namespace.
    unplaceable: Mutex<HashMap<String, Vec<String>>>,
    /// Why a drain was last held back, per worker, so a repeat is not logged as news.
    pub(crate) drain_refusals: Refusals,
}

impl TemplateContext {
    pub fn new(shared: Arc<Context>) -> TemplateContext {
        TemplateContext {
            shared,
            expectations: Expectations::default(),
            scaling_history: ScalingHistory::default(),
            unplaceable: Mutex::new(HashMap::new()),
            drain_refusals: Refusals::default(),
        }
    }

    /// Whether `ids` differ from what was last reported unplaceable in `namespace` (and
    /// remembers them): one Event per new set, not one per reconcile.
    pub fn unplaceable_is_new(&self, namespace: &str, ids: &[String]) -> bool {
        let mut seen = self.unplaceable.locked();
        let before = seen.insert(namespace.to_owned(), ids.to_vec());
        !ids.is_empty() && before.as_deref() != Some(ids)
    }
}

/// The last answer that held back each worker's drain (forgotten after an hour unrepeated).
pub struct Refusals(Mutex<Expiring<String, String>>);

impl Default for Refusals {
    fn default() -> Self {
        Refusals(Mutex::new(Expiring::new(std::time::Duration::from_secs(
            3600,
        ))))
    }
}

impl Refusals {
    /// Records why the drain of worker `uid` was held back (`None`: it was not) and says
    /// whether that differs from the last time.
    pub fn changed(&self, uid: &str, answer: Option<&str>) -> bool {
        let mut refusals = self.0.locked();
        let key = uid.to_owned();
        let before = refusals.get(&key).cloned();
        match answer {
            Some(a) => refusals.insert(key, a.to_owned()),
            None => refusals.remove(&key),
        }
        before.as_deref() != answer
    }
}

impl Deref for TemplateContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}

#[cfg(test)]
mod tests {
    use super::Refusals;

    #[test]
    fn only_a_new_answer_is_news() {
        let r = Refusals::default();
        assert!(r.changed("w1", Some("(1, 0)")));
        assert!(!r.changed("w1", Some("(1, 0)")));
        assert!(r.changed("w1", Some("(0, 1)")));
        assert!(r.changed("w2", Some("(0, 1)")), "per worker");
        assert!(r.changed("w1", None), "idle again");
        assert!(!r.changed("w1", None));
        assert!(r.changed("w1", Some("(0, 1)")), "held back again is news");
    }
}

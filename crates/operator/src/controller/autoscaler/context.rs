//! What the WorkerTemplate controller (the autoscaler) keeps for itself, beside what every
//! controller shares.

use std::{collections::HashMap, ops::Deref, sync::Arc, sync::Mutex};

use super::{Expectations, ScalingHistory};
use crate::{controller::Context, lock::Locked};

pub struct TemplateContext {
    shared: Arc<Context>,
    /// Workers created by the autoscaler that the Worker cache does not show yet.
    pub(crate) expectations: Expectations,
    /// Each template's last scale-up and scale-down, as last written.
    pub(crate) scaling_history: ScalingHistory,
    /// Lab instances already reported as unplaceable, per namespace.
    unplaceable: Mutex<HashMap<String, Vec<String>>>,
}

impl TemplateContext {
    pub fn new(shared: Arc<Context>) -> TemplateContext {
        TemplateContext {
            shared,
            expectations: Expectations::default(),
            scaling_history: ScalingHistory::default(),
            unplaceable: Mutex::new(HashMap::new()),
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

impl Deref for TemplateContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}

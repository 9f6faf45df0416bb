//! The WorkerTemplates that worker reconciles read, kept by a watch instead of a GET each time.
//!
//! The same watch wakes the workers of a template when what they read from it changes; the
//! reflector updates the cache before the change is passed on, so the woken reconcile already
//! sees the new template.

use crate::lock::Locked;
use std::{
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
};

use futures::Stream;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};

use crate::crd::{
    WorkerTemplate,
    conditions::{self, ConditionType},
};

/// A template's `namespace/name`, as metrics label it.
pub fn template_key(t: &WorkerTemplate) -> String {
    use kube::ResourceExt as _;
    format!("{}/{}", t.namespace().unwrap_or_default(), t.name_any())
}

/// What in a WorkerTemplate its workers read, so what is worth waking them all when it changes:
/// its spec (generation), its deletion, its resolved image and launch spec, and its Ready
/// condition. Not the autoscaler's counts, which change with every worker: waking every worker
/// on each would cost O(workers²) while a fleet comes up.
pub fn template_wakes_workers(template: &WorkerTemplate) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    template.metadata.generation.hash(&mut h);
    template.metadata.deletion_timestamp.is_some().hash(&mut h);
    if let Some(s) = &template.status {
        s.observed_generation.hash(&mut h);
        s.resolved_image_id.hash(&mut h);
        s.launch_spec_hash.hash(&mut h);
        if let Some(c) = conditions::find(&s.conditions, ConditionType::Ready) {
            (&c.status, &c.reason, &c.message).hash(&mut h);
        }
    }
    Some(h.finish())
}

pub struct TemplateCache {
    store: Store<WorkerTemplate>,
    writer: Mutex<Option<Writer<WorkerTemplate>>>,
}

impl Default for TemplateCache {
    fn default() -> Self {
        let (store, writer) = reflector::store();
        TemplateCache {
            store,
            writer: Mutex::new(Some(writer)),
        }
    }
}

impl TemplateCache {
    /// The watch that fills the cache, yielding each template whose workers should look again
    /// (see [`template_wakes_workers`]); whoever polls it keeps
    /// the cache current. There is one per cache: `None` once taken.
    pub fn take_watch(
        &self,
        api: Api<WorkerTemplate>,
    ) -> Option<impl Stream<Item = Result<WorkerTemplate, watcher::Error>> + Send + 'static> {
        let writer = self.writer.locked().take()?;
        Some(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer)
                .touched_objects()
                .predicate_filter(template_wakes_workers, Default::default()),
        )
    }

    /// The template from the cache; on a miss (cache still filling, template just created or
    /// gone) the API server decides.
    pub async fn get(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<WorkerTemplate>>, kube::Error> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(cached) = self.store.get(&key) {
            return Ok(Some(cached));
        }
        Ok(Api::<WorkerTemplate>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(Arc::new))
    }

    /// The template as last watched, without asking the API server.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Arc<WorkerTemplate>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// The templates of a namespace, as last watched.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<WorkerTemplate>> {
        self.store
            .state()
            .into_iter()
            .filter(|t| t.metadata.namespace.as_deref() == Some(namespace))
            .collect()
    }

    /// Every template, as last watched.
    pub fn all(&self) -> Vec<Arc<WorkerTemplate>> {
        self.store.state()
    }

    /// How many templates the cache holds (tests, diagnostics).
    pub fn held(&self) -> usize {
        self.store.state().len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::conditions::{NewCondition, Stamp};

    fn ready_template() -> WorkerTemplate {
        let mut t = crate::crd::fixtures::template(json!({}));
        let mut status = crate::crd::WorkerTemplateStatus {
            observed_generation: Some(1),
            resolved_image_id: Some("ami-1".into()),
            launch_spec_hash: Some("h1".into()),
            ..Default::default()
        };
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time");
        let ready = NewCondition::new(ConditionType::Ready, true, "ImageResolved", "ami-1");
        let stamp = Stamp {
            generation: Some(1),
            now,
        };
        conditions::set(&mut status.conditions, ready, stamp);
        t.status = Some(status);
        t
    }

    #[test]
    fn the_autoscalers_counts_do_not_wake_a_templates_workers_but_what_they_read_does() {
        let before = ready_template();
        let base = template_wakes_workers(&before);

        let mut counted = before.clone();
        let status = counted.status.as_mut().expect("status");
        status.workers = Some(crate::crd::WorkerCounts {
            total: 10_000,
            running: 9_000,
            ..Default::default()
        });
        status.desired_workers = Some(10_000);
        counted.metadata.resource_version = Some("42".into());
        assert_eq!(template_wakes_workers(&counted), base);

        let mut spec = before.clone();
        spec.metadata.generation = Some(2);
        let mut image = before.clone();
        image.status.as_mut().expect("status").resolved_image_id = Some("ami-2".into());
        let mut launch_spec = before.clone();
        launch_spec
            .status
            .as_mut()
            .expect("status")
            .launch_spec_hash = Some("h2".into());
        let mut not_ready = before.clone();
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_100).expect("time");
        conditions::set(
            &mut not_ready.status.as_mut().expect("status").conditions,
            NewCondition::new(ConditionType::Ready, false, "ImageNotFound", "no image"),
            Stamp {
                generation: Some(1),
                now,
            },
        );
        for changed in [spec, image, launch_spec, not_ready] {
            assert_ne!(
                template_wakes_workers(&changed),
                base,
                "{:?}",
                changed.status
            );
        }
    }
}

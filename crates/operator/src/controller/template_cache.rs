//! The WorkerTemplates that worker reconciles read, kept by a watch instead of a GET each time.
//!
//! The same watch wakes the workers of a template when what they read from it changes; the
//! reflector updates the cache before the change is passed on, so the woken reconcile already
//! sees the new template.

use crate::lock::Locked;
use std::sync::{Arc, Mutex};

use futures::Stream;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};

use crate::{controller::worker::template_wakes_workers, crd::WorkerTemplate};

/// A template's `namespace/name`, as metrics label it.
pub fn template_key(t: &WorkerTemplate) -> String {
    use kube::ResourceExt as _;
    format!("{}/{}", t.namespace().unwrap_or_default(), t.name_any())
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

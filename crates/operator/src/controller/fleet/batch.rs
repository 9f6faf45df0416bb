//! Describes by id, coalesced per provider: one call in flight at a time, and the ids asked for
//! while it is in flight go together in the next (up to 1,000 ids a call). Every worker gets an
//! answer no older than its question, and the calls follow the cloud's latency, not the number
//! of workers asking.

use crate::lock::Locked;
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
};

use crate::provider::{CloudProvider, GatheredIds, Instance, Result};

type Answer = Result<HashMap<String, Instance>>;

/// The ids gathering for one provider's next call, and the slot its answer goes to.
struct Gathering {
    ids: HashSet<String>,
    answer: Arc<OnceLock<Answer>>,
}

#[derive(Default)]
pub struct DescribeBatches {
    gathering: Mutex<HashMap<String, Gathering>>,
    /// Held by whoever sends a provider's call.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl DescribeBatches {
    /// The instance `id` of `provider` (named `key`) as the cloud describes it now; `None` when
    /// the cloud does not know it.
    pub async fn describe(
        &self,
        key: &str,
        provider: &dyn CloudProvider,
        id: &str,
    ) -> Result<Option<Instance>> {
        let answer = {
            let mut gathering = self.gathering.locked();
            let batch = gathering
                .entry(key.to_owned())
                .or_insert_with(|| Gathering {
                    ids: HashSet::new(),
                    answer: Arc::new(OnceLock::new()),
                });
            batch.ids.insert(id.to_owned());
            batch.answer.clone()
        };
        let flight = self
            .in_flight
            .locked()
            .entry(key.to_owned())
            .or_default()
            .clone();
        let _flight = flight.lock().await;
        let described = match answer.get() {
            Some(described) => described,
            None => {
                // The first to hold the flight while the batch is unsent sends it, with every id
                // asked for until the call may go.
                let mut alone = false;
                let take: GatheredIds<'_> = Box::new(|| {
                    let mut gathering = self.gathering.locked();
                    let ours = gathering
                        .get(key)
                        .is_some_and(|b| Arc::ptr_eq(&b.answer, &answer));
                    match ours.then(|| gathering.remove(key)).flatten() {
                        Some(batch) => batch.ids.into_iter().collect(),
                        None => {
                            // Its sender gave up before answering (a cancelled reconcile).
                            alone = true;
                            vec![id.to_owned()]
                        }
                    }
                });
                let instances = provider.describe_gathered(take).await;
                if alone {
                    return Ok(instances?.pop());
                }
                let instances = instances.map(|instances| {
                    instances
                        .into_iter()
                        .map(|i| (i.id.clone(), i))
                        .collect::<HashMap<_, _>>()
                });
                answer.get_or_init(|| instances)
            }
        };
        match described {
            Ok(instances) => Ok(instances.get(id).cloned()),
            Err(e) => Err(e.clone()),
        }
    }
}

//! The license seat budget (`--license-seats PRODUCT=N`): most workers of a CML product that may
//! hold a seat (registered, registering, giving it back, or possibly still holding it) at once.
//! Workers are counted from the Worker cache; a seat just granted is remembered here until the
//! cache shows the worker's status claiming it, so two reconciles never both take the last one.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Mutex,
    time::Duration,
};

use kube::ResourceExt;
use tokio::time::Instant;

use super::template_cache::TemplateCache;
use crate::{
    crd::{SeatState, Worker, WorkerPhase, WorkerTemplate},
    lock::Locked,
};

/// How long a granted seat is remembered while the cache catches up with the worker's status.
const GRANT_MEMORY: Duration = Duration::from_secs(60);

/// Parses `PRODUCT=N[,PRODUCT=N]`.
pub fn parse_budget(text: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut budget = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (product, count) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?}: expected PRODUCT=N, e.g. CML_Enterprise=10"))?;
        let product = product.trim();
        if product.is_empty()
            || !product
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!("{product:?} is not a CML product license name"));
        }
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|e| format!("{entry:?}: the seat count is not a number ({e})"))?;
        if budget.insert(product.to_owned(), count).is_some() {
            return Err(format!("{product} is given twice"));
        }
    }
    Ok(budget)
}

/// Seats of one product: the budget and what is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeatUse {
    pub limit: u32,
    pub in_use: u32,
}

impl SeatUse {
    pub fn available(self) -> u32 {
        self.limit.saturating_sub(self.in_use)
    }
}

pub struct SeatBudget {
    limits: BTreeMap<String, u32>,
    /// Seats granted but maybe not in the cache yet: worker UID -> (product, when).
    granted: Mutex<HashMap<String, (String, Instant)>>,
}

/// The product a worker's seat is of, when its template manages licenses.
pub fn product_of(worker: &Worker, templates: &TemplateCache) -> Option<String> {
    let template = templates.cached(
        &worker.namespace().unwrap_or_default(),
        &worker.spec.template_ref.name,
    )?;
    template_product(&template)
}

/// The product a template's workers register as, when it manages licenses.
pub fn template_product(template: &WorkerTemplate) -> Option<String> {
    let licensing = template.spec.licensing.as_ref()?;
    Some(licensing.product(template.spec.license_type))
}

fn seat(worker: &Worker) -> SeatState {
    worker
        .status
        .as_ref()
        .and_then(|s| s.license.as_ref())
        .map(|l| l.seat)
        .unwrap_or_default()
}

/// Up and on its way to a seat: it will register once CML is ready.
fn will_register(worker: &Worker) -> bool {
    let phase = worker.status.as_ref().and_then(|s| s.phase);
    let down = matches!(
        phase,
        Some(WorkerPhase::Stopped | WorkerPhase::Stopping | WorkerPhase::Failed)
    ) && worker.spec.desired_state != crate::crd::DesiredState::Running;
    worker.metadata.deletion_timestamp.is_none() && !down && phase != Some(WorkerPhase::Failed)
}

impl SeatBudget {
    pub fn new(limits: BTreeMap<String, u32>) -> SeatBudget {
        SeatBudget {
            limits,
            granted: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self, product: &str) -> Option<u32> {
        self.limits.get(product).copied()
    }

    /// UIDs of the workers of `product` whose status claims a seat, plus recent grants.
    fn holders(
        &self,
        product: &str,
        workers: &[&Worker],
        templates: &TemplateCache,
    ) -> BTreeSet<String> {
        let mut holders: BTreeSet<String> = workers
            .iter()
            .filter(|w| seat(w).counts())
            .filter(|w| product_of(w, templates).as_deref() == Some(product))
            .filter_map(|w| w.uid())
            .collect();
        let mut granted = self.granted.locked();
        granted.retain(|_, (_, at)| at.elapsed() < GRANT_MEMORY);
        holders.extend(
            granted
                .iter()
                .filter(|(_, (p, _))| p == product)
                .map(|(uid, _)| uid.clone()),
        );
        holders
    }

    /// Whether the worker `uid` may take a seat of `product` now; a grant is remembered.
    pub fn permit(
        &self,
        uid: &str,
        product: &str,
        workers: &[&Worker],
        templates: &TemplateCache,
    ) -> bool {
        let Some(limit) = self.limit(product) else {
            return true;
        };
        let holders = self.holders(product, workers, templates);
        if holders.contains(uid) {
            return true;
        }
        if holders.len() as u64 >= u64::from(limit) {
            return false;
        }
        self.granted
            .locked()
            .insert(uid.to_owned(), (product.to_owned(), Instant::now()));
        true
    }

    /// Forgets a grant: the worker's seat is free, or the worker is gone.
    pub fn release(&self, uid: &str) {
        self.granted.locked().remove(uid);
    }

    /// The seats of `product` in use, counting workers up that will register, for the
    /// autoscaler; `None` without a budget for it.
    pub fn usage(
        &self,
        product: &str,
        workers: &[&Worker],
        templates: &TemplateCache,
    ) -> Option<SeatUse> {
        let limit = self.limit(product)?;
        let mut in_use = self.holders(product, workers, templates);
        in_use.extend(
            workers
                .iter()
                .filter(|w| will_register(w))
                .filter(|w| product_of(w, templates).as_deref() == Some(product))
                .filter_map(|w| w.uid()),
        );
        Some(SeatUse {
            limit,
            in_use: in_use.len() as u32,
        })
    }

    /// Workers with a seat that counts, by product and state, for the metrics.
    pub fn by_state(workers: &[&Worker]) -> BTreeMap<(String, &'static str), u32> {
        let mut counts = BTreeMap::new();
        for w in workers {
            let license = w.status.as_ref().and_then(|s| s.license.as_ref());
            let Some(license) = license.filter(|l| l.seat.counts()) else {
                continue;
            };
            let product = license.product.clone().unwrap_or_else(|| "unknown".into());
            *counts.entry((product, license.seat.as_str())).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_parses_from_product_equals_count_pairs() {
        let budget = parse_budget("CML_Enterprise=10, CML_Personal=2").expect("parses");
        assert_eq!(budget.get("CML_Enterprise"), Some(&10));
        assert_eq!(budget.get("CML_Personal"), Some(&2));
        assert!(parse_budget("").expect("empty").is_empty());
        for bad in [
            "CML_Enterprise",
            "CML_Enterprise=x",
            "=3",
            "a b=1",
            "A=1,A=2",
        ] {
            assert!(parse_budget(bad).is_err(), "{bad}");
        }
    }
}

//! The license seat budget (`--license-seats PRODUCT=N`): most workers of a CML product that may
//! hold a seat (registered, registering, giving it back, or possibly still holding it) at once.
//! Workers are counted from the Worker cache, plus the seats just granted (`Grants`).

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use super::{grants::Grants, template_cache::TemplateCache};
use crate::crd::{SeatState, Worker, WorkerPhase, WorkerTemplate};

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
    /// Seats granted but maybe not in the cache yet, by product.
    granted: Grants,
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
    let parked = matches!(phase, Some(WorkerPhase::Stopped | WorkerPhase::Stopping))
        && worker.spec.desired_state != crate::crd::DesiredState::Running;
    worker.metadata.deletion_timestamp.is_none() && !parked && phase != Some(WorkerPhase::Failed)
}

impl SeatBudget {
    pub fn new(limits: BTreeMap<String, u32>) -> SeatBudget {
        SeatBudget {
            limits,
            granted: Grants::default(),
        }
    }

    pub fn limit(&self, product: &str) -> Option<u32> {
        self.limits.get(product).copied()
    }

    /// UIDs of the workers of `product` whose status claims a seat, as the cache shows them.
    fn claiming(product: &str, workers: &[&Worker], templates: &TemplateCache) -> BTreeSet<String> {
        workers
            .iter()
            .filter(|w| seat(w).counts())
            .filter(|w| product_of(w, templates).as_deref() == Some(product))
            .filter_map(|w| w.uid())
            .collect()
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
        let seen = Self::claiming(product, workers, templates);
        self.granted.grant(product, uid, seen, limit).is_ok()
    }

    /// Forgets a grant: the worker's seat is free, or the worker is gone.
    pub fn release(&self, uid: &str) {
        self.granted.release(uid);
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
        let mut in_use = Self::claiming(product, workers, templates);
        in_use.extend(self.granted.pending(product));
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

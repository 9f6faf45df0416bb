//! An operator at the keyboard: hand-made Workers created, stopped, started and deleted with
//! the API while everything else goes on. A call the API server refuses (it may be restarting)
//! is simply made again at a later turn.

use kube::{
    ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use resource_controller::crd::Worker;
use serde_json::json;

use super::world::{BY_HAND, World};

const MOST: usize = 3;

#[derive(Default)]
pub struct ByHand {
    next: u32,
    /// Calls the API server answered, by kind.
    pub created: u32,
    pub stopped: u32,
    pub started: u32,
    pub deleted: u32,
}

impl ByHand {
    /// One action on the hand-made workers, chosen by `rng`.
    pub async fn act(&mut self, world: &World, rng: &mut fastrand::Rng) {
        let Some(workers) = world.list_workers().await else {
            return;
        };
        let mine: Vec<&Worker> = workers
            .iter()
            .filter(|w| w.spec.template_ref.name == BY_HAND)
            .filter(|w| w.metadata.deletion_timestamp.is_none())
            .collect();
        let api = world.workers();
        let action = if mine.is_empty() { 0 } else { rng.u8(0..4) };
        match action {
            0 if mine.len() < MOST => {
                self.next += 1;
                let w: Worker = serde_json::from_value(json!({
                    "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
                    "metadata": {"name": format!("by-hand-{}", self.next)},
                    "spec": {"templateRef": {"name": BY_HAND}}
                }))
                .expect("worker");
                if api.create(&PostParams::default(), &w).await.is_ok() {
                    self.created += 1;
                }
            }
            1 | 2 if !mine.is_empty() => {
                let w = mine[rng.usize(..mine.len())];
                let (state, count) = if rng.bool() {
                    ("Stopped", &mut self.stopped)
                } else {
                    ("Running", &mut self.started)
                };
                let patch = Patch::Merge(json!({"spec": {"desiredState": state}}));
                if api
                    .patch(&w.name_any(), &PatchParams::default(), &patch)
                    .await
                    .is_ok()
                {
                    *count += 1;
                }
            }
            3 if !mine.is_empty() => {
                let w = mine[rng.usize(..mine.len())];
                if api
                    .delete(&w.name_any(), &DeleteParams::default())
                    .await
                    .is_ok()
                {
                    self.deleted += 1;
                }
            }
            _ => {}
        }
    }
}

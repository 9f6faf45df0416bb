//! Waiting on Worker objects in tests.

use std::time::Duration;

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use resource_controller::crd::{Worker, conditions};

pub const WAIT: Duration = Duration::from_secs(60);

/// Polls the worker until `done` holds; panics with its last status otherwise.
pub async fn wait_for(
    api: &Api<Worker>,
    name: &str,
    what: &str,
    done: impl Fn(&Worker) -> bool,
) -> Worker {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let w = api.get_opt(name).await.expect("get worker");
        if let Some(w) = &w
            && done(w)
        {
            return w.clone();
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "worker {name} never became {what}; last seen: {:#?}",
                w.and_then(|w| w.status)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until the worker object is gone.
pub async fn wait_gone(api: &Api<Worker>, name: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while api.get_opt(name).await.expect("get worker").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker {name} never went away"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets `spec.desiredState`.
pub async fn set_desired(api: &Api<Worker>, name: &str, state: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"desiredState": state}})),
    )
    .await
    .expect("patch desiredState");
}

/// The message of the worker's Ready condition.
pub fn ready_message(w: &Worker) -> String {
    w.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

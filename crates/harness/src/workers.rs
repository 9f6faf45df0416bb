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
        .and_then(|s| conditions::find(&s.conditions, conditions::ConditionType::Ready))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Creates template `sim` on the simulated provider in `namespace`, with `scaling`.
pub async fn simulated_template(
    client: &kube::Client,
    namespace: &str,
    scaling: serde_json::Value,
) {
    let template: resource_controller::crd::WorkerTemplate =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate", "metadata": {"name": "sim"},
            "spec": {
                "provider": "simulated", "instanceType": "m5zn.metal",
                "image": {"namePattern": "CML-2.9.*"},
                "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": 20},
                "licenseType": "Personal", "scaling": scaling
            }
        }))
        .expect("template");
    Api::<resource_controller::crd::WorkerTemplate>::namespaced(client.clone(), namespace)
        .create(&kube::api::PostParams::default(), &template)
        .await
        .expect("create template");
}

/// Creates Workers of `template` named `names`, `concurrency` requests at a time.
pub async fn create_workers(
    api: &Api<Worker>,
    template: &str,
    names: Vec<String>,
    concurrency: usize,
) {
    use futures::StreamExt;
    futures::stream::iter(names)
        .for_each_concurrent(concurrency, |name| async move {
            let w: Worker = serde_json::from_value(serde_json::json!({
                "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
                "metadata": {"name": name}, "spec": {"templateRef": {"name": template}}
            }))
            .expect("worker");
            api.create(&kube::api::PostParams::default(), &w)
                .await
                .expect("create worker");
        })
        .await;
}

/// `n` worker names, `w00000` on.
pub fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i:05}")).collect()
}

//! What both reconcilers share: writing a status and the error policy.

use std::{sync::Arc, time::Duration};

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde::Serialize;
use serde_json::json;
use tracing::warn;

use super::{CONTROLLER_NAME, Context, error::Error};

/// `status` as the API server will store it (times at whole seconds), so that comparing it with
/// the stored one tells a real change from a clock that moved by less than a second.
pub fn as_stored<S: Serialize + serde::de::DeserializeOwned>(status: S) -> S {
    serde_json::to_value(&status)
        .and_then(serde_json::from_value)
        .unwrap_or(status)
}

/// Writes the whole status with server-side apply, so fields left out are removed.
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(CONTROLLER_NAME).force(),
        &Patch::Apply(patch),
    )
    .await
    .map(drop)
}

/// Permanent errors wait for a change of the object; transient ones back off per object.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    obj: Arc<K>,
    error: &Error,
    ctx: &Context,
) -> Action {
    retry_after(controller, obj.as_ref(), error, ctx)
        .map_or_else(Action::await_change, Action::requeue)
}

/// Logs a failed reconcile and says when to retry it: after the object's next backoff, or
/// (`None`) once it changes, for an error that retrying without a change will not cure.
pub fn retry_after<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    obj: &K,
    error: &Error,
    ctx: &Context,
) -> Option<Duration> {
    let _span = super::reconcile_span(controller, obj).entered();
    warn!(category = error.category(), %error, "reconcile failed");
    (!error.is_permanent()).then(|| {
        ctx.next_backoff(&obj.uid().unwrap_or_default())
            .max(Duration::from_millis(100))
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    use super::as_stored;
    use crate::crd::WorkerStatus;

    #[test]
    fn a_status_is_compared_as_the_api_server_stores_it() {
        let at = Timestamp::new(1_700_000_000, 123_456_789).expect("time");
        let fresh = WorkerStatus {
            drain_started_at: Some(Time(at)),
            ..WorkerStatus::default()
        };
        let stored = as_stored(fresh.clone());
        assert_ne!(stored, fresh, "sub-second precision is not stored");
        assert_eq!(
            as_stored(stored.clone()),
            stored,
            "stored once, stable after"
        );
    }
}

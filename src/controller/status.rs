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
    ctx: Arc<Context>,
) -> Action {
    let _span = super::reconcile_span(controller, obj.as_ref()).entered();
    warn!(category = error.category(), %error, "reconcile failed");
    if error.is_permanent() {
        Action::await_change()
    } else {
        Action::requeue(
            ctx.next_backoff(&obj.uid().unwrap_or_default())
                .max(Duration::from_millis(100)),
        )
    }
}

//! The template's image: resolved from the cloud (act), shown in status as `Ready` with the
//! resolved image and the launch spec its workers compare with (pure), and told as an Event.
//! A failure makes the template not Ready and blocks creations only: the autoscaler's round
//! goes on.

use k8s_openapi::jiff::Timestamp;

use crate::{
    controller::{
        error::{Error, Result},
        events::EventSpec,
        reasons,
    },
    crd::{
        WorkerTemplate, WorkerTemplateStatus,
        conditions::{self, ConditionType, NewCondition, Stamp},
    },
    planner::Creation,
    provider::{self, CloudProvider, Image, ProviderRegistry},
};

/// Looks the template's image up (the provider caches what it found).
pub async fn resolve(template: &WorkerTemplate, providers: &ProviderRegistry) -> Result<Image> {
    let spec = &template.spec;
    // The API server's validation guarantees one of id / namePattern.
    let query = provider::image_query(spec)
        .ok_or_else(|| Error::Invalid("image has neither id nor namePattern".into()))?;
    let provider = providers.get(spec.provider, spec.region.as_deref()).await?;
    Ok(provider.resolve_image(&query).await?)
}

/// `status` with the image's outcome: on success the resolved image and launch spec hash and
/// `Ready=True`; on failure `Ready=False` with the error, keeping the last resolved image (its
/// workers stay as they are).
pub fn status(
    mut status: WorkerTemplateStatus,
    template: &WorkerTemplate,
    image: &Result<Image>,
    now: Timestamp,
) -> WorkerTemplateStatus {
    let ready = match image {
        Ok(image) => {
            status.resolved_image_id = Some(image.id.clone());
            status.launch_spec_hash = Some(provider::launch_spec(&template.spec, image).hash());
            NewCondition::new(
                ConditionType::Ready,
                true,
                reasons::IMAGE_RESOLVED,
                described(image),
            )
        }
        Err(error) => NewCondition::new(
            ConditionType::Ready,
            false,
            error.category(),
            error.to_string(),
        ),
    };
    let stamp = Stamp {
        generation: template.metadata.generation,
        now,
    };
    conditions::set(&mut status.conditions, ready, stamp);
    status
}

/// Whether the autoscaler may create workers: only with a resolved image.
pub fn creation(image: &Result<Image>) -> Creation {
    match image {
        Ok(_) => Creation::Allowed,
        Err(error) => Creation::Blocked(format!("image unresolved: {error}")),
    }
}

/// The Event the outcome is worth, if any: a newly resolved image, or every failure.
pub fn event(was_ready: bool, image: &Result<Image>) -> Option<EventSpec> {
    match image {
        Ok(_) if was_ready => None,
        Ok(image) => Some(EventSpec::normal(
            reasons::IMAGE_RESOLVED,
            "ResolveImage",
            described(image),
        )),
        Err(error) => Some(EventSpec::warning(
            error.category(),
            "ResolveImage",
            error.to_string(),
        )),
    }
}

fn described(image: &Image) -> String {
    let name = image.name.as_deref().unwrap_or(&image.id);
    format!("image {} ({name})", image.id)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::provider::{ErrorKind, ProviderError};

    fn template() -> WorkerTemplate {
        crate::crd::fixtures::template(json!({
            "metadata": {"generation": 3},
            "spec": {"image": {"id": null, "namePattern": "CML-2.9.*"}}
        }))
    }

    fn found(id: &str) -> Result<Image> {
        Ok(Image {
            id: id.into(),
            name: Some("CML-2.9.1".into()),
            creation_date: None,
            root_device_name: None,
        })
    }

    fn failed(kind: ErrorKind) -> Result<Image> {
        Err(ProviderError::new(kind, "DescribeImages", "no image matches CML-2.9.*").into())
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("time")
    }

    #[test]
    fn the_image_outcome_sets_ready_and_keeps_the_last_image_on_failure() {
        let t = template();
        let resolved = status(WorkerTemplateStatus::default(), &t, &found("ami-1"), now());
        let ready = conditions::find(&resolved.conditions, ConditionType::Ready).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "ImageResolved")
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(resolved.resolved_image_id.as_deref(), Some("ami-1"));
        let hash = resolved.launch_spec_hash.clone().expect("a launch spec");

        // (row, outcome, Ready reason)
        let table = [
            ("not found", failed(ErrorKind::NotFound), "CloudNotFound"),
            ("throttled", failed(ErrorKind::Throttled), "CloudThrottled"),
            (
                "access denied",
                failed(ErrorKind::Unauthorized),
                "CloudUnauthorized",
            ),
        ];
        for (row, outcome, reason) in table {
            let next = status(resolved.clone(), &t, &outcome, now());
            let ready = conditions::find(&next.conditions, ConditionType::Ready).expect("Ready");
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", reason),
                "{row}"
            );
            assert!(ready.message.contains("no image matches"), "{row}");
            assert_eq!(next.resolved_image_id.as_deref(), Some("ami-1"), "{row}");
            assert_eq!(next.launch_spec_hash.as_ref(), Some(&hash), "{row}");
            assert_eq!(
                creation(&outcome),
                Creation::Blocked(format!(
                    "image unresolved: {}",
                    outcome.as_ref().expect_err("an error")
                )),
                "{row}"
            );
        }
        let newer = status(resolved.clone(), &t, &found("ami-2"), now());
        assert_eq!(newer.resolved_image_id.as_deref(), Some("ami-2"));
        assert_ne!(
            newer.launch_spec_hash,
            Some(hash),
            "a new image is a new launch spec"
        );
        assert_eq!(creation(&found("ami-2")), Creation::Allowed);
    }

    #[test]
    fn a_resolved_image_is_told_once_and_every_failure_each_time() {
        // (row, was ready, outcome, the Event's reason and whether it warns)
        let table = [
            (
                "newly resolved",
                false,
                found("ami-1"),
                Some(("ImageResolved", false)),
            ),
            ("still resolved", true, found("ami-1"), None),
            (
                "failed after ready",
                true,
                failed(ErrorKind::NotFound),
                Some(("CloudNotFound", true)),
            ),
            (
                "failing again",
                false,
                failed(ErrorKind::Transient),
                Some(("CloudTransient", true)),
            ),
        ];
        for (row, was_ready, outcome, expected) in table {
            let told = event(was_ready, &outcome);
            let told = told.as_ref().map(|e| (e.reason.as_ref(), e.warning));
            assert_eq!(told, expected, "{row}");
        }
    }
}

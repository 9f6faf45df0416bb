//! What a WorkerTemplate asks of the cloud, in the cloud's values.

use super::{DEFAULT_ROOT_DEVICE, Image, ImageQuery, LaunchSpec, MetadataOptions};
use crate::crd::{HttpTokens, WorkerTemplateSpec};

/// Whose images a name pattern searches when the template names no owner: this account's.
pub const SELF_OWNER: &str = "self";

/// The image query of a template's image selector; `None` when it names no image.
pub fn image_query(spec: &WorkerTemplateSpec) -> Option<ImageQuery> {
    match (&spec.image.id, &spec.image.name_pattern) {
        (Some(id), _) => Some(ImageQuery::Id(id.clone())),
        (None, Some(pattern)) => Some(ImageQuery::NamePattern {
            pattern: pattern.clone(),
            owners: if spec.image.owners.is_empty() {
                vec![SELF_OWNER.to_owned()]
            } else {
                spec.image.owners.clone()
            },
        }),
        (None, None) => None,
    }
}

/// Everything that shapes an instance launched from `spec` with its resolved `image`.
pub fn launch_spec(spec: &WorkerTemplateSpec, image: &Image) -> LaunchSpec {
    let volume_type = serde_json::to_value(spec.root_volume.volume_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "gp3".to_owned());
    LaunchSpec {
        image_id: image.id.clone(),
        root_device_name: image
            .root_device_name
            .clone()
            .unwrap_or_else(|| DEFAULT_ROOT_DEVICE.to_owned()),
        instance_types: std::iter::once(spec.instance_type.clone())
            .chain(spec.fallback_instance_types.iter().cloned())
            .collect(),
        subnet_ids: spec.subnet_ids.clone(),
        security_group_ids: spec.security_group_ids.clone(),
        key_name: spec.key_name.clone(),
        iam_instance_profile: spec.iam_instance_profile.clone(),
        root_volume_gib: spec.root_volume.size_gib,
        root_volume_type: volume_type,
        user_data: spec.user_data.clone(),
        extra_tags: spec.tags.clone(),
        metadata: MetadataOptions {
            tokens_required: spec.metadata_options.http_tokens == HttpTokens::Required,
            hop_limit: spec.metadata_options.http_put_response_hop_limit,
            tags: spec.metadata_options.instance_metadata_tags,
        },
        kms_key_id: spec.root_volume.kms_key_id.clone(),
        public_ip: spec.associate_public_ip_address,
    }
}

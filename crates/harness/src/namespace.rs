//! Throwaway namespaces: one per test, so tests never see each other's objects.

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};

use super::process::random_hex;

pub struct TestNamespace {
    pub name: String,
    client: kube::Client,
}

impl TestNamespace {
    /// Creates `t-<prefix>-<random>`, labelled so leftovers can be found.
    pub async fn create(client: &kube::Client, prefix: &str) -> TestNamespace {
        let name = format!("t-{prefix}-{}", random_hex(6));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"ccm.dev/test": "true"}}
        }))
        .expect("namespace object");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        TestNamespace {
            name,
            client: client.clone(),
        }
    }

    /// Deletes the namespace; the control plane has no namespace controller, so objects in it
    /// stay until the scratch etcd is thrown away, which is fine for a test.
    pub async fn delete(self) {
        let _ = Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::background())
            .await;
    }
}

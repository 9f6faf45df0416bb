//! Secrets that CML probes need (credentials, CA bundles), read with GET and kept for a short
//! while: every probe of every worker needs them, and the controller may not list or watch
//! Secrets (least privilege).

use crate::lock::Locked;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::time::Instant;

use super::error::{Error, Result};
use crate::cml::CmlCredentials;

type Data = Arc<BTreeMap<String, Vec<u8>>>;

/// The label a Secret must carry for the controller to use it (CML credentials, a CA, a license
/// token): a template's author can name any Secret of the namespace, so the Secret's owner says
/// yes by labelling it. Without it the credentials would go to whatever instance the template
/// launches.
pub const CONSENT_LABEL: &str = "ccm.dev/usage";
/// The value of [`CONSENT_LABEL`] that consents.
pub const CONSENT_VALUE: &str = "cml";

pub struct SecretCache {
    ttl: Duration,
    entries: Mutex<HashMap<(String, String), (Instant, Data)>>,
}

impl SecretCache {
    pub fn new(ttl: Duration) -> SecretCache {
        SecretCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Drops a Secret, so the next read sees a rotation at once (e.g. after CML refused the
    /// credentials).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_owned(), name.to_owned()));
    }

    pub async fn credentials(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<CmlCredentials> {
        let data = self.data(client, namespace, name).await?;
        Ok(CmlCredentials {
            username: text(&data, namespace, name, "username")?,
            password: text(&data, namespace, name, "password")?,
        })
    }

    pub async fn key(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Vec<u8>> {
        let data = self.data(client, namespace, name).await?;
        bytes(&data, namespace, name, key).map(<[u8]>::to_vec)
    }

    async fn data(&self, client: &Client, namespace: &str, name: &str) -> Result<Data> {
        self.data_with(namespace, name, || async {
            let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .ok_or_else(|| secret_error(namespace, name, "not found".into()))?;
            consented(&secret, namespace, name)?;
            Ok(secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect())
        })
        .await
    }

    /// A fresh cached copy, or what `fetch` reads (failures are not kept).
    async fn data_with<F, Fut>(&self, namespace: &str, name: &str, fetch: F) -> Result<Data>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<BTreeMap<String, Vec<u8>>>>,
    {
        let key = (namespace.to_owned(), name.to_owned());
        let now = Instant::now();
        if let Some((at, data)) = self.lock().get(&key)
            && now.duration_since(*at) < self.ttl
        {
            return Ok(data.clone());
        }
        let data = Arc::new(fetch().await?);
        let mut entries = self.lock();
        entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        entries.insert(key, (now, data.clone()));
        Ok(data)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Instant, Data)>> {
        self.entries.locked()
    }
}

/// Whether the Secret carries the consent label; the error says how to give it.
fn consented(secret: &Secret, namespace: &str, name: &str) -> Result<()> {
    let label = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONSENT_LABEL));
    if label.map(String::as_str) == Some(CONSENT_VALUE) {
        return Ok(());
    }
    Err(secret_error(
        namespace,
        name,
        format!(
            "lacks the label {CONSENT_LABEL}={CONSENT_VALUE}, so the controller does not use it \
             (consent: kubectl -n {namespace} label secret {name} {CONSENT_LABEL}={CONSENT_VALUE})"
        ),
    ))
}

fn secret_error(namespace: &str, name: &str, message: String) -> Error {
    Error::Secret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        message,
    }
}

fn bytes<'a>(data: &'a Data, namespace: &str, name: &str, key: &str) -> Result<&'a [u8]> {
    data.get(key)
        .map(Vec::as_slice)
        .ok_or_else(|| secret_error(namespace, name, format!("has no key {key:?}")))
}

fn text(data: &Data, namespace: &str, name: &str, key: &str) -> Result<String> {
    String::from_utf8(bytes(data, namespace, name, key)?.to_vec())
        .map_err(|_| secret_error(namespace, name, format!("key {key:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn secret(password: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("username".to_owned(), b"admin".to_vec()),
            ("password".to_owned(), password.as_bytes().to_vec()),
        ])
    }

    async fn read(cache: &SecretCache, reads: &AtomicU32, password: &str) -> Data {
        cache
            .data_with("ns", "cml-admin", || async {
                reads.fetch_add(1, Ordering::Relaxed);
                Ok(secret(password))
            })
            .await
            .expect("read")
    }

    #[tokio::test(start_paused = true)]
    async fn reads_are_served_from_the_cache_until_the_ttl_passes() {
        let cache = SecretCache::new(Duration::from_secs(60));
        let reads = AtomicU32::new(0);
        for _ in 0..10 {
            read(&cache, &reads, "one").await;
        }
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        let data = read(&cache, &reads, "two").await;
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        assert_eq!(
            text(&data, "ns", "cml-admin", "password").expect("text"),
            "two"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forgetting_a_secret_reads_it_again() {
        let cache = SecretCache::new(Duration::from_secs(60));
        let reads = AtomicU32::new(0);
        read(&cache, &reads, "old").await;
        cache.forget("ns", "cml-admin");
        let data = read(&cache, &reads, "rotated").await;
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        assert_eq!(
            text(&data, "ns", "cml-admin", "password").expect("text"),
            "rotated"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_not_kept() {
        let cache = SecretCache::new(Duration::from_secs(60));
        let failed = cache
            .data_with("ns", "cml-admin", || async {
                Err(secret_error("ns", "cml-admin", "not found".into()))
            })
            .await;
        assert!(failed.is_err());
        let reads = AtomicU32::new(0);
        read(&cache, &reads, "created").await;
        assert_eq!(reads.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn only_a_secret_labelled_for_the_controller_is_used() {
        let mut secret = Secret::default();
        let e = consented(&secret, "ns", "cml-admin").expect_err("no label");
        assert!(e.to_string().contains("ccm.dev/usage=cml"), "{e}");
        secret.metadata.labels = Some(BTreeMap::from([(
            CONSENT_LABEL.to_owned(),
            "something-else".to_owned(),
        )]));
        assert!(consented(&secret, "ns", "cml-admin").is_err());
        secret.metadata.labels = Some(BTreeMap::from([(
            CONSENT_LABEL.to_owned(),
            CONSENT_VALUE.to_owned(),
        )]));
        assert!(consented(&secret, "ns", "cml-admin").is_ok());
    }

    #[test]
    fn missing_keys_name_the_secret_and_key() {
        let data: Data = Arc::new(secret("x"));
        let e = bytes(&data, "ns", "cml-admin", "ca.crt").expect_err("no such key");
        assert_eq!(e.to_string(), r#"secret ns/cml-admin: has no key "ca.crt""#);
    }
}

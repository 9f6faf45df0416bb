//! Reconcile errors with a bounded category, used for Event reasons, metric labels and the
//! error policy (permanent errors wait for a change; transient ones back off per object).

use crate::provider::{ErrorKind, ProviderError, ProviderUnavailable};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cloud: {0}")]
    Cloud(#[from] ProviderError),
    #[error("secret {namespace}/{name}: {message}")]
    Secret {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("invalid object: {0}")]
    Invalid(String),
    #[error(transparent)]
    ProviderUnavailable(#[from] ProviderUnavailable),
    #[error("{0}")]
    NotOwned(String),
}

impl Error {
    /// A bounded label: an Event reason and a metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesError",
            Error::Cloud(e) => match e.kind {
                ErrorKind::Throttled => "CloudThrottled",
                ErrorKind::InsufficientCapacity => "CloudInsufficientCapacity",
                ErrorKind::NotFound => "CloudNotFound",
                ErrorKind::InvalidRequest => "CloudInvalidRequest",
                ErrorKind::Unauthorized => "CloudUnauthorized",
                ErrorKind::Transient => "CloudTransient",
            },
            Error::Secret { .. } => "SecretError",
            Error::Invalid(_) => "InvalidObject",
            Error::ProviderUnavailable(_) => "ProviderUnavailable",
            Error::NotOwned(_) => "InstanceNotOwned",
        }
    }

    /// Retrying without a change to the object (or the world) will not help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Cloud(e) => !e.kind.is_retryable(),
            Error::Invalid(_) | Error::ProviderUnavailable(_) | Error::NotOwned(_) => true,
            Error::Kube(_) | Error::Secret { .. } => false,
        }
    }
}

/// Every value [`Error::category`] can take.
pub const CATEGORIES: [&str; 11] = [
    "KubernetesError",
    "CloudThrottled",
    "CloudInsufficientCapacity",
    "CloudNotFound",
    "CloudInvalidRequest",
    "CloudUnauthorized",
    "CloudTransient",
    "SecretError",
    "InvalidObject",
    "ProviderUnavailable",
    "InstanceNotOwned",
];

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_is_listed() {
        let mut errors: Vec<Error> = ErrorKind::ALL
            .iter()
            .map(|k| Error::from(ProviderError::new(*k, "RunInstances", "x")))
            .collect();
        errors.push(Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded));
        errors.push(Error::Invalid("x".into()));
        errors.push(Error::NotOwned("x".into()));
        errors.push(Error::Secret {
            namespace: "n".into(),
            name: "s".into(),
            message: "m".into(),
        });
        for e in errors {
            assert!(CATEGORIES.contains(&e.category()), "{}", e.category());
        }
    }

    #[test]
    fn cloud_errors_keep_their_kind() {
        let e = Error::from(ProviderError::new(
            ErrorKind::Unauthorized,
            "RunInstances",
            "bad key",
        ));
        assert_eq!(e.category(), "CloudUnauthorized");
        assert!(e.is_permanent());
        let e = Error::from(ProviderError::new(
            ErrorKind::InsufficientCapacity,
            "RunInstances",
            "none",
        ));
        assert!(!e.is_permanent());
    }
}

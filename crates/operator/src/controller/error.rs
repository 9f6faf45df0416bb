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

/// The bounded category of an [`Error`]: an Event and condition reason, and a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::VariantArray, strum::IntoStaticStr)]
pub enum Category {
    KubernetesError,
    CloudThrottled,
    CloudInsufficientCapacity,
    CloudNotFound,
    CloudInvalidRequest,
    CloudUnauthorized,
    CloudTransient,
    SecretError,
    InvalidObject,
    ProviderUnavailable,
    InstanceNotOwned,
}

impl Category {
    /// Every category, in declaration order: derived, so a new one is in it.
    pub const ALL: &'static [Category] = <Category as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Error {
    /// A bounded label: an Event reason and a metric label.
    pub fn category(&self) -> &'static str {
        self.classify().as_str()
    }

    /// Which category the error is in; the match makes a new variant choose one.
    pub fn classify(&self) -> Category {
        match self {
            Error::Kube(_) => Category::KubernetesError,
            Error::Cloud(e) => match e.kind {
                ErrorKind::Throttled => Category::CloudThrottled,
                ErrorKind::InsufficientCapacity => Category::CloudInsufficientCapacity,
                ErrorKind::NotFound => Category::CloudNotFound,
                ErrorKind::InvalidRequest => Category::CloudInvalidRequest,
                ErrorKind::Unauthorized => Category::CloudUnauthorized,
                ErrorKind::Transient => Category::CloudTransient,
            },
            Error::Secret { .. } => Category::SecretError,
            Error::Invalid(_) => Category::InvalidObject,
            Error::ProviderUnavailable(_) => Category::ProviderUnavailable,
            Error::NotOwned(_) => Category::InstanceNotOwned,
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

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_error_is_in_the_category_of_its_kind() {
        for kind in ErrorKind::ALL {
            let e = Error::from(ProviderError::new(*kind, "RunInstances", "x"));
            assert_eq!(e.category(), format!("Cloud{}", kind.as_str()));
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

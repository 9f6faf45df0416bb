//! Errors of the platform's remotes (the Control Plane API and etcd), classified once so that
//! conditions, Events and the retry policy speak the same bounded language.

/// Why a remote could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
pub enum RemoteErrorKind {
    /// Connection refused or reset, DNS, 502/503/504: try again later.
    Unavailable,
    Timeout,
    /// The token or user/password was refused.
    Unauthorized,
    /// The remote refused the request itself (4xx other than 401/404): our bug or bad input.
    Rejected,
    /// An answer that does not follow the contract.
    BadResponse,
    /// The remote failed (5xx other than the unavailable ones).
    ServerError,
}

impl RemoteErrorKind {
    /// Every value, in declaration order: derived, so a new variant is in it.
    pub const ALL: &'static [RemoteErrorKind] = <RemoteErrorKind as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct RemoteError {
    pub kind: RemoteErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn new(kind: RemoteErrorKind, message: impl Into<String>) -> RemoteError {
        RemoteError {
            kind,
            message: message.into(),
        }
    }
}

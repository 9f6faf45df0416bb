//! Errors of the platform's remotes (the Control Plane API and etcd), classified once so that
//! conditions, Events and the retry policy speak the same bounded language.

/// Why a remote could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// Every value, in declaration order.
    pub const ALL: [RemoteErrorKind; 6] = [
        RemoteErrorKind::Unavailable,
        RemoteErrorKind::Timeout,
        RemoteErrorKind::Unauthorized,
        RemoteErrorKind::Rejected,
        RemoteErrorKind::BadResponse,
        RemoteErrorKind::ServerError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RemoteErrorKind::Unavailable => "Unavailable",
            RemoteErrorKind::Timeout => "Timeout",
            RemoteErrorKind::Unauthorized => "Unauthorized",
            RemoteErrorKind::Rejected => "Rejected",
            RemoteErrorKind::BadResponse => "BadResponse",
            RemoteErrorKind::ServerError => "ServerError",
        }
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

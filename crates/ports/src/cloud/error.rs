//! Provider errors, classified so callers know whether to retry, fall back, or show and wait.

use std::fmt;

/// What kind of failure a cloud call met; it decides retrying and shows in status and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
pub enum ErrorKind {
    /// The cloud asked us to slow down; retry after a backoff.
    Throttled,
    /// No capacity for the instance type (in that zone); try another type or later.
    InsufficientCapacity,
    /// The instance, image, subnet or other resource does not exist.
    NotFound,
    /// The request itself is wrong (bad parameter, unknown instance type, quota); retrying won't help.
    InvalidRequest,
    /// Credentials are missing, wrong, or lack permission; retrying won't help.
    Unauthorized,
    /// A network failure, timeout or server error; worth retrying later.
    Transient,
}

impl ErrorKind {
    /// Every value, in declaration order: derived, so a new variant is in it.
    pub const ALL: &'static [ErrorKind] = <ErrorKind as strum::VariantArray>::VARIANTS;

    /// A stable, bounded label for metrics and Event reasons.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the same call may succeed later without anything being changed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled | ErrorKind::InsufficientCapacity | ErrorKind::Transient
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed cloud call: its kind, the cloud's own error code, and a message fit for a status field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {kind}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct ProviderError {
    pub kind: ErrorKind,
    /// The operation that failed, e.g. `RunInstances`.
    pub operation: &'static str,
    /// The cloud's error code, e.g. `InsufficientInstanceCapacity`.
    pub code: Option<String>,
    pub message: String,
    /// The availability zone the error names, when it names one.
    pub availability_zone: Option<String>,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            operation,
            code: None,
            message: message.into(),
            availability_zone: None,
        }
    }

    /// An error from a cloud error code and message, classified by the code.
    pub fn from_code(operation: &'static str, code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            kind: classify_code(code),
            operation,
            availability_zone: zone_in_message(&message),
            code: Some(code.to_owned()),
            message,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// Classifies an EC2 error code (see the EC2 API's "Error codes" reference).
pub fn classify_code(code: &str) -> ErrorKind {
    match code {
        "RequestLimitExceeded"
        | "Throttling"
        | "ThrottlingException"
        | "TooManyRequestsException" => ErrorKind::Throttled,
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientCapacityOnHost" => ErrorKind::InsufficientCapacity,
        "AuthFailure"
        | "UnauthorizedOperation"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "OptInRequired"
        | "Blocked"
        | "PendingVerification"
        | "AccessDenied"
        | "AccessDeniedException"
        | "ExpiredToken"
        | "InvalidToken" => ErrorKind::Unauthorized,
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable"
        | "RequestTimeout" => ErrorKind::Transient,
        c if c.ends_with(".NotFound") => ErrorKind::NotFound,
        // Malformed ids, bad parameters, unknown instance types, quotas, idempotency mismatches.
        _ => ErrorKind::InvalidRequest,
    }
}

/// EC2 names the zone in capacity errors: "... capacity in the Availability Zone you requested (us-east-1a)."
fn zone_in_message(message: &str) -> Option<String> {
    let start = message.find("Availability Zone")?;
    let rest = &message[start..];
    let open = rest.find('(')?;
    let close = rest[open..].find(')')?;
    let zone = &rest[open + 1..open + close];
    let looks_like_zone = !zone.is_empty()
        && zone
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && zone.chars().last().is_some_and(|c| c.is_ascii_lowercase());
    looks_like_zone.then(|| zone.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ec2_codes() {
        for (code, kind) in [
            ("RequestLimitExceeded", ErrorKind::Throttled),
            (
                "InsufficientInstanceCapacity",
                ErrorKind::InsufficientCapacity,
            ),
            ("InvalidInstanceID.NotFound", ErrorKind::NotFound),
            ("InvalidAMIID.NotFound", ErrorKind::NotFound),
            ("InvalidSubnetID.NotFound", ErrorKind::NotFound),
            ("InvalidInstanceID.Malformed", ErrorKind::InvalidRequest),
            ("InvalidInstanceType", ErrorKind::InvalidRequest),
            ("InvalidParameterValue", ErrorKind::InvalidRequest),
            ("VcpuLimitExceeded", ErrorKind::InvalidRequest),
            ("AuthFailure", ErrorKind::Unauthorized),
            ("UnauthorizedOperation", ErrorKind::Unauthorized),
            ("InternalError", ErrorKind::Transient),
        ] {
            assert_eq!(classify_code(code), kind, "{code}");
        }
    }

    #[test]
    fn reads_the_zone_from_capacity_messages() {
        let e = ProviderError::from_code(
            "RunInstances",
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient m5zn.metal capacity in the Availability Zone you requested (us-east-1a). Our system will be working on provisioning additional capacity.",
        );
        assert_eq!(e.availability_zone.as_deref(), Some("us-east-1a"));
        assert_eq!(e.kind, ErrorKind::InsufficientCapacity);
        let e = ProviderError::from_code(
            "RunInstances",
            "InsufficientInstanceCapacity",
            "no capacity",
        );
        assert_eq!(e.availability_zone, None);
    }

    #[test]
    fn display_keeps_code_and_message() {
        let e = ProviderError::from_code(
            "TerminateInstances",
            "InvalidInstanceID.NotFound",
            "The instance ID 'i-1' does not exist",
        );
        assert_eq!(
            e.to_string(),
            "TerminateInstances: NotFound (InvalidInstanceID.NotFound): The instance ID 'i-1' does not exist"
        );
    }
}

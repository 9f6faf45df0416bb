//! Words for what went wrong on an HTTP call, shared by the CML and Control Plane API clients.

/// `context: error: source: source ...`, so the cause (refused, certificate, timeout) shows.
pub fn chain(context: &str, e: &dyn std::error::Error) -> String {
    let mut message = format!("{context}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    message
}

/// The start of a body, for an error message about an answer that made no sense.
pub fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(120).collect()
}

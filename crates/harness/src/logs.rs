//! Captures the controller's logs of a test binary in memory, so a test can check what they say
//! (and what they must never say, such as a token).

use std::{
    io::Write,
    sync::{Mutex, OnceLock},
};

static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(logs) = LOGS.get() {
            logs.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once per test binary (debug for the controller, and the
/// HTTP and gRPC clients at debug too, since they are where a header could leak).
pub fn capture() {
    LOGS.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                "resource_controller=debug,reqwest=debug,hyper_util=debug,tonic=debug,warn",
            )
            .with_ansi(false)
            .with_writer(|| Sink)
            .try_init();
        Mutex::new(Vec::new())
    });
}

/// Everything logged so far.
pub fn captured() -> String {
    LOGS.get()
        .map(|l| String::from_utf8_lossy(&l.lock().unwrap_or_else(|e| e.into_inner())).into_owned())
        .unwrap_or_default()
}

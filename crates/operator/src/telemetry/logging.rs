//! Log output: text for people, JSON lines for log pipelines; `RUST_LOG` filters both.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; called once, at start-up.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        // Colours for a person at a terminal; a file or a pipe gets plain text.
        LogFormat::Text => builder.with_ansi(colours(std::io::stdout())).init(),
        // The reconcile span's fields (controller, object) go on every line logged inside it.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Whether text logs to `out` may carry ANSI colours: only on a terminal, and never with
/// `NO_COLOR` set (<https://no-color.org>).
fn colours(out: impl IsTerminal) -> bool {
    out.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_colours_into_a_file() {
        let file = tempfile::tempfile().expect("temp file");
        assert!(!super::colours(file));
    }
}

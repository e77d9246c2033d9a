//! The log subscriber every command installs: `tracing` events as text lines (timestamp,
//! level, target, message and fields) or JSON lines, on stderr. The filter is `--log` (or
//! `ZONECAST_LOG`, or `log` in the configuration file), else `RUST_LOG`, else `info`; it takes
//! `tracing`'s directive syntax, e.g. `warn,zonecast::pair=debug`.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `2026-12-03T18:05:20.123456Z  INFO zonecast::pair::agent: registered as pair 1 ...`
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, other fields, `target`.
    Json,
}

/// Installs the subscriber. `filter`: the `--log` directives, if given.
pub fn init(filter: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).map_err(|e| format!("--log `{f}`: {e}"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(f) if !f.trim().is_empty() => {
                EnvFilter::try_new(&f).map_err(|e| format!("RUST_LOG `{f}`: {e}"))?
            }
            _ => EnvFilter::new("info"),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}

//! The dwcp-monitor worker: configuration, the Kafka source, the topology that wires operators
//! to sinks, the HTTP port, and the embedded demo. The binary in `main.rs` is a thin CLI over it.

pub mod api;
pub mod changelog;
pub mod config;
pub mod demo;
pub mod derived;
pub mod eval_anomaly;
pub mod grafana;
pub mod http;
pub mod repartition;
pub mod source;
pub mod telemetry;
pub mod test_rules;
pub mod topology;

/// Sets up `tracing` output: human lines or JSON, filtered by `level` unless `RUST_LOG` is set.
pub fn init_logging(format: config::LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colours only on a terminal: a log file or journald gets plain `key=value` fields.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Human => builder.try_init(),
        config::LogFormat::Json => builder.json().try_init(),
    };
}

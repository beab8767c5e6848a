//! The daemon's log output: plain text (colour only on a terminal, never
//! into a file, a pipe or journald) or one JSON object a line for log
//! shippers, each carrying the node's id; events about a VM carry its name
//! in `vm` (the field every VM log line uses).

use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `message`, `node_id`,
    /// the event's fields (`vm`, `error`, ...) and its span's.
    Json,
}

/// A log setting the daemon cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter does not parse.
    #[error("--log-level: {filter:?} is not a valid filter ({message}); e.g. info, or info,blixard_daemon=debug")]
    Filter {
        /// The filter given.
        filter: String,
        /// The parser's complaint.
        message: String,
    },
    /// The trace exporter could not be set up.
    #[error("{0}")]
    Tracing(String),
    /// A subscriber was installed already.
    #[error("logging was set up twice: {0}")]
    Init(String),
}

/// JSON lines with `"node_id":N` first: every line of a node's log names
/// the node, wherever the event came from (openraft's tasks, tonic's),
/// which a span could not promise.
struct WithNodeId<F> {
    inner: F,
    node_id: u64,
}

impl<S, N, F> FormatEvent<S, N> for WithNodeId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"node_id\":{},{rest}", self.node_id),
            None => writer.write_str(&line),
        }
    }
}

/// Targets whose spans go to the trace collector: Blixard's own (the
/// libraries' spans would drown them).
fn traced_targets() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_target("blixard_daemon", tracing::Level::INFO)
        .with_target("blixard_shared", tracing::Level::INFO)
}

/// Installs the process's subscriber: `filter` in EnvFilter syntax,
/// `format`, `node_id` on every JSON line, and with `otlp_endpoint` the
/// OpenTelemetry layer (its own filter: Blixard's spans at info), whose
/// exporter the returned handle flushes at exit.
pub fn init(
    filter: &str,
    format: LogFormat,
    node_id: u64,
    otlp_endpoint: Option<&str>,
) -> Result<Option<blixard_shared::telemetry::Telemetry>, LoggingError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let env_filter = EnvFilter::try_new(filter).map_err(|e| LoggingError::Filter {
        filter: filter.to_string(),
        message: e.to_string(),
    })?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(WithNodeId {
                inner: format::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
                node_id,
            })
            .fmt_fields(format::JsonFields::new())
            .boxed(),
    }
    .with_filter(env_filter);
    let registry = tracing_subscriber::registry().with(lines);
    let (traces, telemetry) = match otlp_endpoint {
        Some(endpoint) => {
            let (layer, telemetry) =
                blixard_shared::telemetry::layer(endpoint, "blixardd", node_id.to_string())
                    .map_err(|e| LoggingError::Tracing(e.to_string()))?;
            (Some(layer.with_filter(traced_targets())), Some(telemetry))
        }
        None => (None, None),
    };
    registry
        .with(traces)
        .try_init()
        .map_err(|e| LoggingError::Init(e.to_string()))?;
    Ok(telemetry)
}

/// Installs color-eyre's error reports, coloured only on a terminal: a
/// daemon's last words land in its log file or journald, which must not
/// fill with escape sequences.
pub fn install_error_reports() -> Result<(), color_eyre::eyre::Report> {
    let theme = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        color_eyre::config::Theme::dark()
    } else {
        color_eyre::config::Theme::new()
    };
    color_eyre::config::HookBuilder::default()
        .theme(theme)
        .install()
}

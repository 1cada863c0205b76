//! Logging (tracing) and the Prometheus metrics recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; logs go to stderr so stdout stays for command output. `RUST_LOG`, when set,
/// overrides `log.level`.
pub(crate) fn init_logging(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::builder().parse(f).ok())
        .or_else(|| EnvFilter::builder().parse(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match log.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only on a terminal: journald, `docker logs` and files get plain text.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(true),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // Already installed (tests): keep the first.
    let _ = result;
}

/// Latency buckets in seconds, for every `*_duration_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder (installed once; later calls return the same handle).
pub(crate) fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed, which this binary never does.
            let _ = metrics::set_global_recorder(recorder);
            metrics_process::Collector::new("rtcplane_").describe();
            describe_http();
            handle
        })
        .clone()
}

/// Renders the Prometheus text page, refreshing process metrics first.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    metrics_process::Collector::new("rtcplane_").collect();
    handle.run_upkeep();
    handle.render()
}

pub(crate) const HTTP_REQUESTS: &str = "rtcplane_http_requests_total";
pub(crate) const HTTP_DURATION: &str = "rtcplane_http_request_duration_seconds";
pub(crate) const HTTP_IN_FLIGHT: &str = "rtcplane_http_requests_in_flight";
pub(crate) const BUILD_INFO: &str = "rtcplane_build_info";
pub(crate) const STORAGE_CONNECTIONS: &str = "rtcplane_storage_pool_connections";
pub(crate) const STORAGE_UP: &str = "rtcplane_storage_up";

fn describe_http() {
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by listener, method, route and status."
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency until the response head."
    );
    metrics::describe_gauge!(
        HTTP_IN_FLIGHT,
        "HTTP requests being handled now, by listener."
    );
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; labels carry the version and the storage backend."
    );
    metrics::describe_gauge!(
        STORAGE_CONNECTIONS,
        "Database pool connections by state (idle, busy)."
    );
    metrics::describe_gauge!(
        STORAGE_UP,
        "1 if the last storage heartbeat succeeded, else 0."
    );
}

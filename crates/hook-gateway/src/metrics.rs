//! Metric names of the hook gateway.

pub(crate) const DECISIONS: &str = "rtcplane_hooks_decisions_total";
pub(crate) const DECISION_SECONDS: &str = "rtcplane_hooks_decision_duration_seconds";
pub(crate) const MALFORMED: &str = "rtcplane_hooks_malformed_total";
pub(crate) const FORWARD_ERRORS: &str = "rtcplane_hooks_forward_errors_total";
pub(crate) const PUBLISHERS: &str = "rtcplane_hooks_publishers";
pub(crate) const PLAYERS: &str = "rtcplane_hooks_players";
pub(crate) const CLIENTS: &str = "rtcplane_hooks_clients";

/// Describes the series.
pub(crate) fn describe() {
    metrics::describe_counter!(
        DECISIONS,
        "Hook requests answered, by server (srs, nginx-rtmp, mediamtx), action and result (allow, deny, redirect)."
    );
    metrics::describe_histogram!(DECISION_SECONDS, "Time to decide one hook request.");
    metrics::describe_counter!(
        MALFORMED,
        "Hook requests refused with 400 because they could not be read."
    );
    metrics::describe_counter!(
        FORWARD_ERRORS,
        "Upstream hook servers that could not be reached in time."
    );
    metrics::describe_gauge!(PUBLISHERS, "Streams with a publisher in the registry.");
    metrics::describe_gauge!(PLAYERS, "Players in the registry.");
    metrics::describe_gauge!(CLIENTS, "Clients in the registry.");
    metrics::counter!(FORWARD_ERRORS).increment(0);
}

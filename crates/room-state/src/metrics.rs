//! Metric names of the rooms service (no room tokens or user names as labels).

pub(crate) const REQUESTS: &str = "rtcplane_rooms_actions_total";
pub(crate) const ACTION_SECONDS: &str = "rtcplane_rooms_action_duration_seconds";
pub(crate) const PUSHES: &str = "rtcplane_rooms_simplepush_total";
pub(crate) const SHARED_DOMAINS: &str = "rtcplane_rooms_shared_domains_total";
pub(crate) const EXPIRED: &str = "rtcplane_rooms_expired_total";
pub(crate) const SESSIONS: &str = "rtcplane_rooms_hawk_sessions_created_total";

/// Describes the series.
pub(crate) fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "Loop rooms requests answered, by action (create, join, refresh, status, leave, …) and result (HTTP status)."
    );
    metrics::describe_histogram!(
        ACTION_SECONDS,
        "Time to answer one Loop rooms request, by action."
    );
    metrics::describe_counter!(
        PUSHES,
        "SimplePush notifications sent to room owners, by reason and result (success, failure)."
    );
    metrics::describe_counter!(
        SHARED_DOMAINS,
        "Domains shared in rooms as reported by clients (logDomain counts)."
    );
    metrics::describe_counter!(
        EXPIRED,
        "Participants and rooms removed by the sweeper, by kind (participant, room)."
    );
    metrics::describe_counter!(SESSIONS, "Hawk sessions created by POST /registration.");
}

//! The bus's metric names, in one place.

pub(crate) const PUBLISHED: &str = "rtcplane_bus_events_published_total";
pub(crate) const DROPPED: &str = "rtcplane_bus_events_dropped_total";
pub(crate) const RECEIVED_REMOTE: &str = "rtcplane_bus_events_received_remote_total";
pub(crate) const SUBSCRIBERS: &str = "rtcplane_bus_subscribers";
pub(crate) const REDIS_CONNECTED: &str = "rtcplane_bus_redis_connected";
pub(crate) const REDIS_RECONNECTS: &str = "rtcplane_bus_redis_reconnects_total";

/// Registers descriptions so `/metrics` explains every series, and shows the loss counters at 0 from the
/// start (a dashboard sees "no loss", not "no data").
pub(crate) fn describe() {
    for reason in [
        "lagged",
        "redis_queue_full",
        "redis_unavailable",
        "malformed",
    ] {
        metrics::counter!(DROPPED, "reason" => reason).increment(0);
    }
    metrics::counter!(PUBLISHED).increment(0);
    metrics::gauge!(SUBSCRIBERS).increment(0.0);
    metrics::describe_counter!(PUBLISHED, "Events published on the bus by this node.");
    metrics::describe_counter!(
        DROPPED,
        "Events lost: reason=lagged (a slow local subscriber), redis_queue_full, redis_unavailable, malformed (unreadable from Redis)."
    );
    metrics::describe_counter!(
        RECEIVED_REMOTE,
        "Events received from other nodes over Redis."
    );
    metrics::describe_gauge!(SUBSCRIBERS, "Local bus subscribers now.");
    metrics::describe_gauge!(
        REDIS_CONNECTED,
        "1 while the bus's Redis connection is up and subscribed, else 0."
    );
    metrics::describe_counter!(
        REDIS_RECONNECTS,
        "Times the bus's Redis connection came back after being down."
    );
}

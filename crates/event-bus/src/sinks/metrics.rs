//! Metric names of the sinks, in one place.

pub(crate) const EVENTS_STORED: &str = "rtcplane_events_stored_total";
pub(crate) const EVENTS_STORE_ERRORS: &str = "rtcplane_events_store_errors_total";
pub(crate) const EVENTS_STORE_SECONDS: &str = "rtcplane_events_store_batch_seconds";
pub(crate) const EVENTS_LOST: &str = "rtcplane_events_lost_total";
pub(crate) const REDIS_SINK_PUBLISHED: &str = "rtcplane_events_redis_published_total";
pub(crate) const REDIS_SINK_ERRORS: &str = "rtcplane_events_redis_errors_total";
pub(crate) const WEBHOOK_DELIVERIES: &str = "rtcplane_webhook_deliveries_total";
pub(crate) const WEBHOOK_ATTEMPT_SECONDS: &str = "rtcplane_webhook_attempt_duration_seconds";
pub(crate) const WEBHOOK_QUEUE_DEPTH: &str = "rtcplane_webhook_queue_depth";
pub(crate) const WEBHOOK_OLDEST_PENDING: &str = "rtcplane_webhook_oldest_pending_age_seconds";

/// Describes every series and shows the counters at 0 from the start.
pub(crate) fn describe() {
    metrics::counter!(EVENTS_STORED).increment(0);
    metrics::counter!(EVENTS_STORE_ERRORS).increment(0);
    metrics::counter!(EVENTS_LOST).increment(0);
    for result in ["delivered", "retry", "dead"] {
        metrics::counter!(WEBHOOK_DELIVERIES, "result" => result).increment(0);
    }
    metrics::gauge!(WEBHOOK_QUEUE_DEPTH).set(0.0);
    metrics::gauge!(WEBHOOK_OLDEST_PENDING).set(0.0);
    metrics::describe_counter!(
        EVENTS_STORED,
        "Events of this node written to the stored event log."
    );
    metrics::describe_counter!(
        EVENTS_STORE_ERRORS,
        "Failed writes of event batches (each is retried)."
    );
    metrics::describe_histogram!(
        EVENTS_STORE_SECONDS,
        "Time to write one batch of events and their deliveries."
    );
    metrics::describe_counter!(
        EVENTS_LOST,
        "Events that could not be stored before shutdown."
    );
    metrics::describe_counter!(
        REDIS_SINK_PUBLISHED,
        "Events published to Redis (channel and stream)."
    );
    metrics::describe_counter!(
        REDIS_SINK_ERRORS,
        "Failed Redis publishes of event batches (each is retried)."
    );
    metrics::describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook attempts by result: delivered (2xx), retry (failed, will retry), dead (given up)."
    );
    metrics::describe_histogram!(WEBHOOK_ATTEMPT_SECONDS, "Duration of one webhook attempt.");
    metrics::describe_gauge!(
        WEBHOOK_QUEUE_DEPTH,
        "Webhook deliveries not yet delivered or dead (all nodes)."
    );
    metrics::describe_gauge!(
        WEBHOOK_OLDEST_PENDING,
        "Age of the oldest webhook delivery not yet delivered or dead, in seconds."
    );
}

//! Metric names of the SIP agent.

pub(crate) const REGISTRATIONS: &str = "rtcplane_sip_registrations";
pub(crate) const REQUESTS: &str = "rtcplane_sip_requests_sent_total";
pub(crate) const RESPONSES: &str = "rtcplane_sip_responses_total";
pub(crate) const TIMEOUTS: &str = "rtcplane_sip_transaction_timeouts_total";
pub(crate) const SEND_FAILURES: &str = "rtcplane_sip_send_failures_total";
pub(crate) const SEND_WOULD_BLOCK: &str = "rtcplane_sip_send_would_block_total";
pub(crate) const MALFORMED: &str = "rtcplane_sip_malformed_total";
pub(crate) const STRAY: &str = "rtcplane_sip_stray_responses_total";
pub(crate) const CHALLENGES: &str = "rtcplane_sip_challenges_total";
pub(crate) const WRITE_SECONDS: &str = "rtcplane_sip_status_write_duration_seconds";
pub(crate) const ROWS_WRITTEN: &str = "rtcplane_sip_status_rows_written_total";
pub(crate) const WRITE_ERRORS: &str = "rtcplane_sip_status_write_errors_total";

/// Response class label.
pub(crate) fn class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "6xx",
    }
}

/// Describes the series and sets the gauges to zero.
pub(crate) fn describe() {
    metrics::describe_gauge!(
        REGISTRATIONS,
        "SIP accounts by registration status (inactive, pending, active, failed, removed, to_be_removed)."
    );
    metrics::describe_counter!(
        REQUESTS,
        "REGISTER requests sent, by kind (register, authenticated, deregister, retransmission)."
    );
    metrics::describe_counter!(
        RESPONSES,
        "Final and provisional responses matched to a transaction, by class."
    );
    metrics::describe_counter!(
        TIMEOUTS,
        "Transactions ended by Timer F (no final response)."
    );
    metrics::describe_counter!(
        SEND_FAILURES,
        "Requests that could not be sent (recorded as 480 unable to send request)."
    );
    metrics::describe_counter!(
        SEND_WOULD_BLOCK,
        "UDP sends dropped because the socket buffer was full (Timer E resends them)."
    );
    metrics::describe_counter!(MALFORMED, "Received SIP messages that could not be parsed.");
    metrics::describe_counter!(
        STRAY,
        "Responses that matched no transaction (late retransmissions, wrong Call-ID or CSeq)."
    );
    metrics::describe_counter!(CHALLENGES, "401/407 challenges answered, by stale.");
    metrics::describe_histogram!(WRITE_SECONDS, "Time to write one batch of status rows.");
    metrics::describe_counter!(ROWS_WRITTEN, "Status rows written or deleted.");
    metrics::describe_counter!(WRITE_ERRORS, "Status batches that failed (retried).");
    for s in crate::status::Status::ALL {
        metrics::gauge!(REGISTRATIONS, "status" => s.name()).set(0.0);
    }
    metrics::counter!(TIMEOUTS).increment(0);
    metrics::counter!(SEND_FAILURES).increment(0);
}

-- The stored event log (SSE resume, webhook payloads, replay) and the webhook outbox.
-- Every node stores the events it published itself; `seq` orders the log. Timestamps are unix milliseconds.
CREATE TABLE rtcplane_events (
    seq     BIGINT AUTO_INCREMENT PRIMARY KEY,
    id      VARCHAR(36)  NOT NULL UNIQUE, -- the event's UUIDv7
    time_ms BIGINT       NOT NULL,
    type    VARCHAR(128) NOT NULL,
    subject VARCHAR(255),                 -- first 255 characters; the envelope has it whole
    node    VARCHAR(255) NOT NULL,
    body    MEDIUMTEXT   NOT NULL         -- the CloudEvents JSON envelope
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX rtcplane_events_time ON rtcplane_events (time_ms);

-- Webhook endpoints: `origin` is 'config' (from [[webhooks.endpoints]], read-only in the API) or 'api'.
CREATE TABLE rtcplane_webhook_endpoints (
    id            VARCHAR(64)   NOT NULL PRIMARY KEY,
    url           VARCHAR(2048) NOT NULL,
    secret        VARCHAR(255)  NOT NULL, -- whsec_<base64>
    events        TEXT          NOT NULL, -- JSON array of type globs; [] means every event
    enabled       BIGINT        NOT NULL,
    max_in_flight BIGINT        NOT NULL,
    origin        VARCHAR(16)   NOT NULL,
    description   VARCHAR(1024) NOT NULL,
    created_at    BIGINT        NOT NULL,
    updated_at    BIGINT        NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per (event, endpoint) to deliver: pending -> delivering (leased by a node) -> delivered | dead.
CREATE TABLE rtcplane_webhook_deliveries (
    id              BIGINT AUTO_INCREMENT PRIMARY KEY,
    endpoint_id     VARCHAR(64)  NOT NULL,
    event_id        VARCHAR(36)  NOT NULL,
    event_type      VARCHAR(128) NOT NULL,
    subject         VARCHAR(255),          -- deliveries of one subject to one endpoint go in order
    state           VARCHAR(16)  NOT NULL,
    attempts        BIGINT       NOT NULL,
    created_at      BIGINT       NOT NULL,
    next_attempt_at BIGINT       NOT NULL,
    lease_owner     VARCHAR(255),
    lease_until     BIGINT,
    last_attempt_at BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    last_latency_ms BIGINT,
    finished_at     BIGINT,
    replay_of       BIGINT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX rtcplane_webhook_deliveries_due ON rtcplane_webhook_deliveries (endpoint_id, state, next_attempt_at);
CREATE INDEX rtcplane_webhook_deliveries_subject ON rtcplane_webhook_deliveries (endpoint_id, subject, id);
CREATE INDEX rtcplane_webhook_deliveries_event ON rtcplane_webhook_deliveries (event_id);
CREATE INDEX rtcplane_webhook_deliveries_state ON rtcplane_webhook_deliveries (state, created_at);

-- Every attempt of every delivery: the delivery log.
CREATE TABLE rtcplane_webhook_attempts (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    delivery_id BIGINT       NOT NULL,
    attempt     BIGINT       NOT NULL,
    started_at  BIGINT       NOT NULL,
    status      BIGINT,                 -- HTTP status; NULL when no response came
    latency_ms  BIGINT       NOT NULL,
    error       TEXT,
    node        VARCHAR(255) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX rtcplane_webhook_attempts_delivery ON rtcplane_webhook_attempts (delivery_id);

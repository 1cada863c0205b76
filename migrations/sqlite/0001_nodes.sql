-- Cluster membership: every serving node upserts its row on a heartbeat and deletes it on clean shutdown.
CREATE TABLE rtcplane_nodes (
    node_id      VARCHAR(255) NOT NULL PRIMARY KEY,
    version      VARCHAR(64)  NOT NULL,
    admin_listen VARCHAR(255) NOT NULL,
    started_at   BIGINT       NOT NULL, -- unix milliseconds
    last_seen    BIGINT       NOT NULL  -- unix milliseconds
);

-- Stream keys for the hook gateway's `then = "stream_key"` rules, managed with `rtcplane hooks key add|del|list`.
-- Only the SHA-256 of each key is stored; `stream` is the public name a key publishes as.
CREATE TABLE hooks_stream_keys (
    key_hash    CHAR(64)      NOT NULL PRIMARY KEY, -- hex SHA-256 of the key
    app         VARCHAR(255)  NOT NULL,
    stream      VARCHAR(255)  NOT NULL,
    description VARCHAR(1024) NOT NULL,
    created_at  BIGINT        NOT NULL  -- unix milliseconds
);
CREATE INDEX hooks_stream_keys_stream ON hooks_stream_keys (app, stream);

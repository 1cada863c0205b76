-- The Loop rooms service (`[rooms]`, crate room-state). Times are unix milliseconds. Hawk ids and
-- link-clicker tokens are stored only as keyed hashes (`rooms.hawk_id_secret`).

-- Hawk sessions: the key a session's requests are signed with, sliding expiry (hawk_session_duration).
CREATE TABLE rooms_hawk_sessions (
    id_hash    VARCHAR(64) NOT NULL PRIMARY KEY,
    hawk_key   VARCHAR(64) NOT NULL,
    user_hash  VARCHAR(64) NOT NULL,
    created_at BIGINT   NOT NULL,
    expires_at BIGINT   NOT NULL
);
CREATE INDEX rooms_hawk_sessions_expiry ON rooms_hawk_sessions (expires_at);

-- SimplePush URLs per session and topic (calls, rooms).
CREATE TABLE rooms_push_urls (
    session_hash VARCHAR(64)      NOT NULL,
    topic        VARCHAR(16)   NOT NULL,
    user_hash    VARCHAR(64)      NOT NULL,
    url          VARCHAR(2048) NOT NULL,
    PRIMARY KEY (session_hash, topic)
);
CREATE INDEX rooms_push_urls_user ON rooms_push_urls (user_hash, topic);

CREATE TABLE rooms (
    token       VARCHAR(128) NOT NULL PRIMARY KEY,
    owner_hash  VARCHAR(64)     NOT NULL,
    room_name   TEXT         NULL,
    room_owner  TEXT         NOT NULL,
    context     TEXT         NULL, -- the opaque {value, alg, wrappedKey} JSON
    max_size    BIGINT       NOT NULL,
    channel     VARCHAR(255) NOT NULL,
    session_id  VARCHAR(255) NOT NULL,
    api_key     VARCHAR(255) NOT NULL,
    expires_in  BIGINT       NOT NULL, -- hours, as requested
    created_at  BIGINT       NOT NULL,
    updated_at  BIGINT       NOT NULL, -- Loop's ctime
    expires_at  BIGINT       NOT NULL
);
CREATE INDEX rooms_owner ON rooms (owner_hash);
CREATE INDEX rooms_expiry ON rooms (expires_at);

-- Participants: one per Hawk session (participant_hash = its id hash) or link-clicker token (its hash).
CREATE TABLE rooms_participants (
    room_token        VARCHAR(128) NOT NULL,
    participant_hash  VARCHAR(64)     NOT NULL,
    connection_id     VARCHAR(36)     NOT NULL,
    user_hash         VARCHAR(64)     NULL,     -- the Hawk user; NULL for link-clickers
    kind              VARCHAR(16)  NOT NULL, -- hawk | link
    display_name      TEXT         NOT NULL,
    client_max_size   BIGINT       NOT NULL,
    role              VARCHAR(16)  NOT NULL, -- moderator | publisher
    joined_at         BIGINT       NOT NULL,
    expires_at        BIGINT       NOT NULL,
    status_event      TEXT         NULL,
    status_state      TEXT         NULL,
    status_connections BIGINT      NULL,
    status_send       BIGINT       NULL,
    status_recv       BIGINT       NULL,
    status_derived    VARCHAR(16)  NULL,
    status_at         BIGINT       NULL,
    PRIMARY KEY (room_token, participant_hash)
);
CREATE UNIQUE INDEX rooms_participants_connection ON rooms_participants (connection_id);
CREATE INDEX rooms_participants_expiry ON rooms_participants (expires_at);

-- Deleted rooms, listed by GET /rooms?version=N for deleted_ttl.
CREATE TABLE rooms_tombstones (
    owner_hash VARCHAR(64)     NOT NULL,
    room_token VARCHAR(128) NOT NULL,
    deleted_at BIGINT       NOT NULL,
    PRIMARY KEY (owner_hash, room_token)
);
CREATE INDEX rooms_tombstones_age ON rooms_tombstones (deleted_at);

-- Per-user TURN overrides (managed with `rtcplane turn user limit` and /api/v1/turn/users/{name}/limits).
-- NULL: no override (turn.user_quota / turn.max_bps / turn.user_max_bps apply); 0: unlimited.
-- name is the account: a TURN REST username `<expiry>:<user>` counts as `<user>`.
CREATE TABLE turn_user_limits (
    realm        VARCHAR(255) NOT NULL,
    name         VARCHAR(255) NOT NULL,
    quota        BIGINT       NULL,     -- concurrent allocations
    max_bps      BIGINT       NULL,     -- bytes per second per allocation, each direction
    user_max_bps BIGINT       NULL,     -- bytes per second over the user's allocations, each direction
    updated_at   BIGINT       NOT NULL, -- unix milliseconds
    PRIMARY KEY (realm, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

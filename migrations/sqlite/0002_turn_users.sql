-- TURN long-term credential users (like coturn's turnusers_lt), managed with `rtcplane turn user add|del|list`.
-- Keys, not passwords, are stored: MD5(name:realm:password) and SHA-256(name:realm:password), hex.
CREATE TABLE turn_users (
    realm      VARCHAR(255) NOT NULL,
    name       VARCHAR(255) NOT NULL,
    md5_key    CHAR(32)     NOT NULL,
    sha256_key CHAR(64)     NOT NULL,
    created_at BIGINT       NOT NULL, -- unix milliseconds
    PRIMARY KEY (realm, name)
);

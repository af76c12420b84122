-- Users are keyed by phone (E.164, e.g. +8613580006666); WeChat identities
-- (app_id, openid) point at them. Timestamps are unix milliseconds (BIGINT) so the
-- same code runs on MySQL/MariaDB and SQLite. utf8mb4_bin: openids and unionids are
-- case-sensitive, so a case-insensitive collation would merge distinct users.
CREATE TABLE users (
    id BIGINT NOT NULL AUTO_INCREMENT,
    phone VARCHAR(24) NOT NULL,
    country_code VARCHAR(4) NOT NULL,
    -- Incremented by every login: the upsert then always changes the row, so its
    -- affected-rows count tells a new user (1) from a returning one (2).
    login_count BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY users_phone_key (phone)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE wechat_identities (
    app_id VARCHAR(64) NOT NULL,
    openid VARCHAR(128) NOT NULL,
    -- NULL until a login completes (a session key may be saved before that).
    user_id BIGINT NULL,
    unionid VARCHAR(128) NULL,
    -- Sealed (encrypted by the caller) session_key bytes; opaque to the store.
    session_key VARBINARY(255) NULL,
    session_key_expires_at BIGINT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, openid),
    KEY wechat_identities_user_id_idx (user_id),
    KEY wechat_identities_unionid_idx (unionid),
    CONSTRAINT wechat_identities_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

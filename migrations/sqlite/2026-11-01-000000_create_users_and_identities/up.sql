-- Same shape as migrations/mysql: users keyed by phone, WeChat identities pointing at
-- them, timestamps in unix milliseconds. INTEGER PRIMARY KEY is SQLite's 64-bit rowid.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    phone TEXT NOT NULL UNIQUE,
    country_code TEXT NOT NULL,
    -- Incremented by every login; 1 right after the upsert means a new user.
    login_count BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL
);

CREATE TABLE wechat_identities (
    app_id TEXT NOT NULL,
    openid TEXT NOT NULL,
    user_id BIGINT NULL REFERENCES users (id) ON DELETE SET NULL,
    unionid TEXT NULL,
    session_key BLOB NULL,
    session_key_expires_at BIGINT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, openid)
) WITHOUT ROWID;

CREATE INDEX wechat_identities_user_id_idx ON wechat_identities (user_id);
CREATE INDEX wechat_identities_unionid_idx ON wechat_identities (unionid);

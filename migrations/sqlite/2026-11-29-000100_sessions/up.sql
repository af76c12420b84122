-- Same as migrations/mysql: one row per device login (see there).
CREATE TABLE sessions (
    id TEXT NOT NULL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    app_id TEXT NOT NULL,
    openid TEXT NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NULL,
    revoke_reason TEXT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- One row per device login. Refresh tokens are not stored: a token is
-- `<sid>.<generation>.<mac>`, the MAC an HMAC over (sid, generation, user, app,
-- absolute expiry) under a server key, so the server recomputes it instead of
-- storing it, and can hand out the same successor again (see src/sessions).
-- `generation` is the only valid token's generation; rotation is one
-- conditional UPDATE (WHERE generation = presented), so concurrent refreshes of
-- one token rotate once. Revoked rows stay until their access tokens have
-- expired: `revoked_at` feeds every replica's revocation cache.
CREATE TABLE sessions (
    id VARCHAR(32) NOT NULL,
    user_id BIGINT NOT NULL,
    app_id VARCHAR(64) NOT NULL,
    openid VARCHAR(128) NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NULL,
    revoke_reason VARCHAR(32) NULL,
    PRIMARY KEY (id),
    KEY sessions_user_id_idx (user_id),
    KEY sessions_revoked_at_idx (revoked_at),
    KEY sessions_expires_at_idx (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Same as migrations/mysql: idle-expired sessions are purged through this index.
CREATE INDEX sessions_idle_expires_at_idx ON sessions (idle_expires_at);

DROP INDEX sessions_idle_expires_at_idx ON sessions;

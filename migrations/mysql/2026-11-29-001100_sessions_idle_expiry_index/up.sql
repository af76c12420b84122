-- Sessions that ended by their idle timeout (most abandoned sessions: users who
-- never come back) are purged through this index, not only once their absolute
-- lifetime is over (the `expires_at` index); `idle_expires_at` never passes
-- `expires_at`. Its cost: the refresh UPDATE, which moves `idle_expires_at`,
-- also moves this index entry.
CREATE INDEX sessions_idle_expires_at_idx ON sessions (idle_expires_at);

-- Same as migrations/mysql: the tombstone of a deleted account (id, when, why).
-- users.id is AUTOINCREMENT, so SQLite never reuses a deleted id either.
CREATE TABLE deleted_users (
    id INTEGER PRIMARY KEY NOT NULL,
    deleted_at BIGINT NOT NULL,
    reason TEXT NOT NULL
);

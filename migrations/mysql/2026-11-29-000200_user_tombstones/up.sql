-- Account deletion (账号注销) erases the user row, its phone and every identity, and
-- keeps only this tombstone: the id (never reused: AUTO_INCREMENT only grows, and the
-- tombstone records that the id existed), when and why it was deleted.
CREATE TABLE deleted_users (
    id BIGINT NOT NULL,
    deleted_at BIGINT NOT NULL,
    reason VARCHAR(64) NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

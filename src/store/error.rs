//! The store's error type and the classification of driver errors into the cases a
//! caller acts on: retry the transaction, report the database unavailable, or give up.
//!
//! diesel-async keeps only the server's message of a MySQL error (not its code), so
//! the classification reads messages; the unit tests pin the messages it relies on.

use diesel::result::{ConnectionError, Error as DieselError};

/// What went wrong in the store. Messages never contain the URL's password or data
/// values (quoted values in server messages are redacted).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, refused us, went away, or no pooled connection
    /// was free within `acquire_timeout_ms`. Retryable; maps to UNAVAILABLE.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The transaction kept hitting deadlocks (on Galera: certification conflicts)
    /// until `max_tx_attempts` ran out. Retryable; maps to UNAVAILABLE (or ABORTED).
    #[error("database contention: the transaction was retried until max_tx_attempts ran out")]
    Contention,
    /// Anything else: a schema mismatch, a bug, a bad URL. Maps to INTERNAL.
    #[error("database error: {0}")]
    Unexpected(String),
}

/// What to do about one failed statement or transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Deadlock, lock-wait timeout, SQLite busy: run the whole transaction again.
    Retry,
    /// The connection or server is gone: worth one more try on a fresh connection.
    Unavailable,
    /// The server answers but will not serve this now, and asking it again at once
    /// would not help: a Galera node outside the Primary component (1047), a lock
    /// held past `innodb_lock_wait_timeout` (1205). Fails fast as unavailable.
    NotServing,
    /// Not transient.
    Other,
}

const RETRY_MARKERS: &[&str] = &[
    // MySQL/MariaDB 1213, also what a Galera node reports when the transaction lost
    // certification at COMMIT or was aborted by a replicated write (brute force).
    "Deadlock found",
    "try restarting transaction",
    // MySQL Group Replication (InnoDB Cluster) 3101: the transaction lost the group's
    // conflict check at COMMIT.
    "Plugin instructed the server to rollback the current transaction",
    // TiDB optimistic transactions: 9007 "Write conflict, txnStartTS=... [try again
    // later]" and 8005 "Write Conflict, txnStartTS is stale" (both retryable).
    "Write conflict",
    "Write Conflict",
    // SQLite SQLITE_BUSY / SQLITE_LOCKED.
    "database is locked",
    "database table is locked",
    "database is busy",
];

/// Checked before [`RETRY_MARKERS`]: 1205's message also ends with "try restarting
/// transaction", but after waiting `innodb_lock_wait_timeout` (50 s by default) for a
/// lock, the caller's deadline is long gone and another attempt would wait as long.
const NOT_SERVING_MARKERS: &[&str] = &[
    // MySQL/MariaDB/TiDB 1205.
    "Lock wait timeout exceeded",
    // Galera 1047: the node is not in the Primary component (isolated, partitioned,
    // or still joining); it takes connections but refuses queries on tables.
    "WSREP has not yet prepared node for application use",
    // Galera, a write on a node that has just lost the Primary component (1180
    // "Error while appending streaming replication fragment(provider status: Not
    // connected to Primary Component)") or a replication failure (ER_LOCK_DEADLOCK's
    // sibling "WSREP replication failed. Check your wsrep connection state ...").
    "Not connected to Primary Component",
    "WSREP replication failed",
    // 1290 on a read-only server: a replica or a former primary during a failover
    // (InnoDB Cluster, a proxy that has not switched yet).
    "--read-only option",
    "--super-read-only option",
];

const UNAVAILABLE_MARKERS: &[&str] = &[
    // mysql_async's I/O errors and the driver errors of a broken connection.
    "Input/output error",
    "Connection to the server is closed",
    "Packet out of order",
    "Unexpected packet",
    "Lost connection",
    "server has gone away",
    "Server shutdown in progress",
    "Connection was killed",
    "Too many connections",
    // SQLite cannot open or reach its file.
    "unable to open database file",
];

/// Classifies a diesel error by what the caller should do.
pub(crate) fn classify(err: &DieselError) -> Class {
    match err {
        DieselError::DatabaseError(_, info) => classify_message(info.message()),
        DieselError::BrokenTransactionManager => Class::Unavailable,
        _ => Class::Other,
    }
}

pub(crate) fn classify_message(message: &str) -> Class {
    if NOT_SERVING_MARKERS.iter().any(|m| message.contains(m)) {
        Class::NotServing
    } else if RETRY_MARKERS.iter().any(|m| message.contains(m)) {
        Class::Retry
    } else if UNAVAILABLE_MARKERS.iter().any(|m| message.contains(m)) {
        Class::Unavailable
    } else {
        Class::Other
    }
}

impl StoreError {
    /// Maps a failed statement: transient failures to their cases, the rest to
    /// `Unexpected` with `context` and a redacted message.
    pub(crate) fn from_query(context: &str, err: &DieselError) -> Self {
        match classify(err) {
            Class::Retry => StoreError::Contention,
            Class::Unavailable | Class::NotServing => {
                StoreError::Unavailable(format!("{context}: {}", redact_values(&err.to_string())))
            }
            Class::Other => {
                StoreError::Unexpected(format!("{context}: {}", redact_values(&err.to_string())))
            }
        }
    }

    /// Maps a failure to open a connection. The message is kept (it says "Access
    /// denied" or "Connection refused") minus anything that looks like the password.
    pub(crate) fn from_connect(err: &ConnectionError, password: Option<&str>) -> Self {
        let message = redact_secret(&err.to_string(), password);
        match err {
            ConnectionError::InvalidConnectionUrl(_) => {
                StoreError::Unexpected(format!("invalid database URL: {message}"))
            }
            _ => StoreError::Unavailable(format!("cannot connect to the database: {message}")),
        }
    }
}

/// Replaces every occurrence of `secret` (if any, and not trivially short) in `message`.
pub(crate) fn redact_secret(message: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if s.len() >= 3 => message.replace(s, "[REDACTED]"),
        _ => message.to_owned(),
    }
}

/// Blanks out single-quoted values in server messages, e.g.
/// `Duplicate entry '+8613580006666' for key 'phone'` keeps its shape but not the data.
/// A syntax error quotes a fragment of the statement (`... near 'X'2b38...', 1, ...'
/// at line 1`), whose own quotes (the login batch's hex literals) would defeat the
/// toggling: the whole fragment goes.
pub(crate) fn redact_values(message: &str) -> String {
    if let Some(start) = message.find(" near '") {
        let end = message.rfind("' at line").filter(|&e| e > start);
        let tail = end.map_or("", |e| &message[e + 1..]);
        return format!("{} near '…'{tail}", redact_values(&message[..start]));
    }
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '\'' {
            inside = !inside;
            out.push(c);
            if inside {
                out.push('…');
            }
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// The password part of `scheme://user:password@host/...`, if any.
pub(crate) fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidb_write_conflicts_are_retried() {
        for message in [
            "Write conflict, txnStartTS=452, conflictStartTS=451, conflictCommitTS=453, key={tableID=74, handle=1} primary=byte(nil) [try again later]",
            "Write Conflict, txnStartTS is stale",
        ] {
            assert_eq!(classify_message(message), Class::Retry, "{message}");
        }
    }

    #[test]
    fn deadlocks_and_galera_certification_failures_are_retried() {
        // Galera reports a transaction that lost certification at COMMIT, or was
        // aborted by a replicated write set, as this deadlock (1213).
        assert_eq!(
            classify_message("Deadlock found when trying to get lock; try restarting transaction"),
            Class::Retry
        );
        assert_eq!(classify_message("database is locked"), Class::Retry);
    }

    #[test]
    fn a_group_replication_conflict_is_retried_and_a_read_only_server_is_unavailable() {
        assert_eq!(
            classify_message("Plugin instructed the server to rollback the current transaction."),
            Class::Retry
        );
        for message in [
            "The MySQL server is running with the --super-read-only option so it cannot execute this statement",
            "The MariaDB server is running with the --read-only option so it cannot execute this statement",
        ] {
            assert_eq!(classify_message(message), Class::NotServing, "{message}");
        }
    }

    #[test]
    fn a_lock_wait_timeout_fails_fast_instead_of_waiting_again() {
        assert_eq!(
            classify_message("Lock wait timeout exceeded; try restarting transaction"),
            Class::NotServing
        );
    }

    #[test]
    fn a_galera_node_outside_the_primary_component_is_unavailable() {
        for message in [
            "WSREP has not yet prepared node for application use",
            "Error while appending streaming replication fragment(provider status: Not connected to Primary Component)",
            "WSREP replication failed. Check your wsrep connection state and retry the query.",
        ] {
            assert_eq!(classify_message(message), Class::NotServing, "{message}");
            let err = DieselError::DatabaseError(
                diesel::result::DatabaseErrorKind::Unknown,
                Box::new(message.to_owned()),
            );
            assert!(matches!(
                StoreError::from_query("login", &err),
                StoreError::Unavailable(_)
            ));
        }
    }

    #[test]
    fn lost_connections_are_unavailable_and_constraint_errors_are_not() {
        assert_eq!(
            classify_message("Input/output error: Connection reset by peer (os error 104)"),
            Class::Unavailable
        );
        assert_eq!(
            classify_message("Driver error: `Connection to the server is closed.'"),
            Class::Unavailable
        );
        assert_eq!(
            classify_message("Duplicate entry 'x' for key 'PRIMARY'"),
            Class::Other
        );
    }

    #[test]
    fn quoted_values_are_redacted_from_messages() {
        let m = redact_values(
            "You have an error in your SQL syntax; check the manual near 'X'2b3836313335'), X'3836'' at line 1",
        );
        assert!(!m.contains("2b38"), "{m}");
        assert!(!m.contains("3836"), "{m}");
        assert!(m.ends_with("near '…' at line 1"), "{m}");
        let m = redact_values("Duplicate entry '+8613580006666' for key 'users_phone_key'");
        assert!(!m.contains("8613580006666"), "{m}");
        assert!(m.starts_with("Duplicate entry '"), "{m}");
    }

    #[test]
    fn the_url_password_is_found_and_redacted() {
        let url = "mysql://app:s3cr%40t@db:3306/mp?x=1";
        assert_eq!(url_password(url), Some("s3cr%40t"));
        assert_eq!(url_password("mysql://app@db/mp"), None);
        assert_eq!(url_password("sqlite://x.db"), None);
        let m = redact_secret("bad url mysql://app:s3cr%40t@db", url_password(url));
        assert!(!m.contains("s3cr"), "{m}");
    }

    #[test]
    fn retryable_errors_become_contention() {
        let err = DieselError::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new(
                "Deadlock found when trying to get lock; try restarting transaction".to_owned(),
            ),
        );
        assert!(matches!(
            StoreError::from_query("login", &err),
            StoreError::Contention
        ));
    }
}

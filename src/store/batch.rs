//! The login transaction in **one round trip** on MySQL-family servers that are not
//! Galera nodes (MariaDB, MySQL, TiDB): one multi-statement request whose last
//! statement reads back the user's id, sent over a connection of a pool of plain
//! `mysql_async` connections.
//!
//! Why a pool of its own: diesel-async runs a multi-statement request with
//! `query_drop`, which drops result rows, and prepares every statement that returns
//! rows (a prepared statement cannot hold several statements), so through diesel the
//! batch needs a second round trip to read the id. `mysql_async`'s `query_iter` reads
//! every result of the request, the last one included. Everything else in the store
//! stays on diesel-async; the two pools share `pool_size` between them (see
//! `store::mysql_pool_sizes`), so a replica still holds at most `pool_size` connections.

use super::{
    LoginOutcome, LoginRecord,
    error::{Class, classify},
    mysql::VerifyWindow,
};
use crate::domain::UserId;
use diesel::{
    ConnectionError, QueryResult,
    result::{DatabaseErrorKind, Error as DieselError},
};
use diesel_async::pooled_connection::PoolError;
use mysql_async::prelude::Queryable as _;
use std::time::Duration;

/// A pooled `mysql_async` connection.
pub(super) struct BatchConn {
    conn: mysql_async::Conn,
    /// Set while a batch runs and cleared once its transaction is over (committed, or
    /// rolled back after a failure). Still set when the pool gets the connection back,
    /// it means the batch was cancelled midway or its rollback failed: the connection
    /// may hold an open transaction and is dropped, never handed out again.
    dirty: bool,
}

/// Makes the pool's connections: the same session as diesel-async's (UTC,
/// utf8mb4, CLIENT_FOUND_ROWS, which the user upsert's row count relies on), connected
/// within `connect_timeout`, verified on checkout only inside a [`VerifyWindow`].
pub(super) struct Manager {
    opts: mysql_async::Opts,
    connect_timeout: Duration,
    window: VerifyWindow,
}

/// Session settings of every connection: diesel-async's, in one statement.
const SESSION_SETUP: &str = "SET time_zone = '+00:00', NAMES utf8mb4";

impl Manager {
    /// The manager for `url`; `galera` adds the Galera session settings (an operator
    /// may force the batch on a Galera node with `login_statements = batch`).
    pub(super) fn new(
        url: &str,
        connect_timeout: Duration,
        window: VerifyWindow,
        galera: bool,
    ) -> Result<Manager, ConnectionError> {
        let opts = mysql_async::Opts::from_url(url)
            .map_err(|e| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
        let mut init = vec![SESSION_SETUP.to_owned()];
        if galera {
            init.push(super::galera::session_setup());
        }
        let opts = mysql_async::OptsBuilder::from_opts(opts)
            .init(init)
            .client_found_rows(true)
            .into();
        Ok(Manager {
            opts,
            connect_timeout,
            window,
        })
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = BatchConn;
    type Error = PoolError;

    async fn connect(&self) -> Result<BatchConn, PoolError> {
        match tokio::time::timeout(
            self.connect_timeout,
            mysql_async::Conn::new(self.opts.clone()),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(BatchConn { conn, dirty: false }),
            Ok(Err(e)) => Err(PoolError::ConnectionError(connection_error(e))),
            Err(_) => Err(PoolError::ConnectionError(ConnectionError::BadConnection(
                format!(
                    "no answer from the database server within {} ms",
                    self.connect_timeout.as_millis()
                ),
            ))),
        }
    }

    async fn is_valid(&self, conn: &mut BatchConn) -> Result<(), PoolError> {
        if !self.window.is_open() {
            return Ok(());
        }
        // As diesel's pool does (see `mysql::verify`): `DO`, and a refusal means alive.
        match conn.conn.query_drop("DO 1").await.map_err(driver_error) {
            Err(e) if classify(&e) == Class::NotServing => Ok(()),
            other => other.map_err(PoolError::QueryError),
        }
    }

    fn has_broken(&self, conn: &mut BatchConn) -> bool {
        conn.dirty
    }
}

/// The login transaction in one round trip: one multi-statement request of
///
/// `BEGIN`; the user upsert (by phone; `id = LAST_INSERT_ID(id)` makes a returning
/// user's id the "last insert id"); `SET @mp_uid = LAST_INSERT_ID(), @mp_rc =
/// ROW_COUNT()` (1: inserted, 2: updated, since `login_count + 1` always changes the
/// row); the identity upsert and the session insert, both using `@mp_uid`; `COMMIT`;
/// `SELECT @mp_uid, @mp_rc` (connection variables: no table is read).
///
/// Values are inlined so the request is one packet: every string as a hex literal
/// (`X'..'`: nothing to escape, no injection possible), numbers as decimals. The
/// server runs the statements in order and stops at the first that fails (deadlock,
/// a write conflict at COMMIT, a lost connection): the SELECT only answers after the
/// COMMIT succeeded. After a failure the open transaction is rolled back (one more
/// round trip, on the failure path only) and the caller retries as with the other
/// forms.
pub(super) async fn record_login(
    conn: &mut BatchConn,
    login: &LoginRecord<'_>,
) -> QueryResult<LoginOutcome> {
    let batch = login_batch(login);
    conn.dirty = true;
    let vars = match run_batch(&mut conn.conn, batch).await {
        Ok(vars) => vars,
        Err(err) => {
            // A failed rollback leaves `dirty` set: the pool drops the connection.
            if conn.conn.query_drop("ROLLBACK").await.is_ok() {
                conn.dirty = false;
            }
            return Err(err);
        }
    };
    conn.dirty = false;
    match vars {
        Some((Some(id), Some(rc))) => Ok(LoginOutcome {
            user_id: UserId(id),
            is_new_user: rc == 1,
        }),
        other => Err(DieselError::DeserializationError(
            format!("the login batch answered {other:?} for the user id and row count").into(),
        )),
    }
}

/// The id and row count the batch's last statement read.
type LoginVars = Option<(Option<i64>, Option<i64>)>;

/// Sends the batch and reads every result, keeping the last row seen.
async fn run_batch(conn: &mut mysql_async::Conn, batch: String) -> QueryResult<LoginVars> {
    let mut result = conn.query_iter(batch).await.map_err(driver_error)?;
    let mut vars = None;
    loop {
        for row in result
            .try_collect::<(Option<i64>, Option<i64>)>()
            .await
            .map_err(driver_error)?
        {
            vars = Some(row.map_err(|e| DieselError::DeserializationError(Box::new(e)))?);
        }
        if result.is_empty() {
            break;
        }
    }
    // A statement that failed after the first one is held as the connection's pending
    // result, and `is_empty` is already true then: only reading on reports it.
    result.drop_result().await.map_err(driver_error)?;
    Ok(vars)
}

/// Appends `value` as a MySQL hex literal (`X'..'`), `''` when empty, or `NULL`.
fn push_hex(out: &mut String, value: Option<&[u8]>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    match value {
        None => out.push_str("NULL"),
        Some([]) => out.push_str("''"),
        Some(bytes) => {
            out.reserve(bytes.len() * 2 + 3);
            out.push_str("X'");
            for b in bytes {
                out.push(char::from(DIGITS[usize::from(b >> 4)]));
                out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
            }
            out.push('\'');
        }
    }
}

/// The multi-statement login transaction (see [`record_login`]).
pub(super) fn login_batch(login: &LoginRecord<'_>) -> String {
    use std::fmt::Write as _;
    let phone = login.phone.e164();
    let now = login.now_ms;
    let hex = |value: &[u8]| {
        let mut out = String::new();
        push_hex(&mut out, Some(value));
        out
    };
    let (app, openid) = (
        hex(login.app_id.as_str().as_bytes()),
        hex(login.openid.as_str().as_bytes()),
    );
    let mut sql = String::with_capacity(1536);
    sql.push_str(
        "BEGIN; INSERT INTO users \
         (phone, country_code, login_count, created_at, updated_at, last_login_at) VALUES (",
    );
    push_hex(&mut sql, Some(phone.as_bytes()));
    sql.push_str(", ");
    push_hex(&mut sql, Some(login.phone.country_code().as_bytes()));
    let _ = write!(
        sql,
        ", 1, {now}, {now}, {now}) \
         ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id), login_count = login_count + 1, \
         updated_at = VALUES(updated_at), last_login_at = VALUES(last_login_at); \
         SET @mp_uid = LAST_INSERT_ID(), @mp_rc = ROW_COUNT(); \
         INSERT INTO wechat_identities \
         (app_id, openid, user_id, unionid, session_key, session_key_expires_at, created_at, updated_at) \
         VALUES ({app}, {openid}, @mp_uid, "
    );
    push_hex(&mut sql, login.unionid.map(|u| u.as_str().as_bytes()));
    sql.push_str(", ");
    push_hex(&mut sql, Some(login.sealed_session_key));
    let _ = write!(
        sql,
        ", {key_exp}, {now}, {now}) \
         ON DUPLICATE KEY UPDATE user_id = VALUES(user_id), \
         unionid = COALESCE(VALUES(unionid), unionid), session_key = VALUES(session_key), \
         session_key_expires_at = VALUES(session_key_expires_at), updated_at = VALUES(updated_at);",
        key_exp = login.session_key_expires_at_ms,
    );
    if let Some(session) = login.session {
        sql.push_str(
            " INSERT INTO sessions \
             (id, user_id, app_id, openid, generation, created_at, last_used_at, idle_expires_at, expires_at) \
             VALUES (",
        );
        push_hex(&mut sql, Some(session.id.as_bytes()));
        let _ = write!(
            sql,
            ", @mp_uid, {app}, {openid}, 1, {created}, {created}, {idle}, {expires});",
            created = session.created_at_ms,
            idle = session.idle_expires_at_ms,
            expires = session.expires_at_ms,
        );
    }
    sql.push_str(" COMMIT; SELECT CAST(@mp_uid AS SIGNED), CAST(@mp_rc AS SIGNED)");
    sql
}

/// A `mysql_async` error as diesel-async reports it (so one classification serves
/// both pools): a server error keeps its message, anything else its description.
fn driver_error(err: mysql_async::Error) -> DieselError {
    match err {
        mysql_async::Error::Server(e) => {
            let kind = match e.code {
                1062 | 1586 | 1859 => DatabaseErrorKind::UniqueViolation,
                _ => DatabaseErrorKind::Unknown,
            };
            DieselError::DatabaseError(kind, Box::new(e.message))
        }
        e => DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(e.to_string())),
    }
}

/// A failure to connect, as diesel-async reports it.
fn connection_error(err: mysql_async::Error) -> ConnectionError {
    match err {
        mysql_async::Error::Url(e) => ConnectionError::InvalidConnectionUrl(e.to_string()),
        mysql_async::Error::Server(_) => {
            ConnectionError::CouldntSetupConfiguration(driver_error(err))
        }
        e => ConnectionError::BadConnection(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_hex_literals_that_need_no_escaping() {
        let hex = |v: Option<&[u8]>| {
            let mut out = String::new();
            push_hex(&mut out, v);
            out
        };
        assert_eq!(hex(None), "NULL");
        assert_eq!(hex(Some(b"")), "''");
        assert_eq!(hex(Some(b"a'\\;")), "X'61275c3b'");
        assert_eq!(hex(Some(&[0x00, 0xff])), "X'00ff'");
    }

    #[test]
    fn driver_errors_keep_what_the_classification_reads() {
        let deadlock = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1213,
            message: "Deadlock found when trying to get lock; try restarting transaction".into(),
            state: "40001".into(),
        });
        assert_eq!(classify(&driver_error(deadlock)), Class::Retry);
        let gone = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "Connection reset by peer",
        )));
        assert_eq!(classify(&driver_error(gone)), Class::Unavailable);
        let taken = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1062,
            message: "Duplicate entry 'x' for key 'PRIMARY'".into(),
            state: "23000".into(),
        });
        assert!(matches!(
            driver_error(taken),
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
        ));
    }

    #[test]
    fn a_bad_url_is_refused_as_a_url_problem() {
        let refused = Manager::new(
            "mysql://u:p@host:notaport/db",
            Duration::from_secs(1),
            VerifyWindow::default(),
            false,
        );
        assert!(matches!(
            refused,
            Err(ConnectionError::InvalidConnectionUrl(_))
        ));
    }
}

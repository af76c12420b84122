//! The connection pool's edges: the first-come-first-served checkout, pool errors that
//! say why, and the backoff between retried transactions.

use super::{Store, StoreError, error};
use diesel_async::pooled_connection::PoolError;
use parking_lot::Mutex;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// A bb8 pool behind its own first-come-first-served gate: one permit per connection
/// the pool may hold. bb8 is not fair: a waiter woken for a returned connection races
/// every new caller for it, so under load (callers > connections) some requests lose
/// over and over and wait seconds while the median stays at milliseconds. The gate
/// queues callers in order.
pub(super) struct Gated<M: bb8::ManageConnection> {
    pool: bb8::Pool<M>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl<M: bb8::ManageConnection> Clone for Gated<M> {
    fn clone(&self) -> Self {
        Gated {
            pool: self.pool.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<M: bb8::ManageConnection<Error = PoolError>> Gated<M> {
    /// A pool of at most `size` connections that opens them as needed; connection
    /// failures go to `errors`.
    pub(super) fn new(
        manager: M,
        size: u32,
        acquire_timeout: Duration,
        errors: &LastConnectError,
    ) -> Self {
        let size = size.max(1);
        Gated {
            pool: bb8::Pool::builder()
                .max_size(size)
                .connection_timeout(acquire_timeout)
                .error_sink(Box::new(errors.clone()))
                .build_unchecked(manager),
            gate: Arc::new(tokio::sync::Semaphore::new(size as usize)),
        }
    }

    /// Hands an already open connection to the pool.
    pub(super) fn add(&self, conn: M::Connection) {
        // Only fails when the pool is full, which a new pool is not.
        let _ = self.pool.add(conn);
    }

    /// A connection the caller owns, outside the gate (migrations, which run once at
    /// start-up, move theirs to a blocking thread).
    pub(super) async fn get_owned(
        &self,
    ) -> Result<bb8::PooledConnection<'static, M>, bb8::RunError<PoolError>> {
        self.pool.get_owned().await
    }

    pub(super) fn state(&self) -> bb8::State {
        self.pool.state()
    }
}

impl Store {
    /// A pooled connection, after a first-come-first-served wait for a permit (see
    /// [`Gated`]); both waits together are bounded by `acquire_timeout_ms`.
    pub(super) async fn checkout<'p, M>(
        &self,
        pool: &'p Gated<M>,
    ) -> Result<Checkout<'p, M>, StoreError>
    where
        M: bb8::ManageConnection<Error = PoolError>,
    {
        let checkout =
            async {
                let permit =
                    pool.gate.clone().acquire_owned().await.map_err(|_| {
                        StoreError::Unexpected("the connection gate was closed".into())
                    })?;
                let conn = pool.pool.get().await.map_err(|e| self.pool_error(e))?;
                Ok(Checkout {
                    conn,
                    _permit: permit,
                })
            };
        match tokio::time::timeout(self.acquire_timeout, checkout).await {
            Ok(result) => result,
            Err(_) => Err(self.pool_error(bb8::RunError::TimedOut)),
        }
    }

    pub(super) fn pool_error(&self, err: bb8::RunError<PoolError>) -> StoreError {
        match err {
            bb8::RunError::TimedOut => {
                let cause = self
                    .last_connect_error
                    .recent()
                    .map(|e| format!(" (last connection error: {e})"))
                    .unwrap_or_default();
                StoreError::Unavailable(format!(
                    "no database connection available within {} ms{cause}",
                    self.acquire_timeout.as_millis()
                ))
            }
            bb8::RunError::User(e) => StoreError::Unavailable(pool_error_message(&e)),
        }
    }
}

/// A checked-out connection and its gate permit. Fields drop in order: the connection
/// goes back to the pool before the permit lets the next caller in.
pub(super) struct Checkout<'p, M: bb8::ManageConnection> {
    conn: bb8::PooledConnection<'p, M>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<M: bb8::ManageConnection> std::ops::Deref for Checkout<'_, M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        &self.conn
    }
}

impl<M: bb8::ManageConnection> std::ops::DerefMut for Checkout<'_, M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.conn
    }
}

fn pool_error_message(err: &PoolError) -> String {
    // Pool-made connections use the URL the store was given; mysql_async's messages
    // do not echo it, and quoted values are blanked anyway.
    error::redact_values(&err.to_string())
}

/// Jittered exponential backoff before attempt `attempt + 1`: ~5, 10, 20 ms ... capped at 200 ms.
pub(super) fn backoff(attempt: u32) -> Duration {
    use rand::Rng as _;
    let base = 5u64.saturating_mul(1 << attempt.min(6)).min(200);
    Duration::from_millis(base / 2 + rand::rng().random_range(0..=base / 2))
}

/// Remembers the pool's last failure to open a connection, so a pool timeout can say
/// why ("Connection refused") instead of only "timed out".
#[derive(Clone, Default, Debug)]
pub(super) struct LastConnectError(Arc<Mutex<Option<(Instant, String)>>>);

impl LastConnectError {
    const RECENT: Duration = Duration::from_secs(30);

    fn recent(&self) -> Option<String> {
        let guard = self.0.lock();
        guard
            .as_ref()
            .filter(|(at, _)| at.elapsed() < Self::RECENT)
            .map(|(_, e)| e.clone())
    }
}

impl bb8::ErrorSink<PoolError> for LastConnectError {
    fn sink(&self, err: PoolError) {
        let message = pool_error_message(&err);
        tracing::warn!(error = %message, "database connection failed");
        *self.0.lock() = Some((Instant::now(), message));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<PoolError>> {
        Box::new(self.clone())
    }
}

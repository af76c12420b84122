//! Drives the load: a closed loop (C workers, each sends its next request when the
//! previous answers) or an open loop (requests sent at a fixed rate; latency measured
//! from each request's intended send time, so a stalled server cannot hide its queue).

use crate::target::Outcome;
use hdrhistogram::Histogram;
use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// Latencies are recorded in microseconds, up to this.
const MAX_LATENCY_US: u64 = 120_000_000;

/// The tally of one measured phase.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of every completed request (successes and errors), µs.
    pub latency_us: Histogram<u64>,
    /// Successful requests.
    pub ok: u64,
    /// Successful requests that created their user.
    pub new_users: u64,
    /// Errors by reason.
    pub errors: BTreeMap<String, u64>,
    /// Requests whose client hung up before the answer (not in the latency histogram).
    pub abandoned: u64,
    /// Wall time of the phase.
    pub elapsed: Duration,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency_us: new_histogram(),
            ok: 0,
            new_users: 0,
            errors: BTreeMap::new(),
            abandoned: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn record(&mut self, latency: Duration, outcome: Outcome) {
        if outcome == Outcome::Abandoned {
            self.abandoned += 1;
            return;
        }
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        let _ = self.latency_us.record(us);
        match outcome {
            Outcome::Ok { new_user } => {
                self.ok += 1;
                self.new_users += u64::from(new_user);
            }
            Outcome::Err(reason) => *self.errors.entry(reason).or_default() += 1,
            Outcome::Abandoned => {}
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency_us.add(&other.latency_us);
        self.ok += other.ok;
        self.new_users += other.new_users;
        self.abandoned += other.abandoned;
        for (reason, n) in other.errors {
            *self.errors.entry(reason).or_default() += n;
        }
    }

    /// Errors of all reasons.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

// Constant bounds that hdrhistogram accepts.
#[allow(clippy::expect_used)]
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid constant histogram bounds")
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// `concurrency` workers back to back.
    Closed {
        /// Workers.
        concurrency: usize,
    },
    /// `rate` requests per second, at most `max_in_flight` outstanding.
    Open {
        /// Requests per second.
        rate: f64,
        /// Cap on outstanding requests (the dispatcher waits beyond it; latency still
        /// counts from the intended time).
        max_in_flight: usize,
    },
}

/// Runs `count` requests (`send(lane, index)`) at `pace`, stopping early at `deadline`.
pub async fn drive<F, Fut>(count: usize, pace: Pace, deadline: Option<Duration>, send: F) -> Tally
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let send = Arc::new(send);
    let started = Instant::now();
    let stop_at = deadline.map(|d| started + d);
    let mut tally = match pace {
        Pace::Closed { concurrency } => {
            let next = Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = (0..concurrency.max(1))
                .map(|lane| {
                    let (send, next) = (send.clone(), next.clone());
                    tokio::spawn(async move {
                        let mut tally = Tally::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= count || stop_at.is_some_and(|t| Instant::now() >= t) {
                                break;
                            }
                            let t0 = Instant::now();
                            let outcome = send(lane, i).await;
                            tally.record(t0.elapsed(), outcome);
                        }
                        tally
                    })
                })
                .collect();
            let mut tally = Tally::new();
            for worker in workers {
                if let Ok(t) = worker.await {
                    tally.merge(t);
                }
            }
            tally
        }
        Pace::Open {
            rate,
            max_in_flight,
        } => {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Duration, Outcome)>();
            let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
            let collector = tokio::spawn(async move {
                let mut tally = Tally::new();
                while let Some((latency, outcome)) = rx.recv().await {
                    tally.record(latency, outcome);
                }
                tally
            });
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let start = tokio::time::Instant::now();
            for i in 0..count {
                let intended = start + interval.mul_f64(i as f64);
                if stop_at.is_some_and(|t| intended.into_std() >= t) {
                    break;
                }
                tokio::time::sleep_until(intended).await;
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (send, tx) = (send.clone(), tx.clone());
                tokio::spawn(async move {
                    let outcome = send(i, i).await;
                    let _ = tx.send((intended.elapsed(), outcome));
                    drop(permit);
                });
            }
            drop(tx);
            collector.await.unwrap_or_else(|_| Tally::new())
        }
    };
    tally.elapsed = started.elapsed();
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_closed_loop_sends_every_request_once_and_counts_outcomes() {
        let tally = drive(
            100,
            Pace::Closed { concurrency: 8 },
            None,
            |_, i| async move {
                if i % 10 == 0 {
                    Outcome::Err("BOOM".into())
                } else if i % 10 == 5 {
                    Outcome::Abandoned
                } else {
                    Outcome::Ok {
                        new_user: i % 2 == 1,
                    }
                }
            },
        )
        .await;
        assert_eq!(tally.ok, 80);
        assert_eq!(tally.errors.get("BOOM"), Some(&10));
        assert_eq!(tally.abandoned, 10);
        assert_eq!(tally.new_users, 40);
        // Abandoned requests have no answer, hence no latency.
        assert_eq!(tally.latency_us.len(), 90);
    }

    #[tokio::test]
    async fn the_open_loop_counts_latency_from_the_intended_send_time() {
        // One request in flight at a time, each taking 20 ms, sent at 1000/s: the queue
        // behind the first request must show up as latency.
        let open = Pace::Open {
            rate: 1000.0,
            max_in_flight: 1,
        };
        let tally = drive(10, open, None, |_, _| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Outcome::Ok { new_user: false }
        })
        .await;
        assert_eq!(tally.ok, 10);
        assert!(
            tally.latency_us.max() >= 150_000,
            "{}",
            tally.latency_us.max()
        );
    }
}

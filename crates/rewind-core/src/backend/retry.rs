//! The one retry policy of the remote backends (the rewind server's client,
//! SFTP, S3 Object Lock requests).
//!
//! Whether a request is tried again is decided by its error's transience,
//! not by the loop: each attempt answers [`Failure::Transient`] (a dropped
//! connection, a 503 from a restarting server) or [`Failure::Permanent`]
//! (an answer that will not change: no such file, refused, wrong host), and
//! [`Retry`] sleeps and tries again only after a transient one, up to its
//! number of attempts. Delays grow by a factor and are shortened by a random
//! jitter, so that many clients cut off at once do not come back at once;
//! the jitter only shortens them, so a policy's [`Retry::total`] is a bound.
//!
//! S3's object requests are not retried here: opendal's `RetryLayer` does it.

use std::future::Future;
use std::time::Duration;

/// An attempt's error, with whether another attempt may succeed.
#[derive(Debug)]
pub enum Failure<E> {
    /// May pass on another attempt.
    Transient(E),
    /// Will fail the same way again: returned at once.
    Permanent(E),
}

impl<E> Failure<E> {
    /// [`Failure::Transient`] when `transient`, else [`Failure::Permanent`].
    pub fn transient_if(transient: bool, error: E) -> Self {
        if transient {
            Failure::Transient(error)
        } else {
            Failure::Permanent(error)
        }
    }

    /// Classifies an error that knows its own transience.
    pub fn classify(error: E) -> Self
    where
        E: Transience,
    {
        let t = error.is_transient();
        Failure::transient_if(t, error)
    }

    /// True for [`Failure::Transient`].
    pub fn is_transient(&self) -> bool {
        matches!(self, Failure::Transient(_))
    }

    /// The error.
    pub fn into_inner(self) -> E {
        match self {
            Failure::Transient(e) | Failure::Permanent(e) => e,
        }
    }
}

/// Errors whose transience is known from the value alone.
pub trait Transience {
    /// True when another attempt may succeed.
    fn is_transient(&self) -> bool;
}

/// Attempts that all failed: the last error, and how many were made.
#[derive(Debug)]
pub struct Failed<E> {
    /// The last attempt's error.
    pub error: E,
    /// How many attempts were made (1 when the error was permanent at once).
    pub attempts: u32,
    /// True when the last error was transient (the attempts ran out).
    pub transient: bool,
}

impl<E> Failed<E> {
    /// `" (after N attempts)"` when more than one was made, else `""`:
    /// for error messages.
    pub fn after(&self) -> String {
        if self.attempts > 1 {
            format!(" (after {} attempts)", self.attempts)
        } else {
            String::new()
        }
    }
}

/// How often and how patiently a request is tried.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retry {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// The delay before the second attempt.
    pub first_delay: Duration,
    /// Each further delay is this many times the one before.
    pub factor: u32,
    /// No delay is longer than this.
    pub max_delay: Duration,
    /// Up to this fraction (0 to 1) of each delay is taken off at random.
    pub jitter: f64,
}

impl Retry {
    /// A policy of `attempts` attempts, the first retry after `first_delay`
    /// and each further delay `factor` times the one before, with a jitter
    /// of up to a quarter of each delay and no delay above a minute.
    pub const fn new(attempts: u32, first_delay: Duration, factor: u32) -> Retry {
        Retry {
            attempts,
            first_delay,
            factor,
            max_delay: Duration::from_secs(60),
            jitter: 0.25,
        }
    }

    /// The same policy without jitter (tests).
    pub const fn without_jitter(self) -> Retry {
        Retry {
            jitter: 0.0,
            ..self
        }
    }

    /// The delay before attempt `attempt + 1`, before jitter (`attempt` is
    /// 1 for the delay after the first attempt).
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut d = self.first_delay;
        for _ in 1..attempt {
            d = d.saturating_mul(self.factor);
            if d >= self.max_delay {
                break;
            }
        }
        d.min(self.max_delay)
    }

    /// The longest time spent waiting between attempts, if all fail.
    pub fn total(&self) -> Duration {
        (1..self.attempts).map(|a| self.delay(a)).sum()
    }

    /// The delay before attempt `attempt + 1`, with jitter.
    fn jittered(&self, attempt: u32) -> Duration {
        let d = self.delay(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return d;
        }
        let mut b = [0u8; 4];
        crate::crypto::random_bytes(&mut b);
        let r = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
        d.mul_f64(1.0 - jitter * r)
    }

    /// Runs `op` (given the attempt number, from 1) until it succeeds, fails
    /// permanently, or has been tried [`Retry::attempts`] times, sleeping
    /// between attempts.
    pub fn run<T, E>(&self, op: impl FnMut(u32) -> Result<T, Failure<E>>) -> Result<T, Failed<E>> {
        self.run_with_sleep(op, std::thread::sleep)
    }

    /// [`Retry::run`] with the sleep given (tests record the delays).
    pub fn run_with_sleep<T, E>(
        &self,
        mut op: impl FnMut(u32) -> Result<T, Failure<E>>,
        mut sleep: impl FnMut(Duration),
    ) -> Result<T, Failed<E>> {
        let mut attempt = 1;
        loop {
            match op(attempt) {
                Ok(v) => return Ok(v),
                Err(f) => match self.give_up(f, attempt) {
                    Err(failed) => return Err(failed),
                    Ok(()) => sleep(self.jittered(attempt)),
                },
            }
            attempt += 1;
        }
    }

    /// [`Retry::run`] for async code: `sleep` is the runtime's (the core
    /// has none), e.g. `tokio::time::sleep`.
    pub async fn run_async<T, E, Fut, S>(
        &self,
        mut op: impl FnMut(u32) -> Fut,
        sleep: impl Fn(Duration) -> S,
    ) -> Result<T, Failed<E>>
    where
        Fut: Future<Output = Result<T, Failure<E>>>,
        S: Future<Output = ()>,
    {
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(f) => match self.give_up(f, attempt) {
                    Err(failed) => return Err(failed),
                    Ok(()) => sleep(self.jittered(attempt)).await,
                },
            }
            attempt += 1;
        }
    }

    /// `Ok(())` when attempt `attempt` failed with `f` and another is due,
    /// else what to return.
    fn give_up<E>(&self, f: Failure<E>, attempt: u32) -> Result<(), Failed<E>> {
        let transient = f.is_transient();
        if transient && attempt < self.attempts {
            return Ok(());
        }
        Err(Failed {
            error: f.into_inner(),
            attempts: attempt,
            transient,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Retry = Retry::new(4, Duration::from_millis(10), 3);

    #[test]
    fn delays_grow_by_the_factor_up_to_the_maximum() {
        let p = POLICY.without_jitter();
        assert_eq!(
            (1..4).map(|a| p.delay(a)).collect::<Vec<_>>(),
            [10, 30, 90].map(Duration::from_millis)
        );
        assert_eq!(p.total(), Duration::from_millis(130));
        let capped = Retry {
            max_delay: Duration::from_millis(50),
            ..p
        };
        assert_eq!(capped.delay(3), Duration::from_millis(50));
        assert_eq!(
            Retry::new(1, Duration::from_secs(1), 2).total(),
            Duration::ZERO
        );
        // Huge factors do not overflow.
        assert_eq!(
            Retry::new(40, Duration::from_secs(1), u32::MAX).delay(39),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn transient_errors_are_retried_with_growing_delays_up_to_the_attempts() {
        let mut slept = Vec::new();
        let mut seen = Vec::new();
        let r: Result<(), _> = POLICY.without_jitter().run_with_sleep(
            |attempt| {
                seen.push(attempt);
                Err(Failure::Transient(format!("failure {attempt}")))
            },
            |d| slept.push(d),
        );
        let failed = r.unwrap_err();
        assert_eq!(failed.error, "failure 4", "the last error is returned");
        assert_eq!(failed.attempts, 4);
        assert!(failed.transient);
        assert_eq!(failed.after(), " (after 4 attempts)");
        assert_eq!(seen, [1, 2, 3, 4]);
        assert_eq!(slept, [10, 30, 90].map(Duration::from_millis));
    }

    #[test]
    fn a_permanent_error_is_returned_at_once() {
        let mut slept = Vec::new();
        let mut calls = 0;
        let r: Result<(), _> = POLICY.run_with_sleep(
            |_| {
                calls += 1;
                Err(Failure::Permanent("no such file"))
            },
            |d| slept.push(d),
        );
        let failed = r.unwrap_err();
        assert_eq!(
            (failed.error, failed.attempts, failed.transient),
            ("no such file", 1, false)
        );
        assert_eq!(failed.after(), "");
        assert_eq!(calls, 1);
        assert!(slept.is_empty());
    }

    #[test]
    fn a_permanent_error_after_transient_ones_stops_the_retries() {
        let r: Result<(), _> = POLICY.run_with_sleep(
            |attempt| {
                Err(Failure::transient_if(
                    attempt < 2,
                    format!("failure {attempt}"),
                ))
            },
            |_| {},
        );
        let failed = r.unwrap_err();
        assert_eq!((failed.error.as_str(), failed.attempts), ("failure 2", 2));
        assert!(!failed.transient);
    }

    #[test]
    fn success_after_transient_errors_really_sleeps() {
        let start = std::time::Instant::now();
        let r = Retry::new(5, Duration::from_millis(2), 2).run(|attempt| {
            if attempt < 3 {
                Err(Failure::Transient(()))
            } else {
                Ok(attempt)
            }
        });
        assert_eq!(r.unwrap(), 3);
        // 2 ms + 4 ms, less up to a quarter of jitter.
        assert!(start.elapsed() >= Duration::from_micros(4500));
    }

    #[test]
    fn jitter_only_shortens_delays() {
        for a in 1..4 {
            let d = POLICY.jittered(a);
            assert!(
                d <= POLICY.delay(a) && d >= POLICY.delay(a).mul_f64(0.75),
                "{d:?}"
            );
        }
    }

    #[test]
    fn errors_that_know_their_transience_classify_themselves() {
        struct Busy(bool);
        impl Transience for Busy {
            fn is_transient(&self) -> bool {
                self.0
            }
        }
        assert!(Failure::classify(Busy(true)).is_transient());
        assert!(!Failure::classify(Busy(false)).is_transient());
    }

    #[test]
    fn the_async_run_retries_the_same_way() {
        let slept = std::cell::RefCell::new(Vec::new());
        let policy = POLICY.without_jitter();
        let fut = policy.run_async(
            |attempt| async move {
                if attempt < 4 {
                    Err(Failure::Transient(attempt))
                } else {
                    Ok("done")
                }
            },
            |d| {
                slept.borrow_mut().push(d);
                std::future::ready(())
            },
        );
        assert_eq!(block_on(fut).unwrap(), "done");
        assert_eq!(*slept.borrow(), [10, 30, 90].map(Duration::from_millis));
    }

    /// Polls a future that never waits (no runtime in the core).
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}

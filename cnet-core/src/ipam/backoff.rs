//! Retry pacing for a store that may be away (etcd restarting, a node cut
//! off from it): exponential, capped, with jitter, so many nodes that lost
//! the store at the same moment do not all come back at the same instant.
//! Pure apart from the jitter's random numbers.

use std::time::{Duration, Instant};

/// Exponential backoff with a cap and "equal jitter": the n-th wait after a
/// failure is uniformly random in `[d/2, d]` where `d = min(cap, first·2ⁿ)`.
/// A success ([`Backoff::reset`]) starts again from `first`.
///
/// ```
/// use cnet_core::ipam::Backoff;
/// use std::time::Duration;
/// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// assert!(b.ready());                   // nothing failed yet
/// let wait = b.failed();                // 50..=100 ms
/// assert!(wait <= Duration::from_millis(100) && !b.ready());
/// b.reset();
/// assert!(b.ready());
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    failures: u32,
    next: Option<Instant>,
}

impl Backoff {
    /// Start at `first`, never wait more than `cap` (`cap` is raised to
    /// `first` if below it).
    pub fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap: cap.max(first),
            failures: 0,
            next: None,
        }
    }

    /// Record a failure; returns how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        let d = self
            .first
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let half = d / 2;
        let nanos = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
        let wait = half + Duration::from_nanos(fastrand::u64(0..=nanos));
        self.next = Some(Instant::now() + wait);
        wait
    }

    /// Record a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.next = None;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether the wait after the last failure is over (always after a
    /// success).
    pub fn ready(&self) -> bool {
        self.next.is_none_or(|t| Instant::now() >= t)
    }

    /// How long until [`Backoff::ready`] (zero when it is).
    pub fn ready_in(&self) -> Duration {
        self.next
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    /// Sleep until [`Backoff::ready`].
    pub fn wait(&self) {
        if let Some(t) = self.next {
            std::thread::sleep(t.saturating_duration_since(Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let waits: Vec<Duration> = (0..8).map(|_| b.failed()).collect();
        for (i, w) in waits.iter().enumerate() {
            let d = ms(100 << i.min(4)).min(ms(1000));
            assert!(
                *w >= d / 2 && *w <= d,
                "wait {i}: {w:?} not in [{:?}, {d:?}]",
                d / 2
            );
        }
        assert_eq!(b.failures(), 8);
        b.reset();
        assert!(b.ready());
        assert!(b.failed() <= ms(100));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(b.failed() <= Duration::from_secs(30));
        }
    }
}

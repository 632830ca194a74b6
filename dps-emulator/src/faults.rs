//! Fault injection for device-client tests. Applies to the device API only (the service API stays
//! reliable so tests can set up enrollments while faults are armed). Counters are consumed one
//! per request, in the order: drop, fail, throttle; the delay applies to every request. Over
//! MQTT a request is a register or poll PUBLISH (a dropped one closes its connection with no
//! answer); `drop_next_mqtt_connects` closes connections right after their CONNECT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the next device-API request should suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection without an answer.
    Drop,
    /// Answer 500 with an error body.
    Fail,
    /// Answer 429 with this Retry-After (seconds).
    Throttle(u64),
}

/// Shared, live-adjustable fault settings. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<FaultsInner>,
}

#[derive(Debug, Default)]
struct FaultsInner {
    drop_next: AtomicU64,
    fail_next: AtomicU64,
    throttle_next: AtomicU64,
    throttle_retry_after: AtomicU64,
    delay_ms: AtomicU64,
    drop_next_mqtt_connects: AtomicU64,
}

fn take_one(c: &AtomicU64) -> bool {
    c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Faults {
    /// Answers the next `n` device requests with 500.
    pub fn fail_next(&self, n: u64) {
        self.inner.fail_next.store(n, Ordering::SeqCst);
    }

    /// Answers the next `n` device requests with 429 and `Retry-After: retry_after_secs`.
    pub fn throttle_next(&self, n: u64, retry_after_secs: u64) {
        self.inner
            .throttle_retry_after
            .store(retry_after_secs, Ordering::SeqCst);
        self.inner.throttle_next.store(n, Ordering::SeqCst);
    }

    /// Closes the connection instead of answering the next `n` device requests.
    pub fn drop_next(&self, n: u64) {
        self.inner.drop_next.store(n, Ordering::SeqCst);
    }

    /// Closes the next `n` MQTT connections right after their CONNECT, before the CONNACK.
    pub fn drop_next_mqtt_connects(&self, n: u64) {
        self.inner
            .drop_next_mqtt_connects
            .store(n, Ordering::SeqCst);
    }

    /// Consumes one armed MQTT CONNECT drop: whether this connection is to be closed.
    pub fn take_mqtt_connect_drop(&self) -> bool {
        take_one(&self.inner.drop_next_mqtt_connects)
    }

    /// Delays every device answer by `delay` (zero turns it off).
    pub fn delay_responses(&self, delay: Duration) {
        self.inner
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Disarms everything.
    pub fn clear(&self) {
        self.fail_next(0);
        self.throttle_next(0, 0);
        self.drop_next(0);
        self.drop_next_mqtt_connects(0);
        self.delay_responses(Duration::ZERO);
    }

    /// The current delay.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.inner.delay_ms.load(Ordering::SeqCst))
    }

    /// Consumes and returns the fault for the request being handled, if any.
    pub fn take(&self) -> Option<Fault> {
        if take_one(&self.inner.drop_next) {
            Some(Fault::Drop)
        } else if take_one(&self.inner.fail_next) {
            Some(Fault::Fail)
        } else if take_one(&self.inner.throttle_next) {
            Some(Fault::Throttle(
                self.inner.throttle_retry_after.load(Ordering::SeqCst),
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_consumed_in_order() {
        let f = Faults::default();
        f.fail_next(1);
        f.throttle_next(2, 7);
        f.drop_next(1);
        assert_eq!(f.take(), Some(Fault::Drop));
        assert_eq!(f.take(), Some(Fault::Fail));
        assert_eq!(f.take(), Some(Fault::Throttle(7)));
        assert_eq!(f.take(), Some(Fault::Throttle(7)));
        assert_eq!(f.take(), None);
    }
}

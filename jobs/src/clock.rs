//! Time as the scheduler sees it. The scheduler waits with `tokio::time`; what it reads as
//! "now" comes from a [`Clock`], so tests run it under tokio's paused time with
//! [`TokioClock`] and cover hours of schedule in milliseconds.

use chrono::{DateTime, Utc};

/// The wall-clock time the scheduler fires against.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall-clock time that follows tokio's clock from `base`: under `tokio::time::pause()` it
/// advances exactly as far as the runtime's sleeps do.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed =
            chrono::Duration::from_std(self.start.elapsed()).unwrap_or(chrono::Duration::MAX);
        self.base + elapsed
    }
}

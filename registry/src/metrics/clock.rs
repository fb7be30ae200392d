//! The clock every recorded duration is read from ([`Instant`]): quanta's over the CPU's time-stamp counter
//! (calibrated once per process) where it is usable, the monotonic clock otherwise. A reading is the raw counter
//! (one `rdtsc`), scaled to nanoseconds once per measurement; `quanta::Instant::now` would also consult a
//! thread-local mock clock and scale every reading.

use std::sync::OnceLock;
use std::time::Duration;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

fn clock() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}

/// A moment, to measure the time since.
#[derive(Debug, Clone, Copy)]
pub struct Instant(u64);

impl Instant {
    pub fn now() -> Instant {
        Instant(clock().raw())
    }

    /// The time since `self` (zero if the counter reads earlier, as another core's may).
    pub fn elapsed(self) -> Duration {
        let clock = clock();
        clock.delta(self.0, clock.raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_time_follows_the_wall_clock() {
        let (started, wall) = (Instant::now(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (measured, real) = (started.elapsed(), wall.elapsed());
        assert!(measured >= Duration::from_millis(15), "{measured:?}");
        assert!(measured <= real + Duration::from_millis(5), "{measured:?} vs {real:?}");
    }
}

//! Wall-clock and monotonic time without a timer device: the host stamps
//! each request with its real time, and the TSC measures time since then.

use crate::cpu;

/// Time as seen by one invocation.
#[derive(Clone, Copy, Default)]
pub struct Clock {
    realtime_base_ns: u64,
    tsc_base: u64,
    tsc_khz: u64,
}

impl Clock {
    /// Starts the clock at the host's timestamp for this request.
    pub fn start(realtime_ns: u64, tsc_khz: u64) -> Clock {
        Clock {
            realtime_base_ns: realtime_ns,
            tsc_base: cpu::rdtsc(),
            tsc_khz,
        }
    }

    /// Nanoseconds since the request arrived.
    pub fn elapsed_ns(&self) -> u64 {
        cpu::ticks_to_ns(cpu::rdtsc().wrapping_sub(self.tsc_base), self.tsc_khz)
    }

    /// Nanoseconds since the Unix epoch.
    pub fn realtime_ns(&self) -> u64 {
        self.realtime_base_ns.saturating_add(self.elapsed_ns())
    }

    /// A monotonic reading; its origin is the request's wall-clock time, so
    /// it never goes backwards within an invocation.
    pub fn monotonic_ns(&self) -> u64 {
        self.realtime_ns()
    }
}

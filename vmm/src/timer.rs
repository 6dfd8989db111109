//! Wall-clock limits enforced from the host.
//!
//! A POSIX timer sends a real-time signal to the vCPU's own thread when the
//! deadline passes; the signal interrupts `KVM_RUN` (`EINTR`) and the run
//! loop sees the deadline has expired. The timer keeps firing every
//! millisecond after the deadline, so a signal that lands while the thread
//! is outside `KVM_RUN` cannot be lost for good.

use std::io;
use std::sync::Once;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// The signal used to kick a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: being delivered is the point (KVM_RUN returns EINTR).
}

pub(crate) fn install_handler() -> io::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// An armed deadline for the calling thread; disarmed on drop.
pub struct Deadline {
    timer: libc::timer_t,
    at: Instant,
    limit: Duration,
}

impl Deadline {
    /// Arms a deadline `limit` from now that signals the calling thread.
    pub fn arm(limit: Duration) -> io::Result<Deadline> {
        install_handler()?;
        // SAFETY: an all-zero sigevent is a valid value; the fields that
        // matter are set below.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = kick_signal();
        // SAFETY: gettid has no preconditions.
        sev.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: sev and timer are valid for the call.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = Deadline {
            timer,
            at: Instant::now() + limit,
            limit,
        };
        let ts = |d: Duration| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos().into(),
        };
        let spec = libc::itimerspec {
            // A zero it_value would disarm the timer; a zero limit expires at once.
            it_value: ts(limit.max(Duration::from_nanos(1))),
            it_interval: ts(Duration::from_millis(1)),
        };
        // SAFETY: the timer was created above and spec is valid.
        if unsafe { libc::timer_settime(deadline.timer, 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(deadline)
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The limit this deadline was armed with.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        // SAFETY: the timer was created by `arm` and is deleted only here.
        unsafe { libc::timer_delete(self.timer) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_interrupts_a_blocking_syscall() {
        let d = Deadline::arm(Duration::from_millis(20)).unwrap();
        assert!(!d.expired());
        // A blocking read on a pipe nobody writes to is interrupted by the
        // kick signal (no SA_RESTART), just as KVM_RUN is.
        let mut fds = [0; 2];
        // SAFETY: fds is valid for two ints.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut b = [0u8; 1];
        // SAFETY: fds[0] is an open pipe and b is valid for one byte.
        let r = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
        assert_eq!(r, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EINTR));
        assert!(d.expired());
        // SAFETY: both fds are open and owned here.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}

//! [`WakeFd`]: the eventfd by which any thread wakes a loop that sleeps in
//! `poll()`, `epoll_wait()` or `io_uring_enter()`, written at most once per
//! sleep.

use crate::sync::{fence, AtomicBool, AtomicU32, Ordering};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) struct WakeFd {
    fd: OwnedFd,
    /// How many loops are between `arm` and `disarm`.
    sleeping: AtomicU32,
    /// The eventfd has been written since the last drain.
    sent: AtomicBool,
}

impl WakeFd {
    pub(crate) fn new() -> io::Result<WakeFd> {
        // SAFETY: eventfd takes no pointers; it returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(WakeFd {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            sleeping: AtomicU32::new(0),
            sent: AtomicBool::new(false),
        })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A loop is about to look at the registrations and sleep.
    pub(crate) fn arm(&self) {
        // SeqCst, and the fence: pairs with the fence in `notify`. Either
        // the loop's look at the registrations (after this) sees a change
        // made before the notifier's fence, or the notifier sees this count
        // and writes the eventfd.
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The loop is awake again.
    pub(crate) fn disarm(&self) {
        // Relaxed: the count only gates wake-ups; a late decrement costs at
        // most one spurious eventfd write.
        self.sleeping.fetch_sub(1, Ordering::Relaxed);
    }

    /// A registration changed; wake a sleeping loop so it looks again.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence above (see `arm`).
        if self.sleeping.load(Ordering::Relaxed) > 0 {
            self.write();
        }
    }

    /// Wakes a loop now or, if none sleeps, makes its next sleep return at
    /// once.
    pub(crate) fn write(&self) {
        // AcqRel: one writer per sleep.
        if !self.sent.swap(true, Ordering::AcqRel) {
            let one = 1u64;
            // SAFETY: writes the 8 bytes of `one`. EAGAIN (counter full)
            // means the loop is woken already.
            unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Consumes a wake-up.
    pub(crate) fn drain(&self) {
        let mut buf = 0u64;
        // SAFETY: reads 8 bytes into `buf`, which is 8 bytes long. A failure
        // (EAGAIN: drained already) leaves nothing to do.
        unsafe { libc::read(self.raw(), (&mut buf as *mut u64).cast(), 8) };
        // Release: orders the drain before the reset, so a writer that sees
        // `false` writes a fresh count that no earlier drain consumed.
        self.sent.store(false, Ordering::Release);
    }
}

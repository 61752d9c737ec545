//! The real descriptors the target registers: open socket pairs (whose
//! readiness does not change by itself), and numbers that are not open.

use evnexus::Interest;
use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

pub(crate) struct Fds {
    pub(crate) open: Vec<RawFd>,
    pub(crate) unopened: Vec<RawFd>,
}

pub(crate) fn fds() -> &'static Fds {
    static FDS: OnceLock<Fds> = OnceLock::new();
    FDS.get_or_init(|| {
        let mut open = Vec::new();
        for _ in 0..2 {
            let (a, b) = UnixStream::pair().expect("socketpair");
            // Leaked on purpose: open for the whole process.
            open.push(a.into_raw_fd());
            open.push(b.into_raw_fd());
        }
        let (a, b) = UnixStream::pair().expect("socketpair");
        // Closed now; the number may be reused later (libFuzzer opens
        // files), which is why the model asks fcntl at each use.
        let closed = vec![a.into_raw_fd(), b.into_raw_fd()];
        for &fd in &closed {
            // SAFETY: `fd` came from `into_raw_fd` just above and nothing
            // else owns it; it is closed exactly once.
            unsafe { libc::close(fd) };
        }
        let mut unopened = closed;
        unopened.extend([i32::MAX, i32::MAX - 1, 1 << 30, 1 << 20]);
        Fds { open, unopened }
    })
}

/// What `poll(fd, 0)` finds of `interest` now (plus the conditions poll
/// always reports), or `None` if nothing: the engine's re-check.
pub(crate) fn poll_now(fd: RawFd, interest: Interest) -> Option<u16> {
    let always = (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) as u16;
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: interest.as_poll_events(),
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd and the timeout is zero.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n >= 0 {
            let relevant = pfd.revents as u16 & (interest.as_poll_events() as u16 | always);
            return (n > 0 && relevant != 0).then_some(relevant);
        }
        assert_eq!(
            io::Error::last_os_error().kind(),
            io::ErrorKind::Interrupted
        );
    }
}

pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags; any int is a valid
    // argument and an unopened one yields EBADF.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

//! The epoll backend: the built-in loop waits in `epoll_pwait2` (nanosecond
//! timeouts), or in `epoll_wait` with the timeout rounded up to whole
//! milliseconds (never early) where `epoll_pwait2` is missing (ENOSYS:
//! kernels before 5.11) or refused (EPERM: container seccomp profiles
//! older than the call, the same ones that refuse io_uring). Used where
//! the kernel refuses io_uring.

use crate::backend::builtin::{Event, Waiter, WAKE_DATA};
use crate::base::token::Token;
use crate::dispatch::BackendKind;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Most events taken from the kernel per wait; more wait for the next one.
const MAX_EVENTS: usize = 4096;

pub(crate) struct EpollWaiter {
    buf: Vec<libc::epoll_event>,
    /// `epoll_pwait2` may be used (cleared on ENOSYS or EPERM).
    pwait2: bool,
    /// Testing aid: every `epoll_pwait2` fails with this errno, as on a
    /// kernel or seccomp profile that refuses it.
    refuse_pwait2: Option<i32>,
}

impl EpollWaiter {
    /// A waiter; `refuse_pwait2` is the testing aid's errno (`None` in
    /// production).
    pub(crate) fn new(refuse_pwait2: Option<i32>) -> EpollWaiter {
        EpollWaiter {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            pwait2: true,
            refuse_pwait2,
        }
    }

    /// One `epoll_pwait2` into `buf`.
    fn pwait2(&mut self, epfd: RawFd, timeout: Option<Duration>) -> io::Result<usize> {
        if let Some(errno) = self.refuse_pwait2 {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let len = self.buf.len() as libc::c_int;
        let ts = timeout.map(timespec);
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `buf` has room for `len` events; `ts_ptr` is null or
        // points to a live timespec; no signal mask.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epfd,
                self.buf.as_mut_ptr(),
                len,
                ts_ptr,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// One `epoll_wait` into `buf`, its timeout rounded up to whole
    /// milliseconds so that a timer is never woken for early.
    fn wait_ms(&mut self, epfd: RawFd, timeout: Option<Duration>) -> io::Result<usize> {
        let len = self.buf.len() as libc::c_int;
        let ms = crate::base::clock::poll_timeout_ms(timeout);
        // SAFETY: `buf` has room for `len` events.
        let n = unsafe { libc::epoll_wait(epfd, self.buf.as_mut_ptr(), len, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Hands over the `n` events the kernel wrote; a full batch grows the
    /// buffer for next time.
    fn take(&mut self, n: usize, out: &mut Vec<Event>) {
        translate(&self.buf[..n], out);
        if n == self.buf.len() && n < MAX_EVENTS {
            self.buf
                .resize(n * 2, libc::epoll_event { events: 0, u64: 0 });
        }
    }
}

/// Turns a batch of epoll events into loop events.
pub(crate) fn translate(events: &[libc::epoll_event], out: &mut Vec<Event>) {
    for e in events {
        let data = e.u64;
        if data == WAKE_DATA {
            out.push(Event::Wake);
        } else {
            // poll(2) and epoll share their low 16 bits.
            out.push(Event::Ready(Token::from_u64(data), e.events as u16));
        }
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

impl Waiter for EpollWaiter {
    const KIND: BackendKind = BackendKind::Epoll;

    fn probe(&mut self, epfd: RawFd, out: &mut Vec<Event>) -> io::Result<()> {
        let len = self.buf.len() as libc::c_int;
        // SAFETY: `buf` has room for `len` events; no timeout to set up.
        let n = unsafe { libc::epoll_wait(epfd, self.buf.as_mut_ptr(), len, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // Interrupted: the blocking wait that follows looks again.
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        self.take(n as usize, out);
        Ok(())
    }

    fn wait(
        &mut self,
        epfd: RawFd,
        timeout: Option<Duration>,
        out: &mut Vec<Event>,
    ) -> io::Result<()> {
        let n = loop {
            let result = if self.pwait2 {
                self.pwait2(epfd, timeout)
            } else {
                self.wait_ms(epfd, timeout)
            };
            match result {
                Ok(n) => break n,
                // Missing (ENOSYS) or refused by a seccomp filter (EPERM):
                // epoll_wait from now on, at once with the same timeout.
                Err(e)
                    if self.pwait2
                        && matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) =>
                {
                    self.pwait2 = false;
                }
                // EINTR included: the loop retries with what is left of
                // the timeout.
                Err(e) => return Err(e),
            }
        };
        self.take(n, out);
        Ok(())
    }
}

//! The epoll backend: the built-in loop waits in `epoll_pwait2` (nanosecond
//! timeouts; `epoll_wait` with the timeout rounded up to whole milliseconds
//! on kernels before 5.11). Used where the kernel refuses io_uring.

use crate::backend::builtin::{Event, Waiter, WAKE_DATA};
use crate::backend::BackendKind;
use crate::token::Token;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Most events taken from the kernel per wait; more wait for the next one.
const MAX_EVENTS: usize = 4096;

pub(crate) struct EpollWaiter {
    buf: Vec<libc::epoll_event>,
    /// `epoll_pwait2` exists (cleared on ENOSYS).
    pwait2: bool,
}

impl EpollWaiter {
    pub(crate) fn new() -> EpollWaiter {
        EpollWaiter {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            pwait2: true,
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

    fn wait(
        &mut self,
        epfd: RawFd,
        timeout: Option<Duration>,
        out: &mut Vec<Event>,
    ) -> io::Result<()> {
        let len = self.buf.len() as libc::c_int;
        let n = loop {
            let n = if self.pwait2 {
                let ts = timeout.map(timespec);
                let ts_ptr = ts
                    .as_ref()
                    .map_or(std::ptr::null(), |t| t as *const libc::timespec);
                // SAFETY: `buf` has room for `len` events; `ts_ptr` is null
                // or points to a live timespec; no signal mask.
                unsafe {
                    libc::syscall(
                        libc::SYS_epoll_pwait2,
                        epfd,
                        self.buf.as_mut_ptr(),
                        len,
                        ts_ptr,
                        std::ptr::null::<libc::sigset_t>(),
                        0usize,
                    ) as libc::c_int
                }
            } else {
                let ms = crate::backend::poll::poll_timeout_ms(timeout);
                // SAFETY: `buf` has room for `len` events.
                unsafe { libc::epoll_wait(epfd, self.buf.as_mut_ptr(), len, ms) }
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOSYS) if self.pwait2 => self.pwait2 = false,
                // The loop retries with what is left of the timeout.
                Some(libc::EINTR) => return Err(e),
                _ => return Err(e),
            }
        };
        translate(&self.buf[..n], out);
        if n == self.buf.len() && n < MAX_EVENTS {
            // A full batch: take more next time.
            self.buf
                .resize(n * 2, libc::epoll_event { events: 0, u64: 0 });
        }
        Ok(())
    }
}

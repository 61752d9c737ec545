//! The domains' channels: a socketpair per domain, its fd watch (whose
//! callback drains it and checks what the engine hands it), and the
//! deregistration that checks the engine kept its promise.
//!
//! The engine owns the toolstack's end of each channel while it is
//! watched ([`Engine::register_owned`]): it closes the fd only after the
//! kernel entry is gone, so "fd closed while still registered" cannot
//! happen. Re-registering or replacing a channel takes the end back
//! ([`evnexus::OwnedFdWatch::into_inner`]).

use crate::check::{Check, DropMark};
use crate::domains::DomainStats;
use crate::items::Kind;
use crate::lock;
use crate::shared::{callback_entered, record_write_latency, Shared};
use evnexus::{Engine, FdEvent, Interest, OwnedFdWatch, Token};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// One fd watch as the program sees it.
pub(crate) struct WatchReg {
    pub(crate) fd: RawFd,
    pub(crate) token: AtomicU64,
    pub(crate) dead: AtomicBool,
    /// Set before `deregister` is called.
    pub(crate) retiring: AtomicBool,
    pub(crate) running: AtomicBool,
    pub(crate) dropped: Arc<AtomicBool>,
}

/// A live watch, which owns the channel's reading end.
pub(crate) struct WatchHandle {
    pub(crate) watch: OwnedFdWatch<UnixStream>,
    pub(crate) reg: Arc<WatchReg>,
}

/// A nonblocking socketpair: the reader (to be watched) and the writer
/// (the traffic thread's).
pub(crate) fn channel() -> io::Result<(UnixStream, UnixStream)> {
    let (r, w) = UnixStream::pair()?;
    r.set_nonblocking(true)?;
    w.set_nonblocking(true)?;
    Ok((r, w))
}

/// Watches `reader`, which the engine owns until the watch is retired.
pub(crate) fn watch_channel(
    engine: &Engine,
    reader: UnixStream,
    interest: Interest,
    stats: &Arc<DomainStats>,
    shared: &Arc<Shared>,
) -> evnexus::Result<WatchHandle> {
    let reg = Arc::new(WatchReg {
        fd: reader.as_raw_fd(),
        token: AtomicU64::new(0),
        dead: AtomicBool::new(false),
        retiring: AtomicBool::new(false),
        running: AtomicBool::new(false),
        dropped: Arc::new(AtomicBool::new(false)),
    });
    let callback = {
        let reg = Arc::clone(&reg);
        let stats = Arc::clone(stats);
        let shared = Arc::clone(shared);
        let mark = DropMark(Arc::clone(&reg.dropped));
        move |ev: &FdEvent<'_>, mut reader: &UnixStream| {
            let _mark = &mark;
            let start = callback_entered();
            let stamp = stats.write_stamp.swap(0, Ordering::SeqCst);
            if stamp != 0 {
                let written = shared.at(stamp - 1);
                record_write_latency(start.saturating_duration_since(written));
            }
            let checks = &shared.checks;
            if reg.running.swap(true, Ordering::SeqCst) {
                checks.fail(Check::Concurrent, || format!("fd watch {}", ev.token()));
            }
            if reg.dead.load(Ordering::SeqCst) {
                checks.fail(Check::DeadDispatch, || {
                    format!("fd watch {} ran after deregister returned", ev.token())
                });
            }
            if !shared.bind_token(&reg.token, ev.token().as_u64()) {
                checks.fail(Check::WrongIdentity, || {
                    format!(
                        "callback of {} got token {}",
                        Token::from_u64(reg.token.load(Ordering::SeqCst)),
                        ev.token()
                    )
                });
            }
            if ev.fd() != reg.fd {
                checks.fail(Check::WrongIdentity, || {
                    format!("callback of fd {} got fd {}", reg.fd, ev.fd())
                });
            }
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        stats.bytes_read.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break, // WouldBlock: drained.
                }
            }
            // Whatever was written before the last read has been seen.
            stats.write_stamp.store(0, Ordering::SeqCst);
            reg.running.store(false, Ordering::SeqCst);
        }
    };
    let watch = engine.register_owned(reader, interest, callback)?;
    shared.registrations.fetch_add(1, Ordering::SeqCst);
    if !shared.bind_token(&reg.token, watch.token().as_u64()) {
        shared.checks.fail(Check::WrongIdentity, || {
            format!(
                "register_fd returned {} but the callback saw {}",
                watch.token(),
                Token::from_u64(reg.token.load(Ordering::SeqCst))
            )
        });
    }
    lock(&shared.watch_regs).insert(watch.token().as_u64(), Arc::clone(&reg));
    Ok(WatchHandle { watch, reg })
}

/// Deregisters a watch from outside any callback and checks that the
/// engine kept its promise: the callback has returned and been dropped,
/// and the channel's end comes back, open, its kernel entry gone.
pub(crate) fn retire_watch(h: WatchHandle, shared: &Shared) -> Option<UnixStream> {
    let WatchHandle { watch, reg } = h;
    let checks = &shared.checks;
    let token = watch.token();
    reg.retiring.store(true, Ordering::SeqCst);
    // Nothing else ends a watch here: it is live until this call.
    let was_live = watch.is_live();
    let reader = watch.into_inner();
    reg.dead.store(true, Ordering::SeqCst);
    lock(&shared.watch_regs).remove(&token.as_u64());
    shared.bury(token.as_u64(), Kind::Fd, reg.fd);
    if !was_live {
        checks.fail(Check::NotQuiesced, || {
            format!("watch {token} had ended before its deregistration")
        });
    }
    if reg.running.load(Ordering::SeqCst) || !reg.dropped.load(Ordering::SeqCst) {
        checks.fail(Check::NotQuiesced, || {
            format!("callback of {token} still running or not dropped after deregister")
        });
    }
    match &reader {
        Some(r) if r.as_raw_fd() == reg.fd => {}
        _ => checks.fail(Check::NotQuiesced, || {
            format!("the channel of {token} did not come back from into_inner")
        }),
    }
    reader
}

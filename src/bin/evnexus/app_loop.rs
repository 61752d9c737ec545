//! The hooks backend: this program's own `ppoll()` loop, the
//! [`OsEventHooks`] that keep its registrations, and the batches of
//! delivery items it makes (late, duplicated and bad reports mixed in).

use crate::items::{forge, replay, DeadTokens, Item, Kind, LoopOut, Origin, Sink};
use crate::lock;
use crate::rng::Rng;
use evnexus::{Interest, OsEventHooks, Readiness, Token};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One fd registration as the application loop keeps it.
pub(crate) struct FdEntry {
    pub(crate) fd: RawFd,
    pub(crate) interest: Interest,
    /// Reports of this registration not yet handed to the engine: the loop
    /// does not report the fd again until they are (one-shot semantics).
    pub(crate) inflight: Arc<AtomicU32>,
}

/// What the hooks were given. `fds` and `timeouts` hold live
/// registrations only (a fired timeout is taken out when the loop reports
/// it; the engine deregisters the rest); `dead` is a bounded ring.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) fds: HashMap<u64, FdEntry>,
    pub(crate) timeouts: BTreeSet<(Instant, u64)>,
    /// Tokens of registrations that have ended: material for replays.
    pub(crate) dead: DeadTokens,
    /// Calls of each hook, in [`HOOK_NAMES`] order.
    pub(crate) hook_calls: [u64; 6],
}

/// The hooks, in the order of `Registry::hook_calls`.
pub(crate) const HOOK_NAMES: [&str; 6] = [
    "fd_register",
    "fd_modify",
    "fd_deregister",
    "timeout_register",
    "timeout_modify",
    "timeout_deregister",
];

/// The application loop's state, shared with its hooks.
pub(crate) struct AppLoop {
    pub(crate) reg: Mutex<Registry>,
    pub(crate) wake_fd: OwnedFd,
    pub(crate) wake_pending: AtomicBool,
}

impl AppLoop {
    pub(crate) fn new() -> io::Result<AppLoop> {
        // SAFETY: eventfd takes no pointers; it returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(AppLoop {
            reg: Mutex::new(Registry::default()),
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            wake_fd: unsafe { OwnedFd::from_raw_fd(fd) },
            wake_pending: AtomicBool::new(false),
        })
    }

    /// Wakes the loop thread (one eventfd write per sleep).
    pub(crate) fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            let one = 1u64;
            // SAFETY: writes the 8 bytes of `one` to our eventfd. EAGAIN
            // (counter full) means the loop is woken already.
            unsafe { libc::write(self.wake_fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    fn consume_wake(&self) {
        self.wake_pending.store(false, Ordering::SeqCst);
        let mut buf = 0u64;
        // SAFETY: reads at most 8 bytes into `buf`, which is 8 bytes long;
        // EAGAIN leaves nothing to do.
        unsafe { libc::read(self.wake_fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
    }
}

/// The hooks the engine calls: this program's loop keeps the registration.
pub(crate) struct Hooks(pub(crate) Arc<AppLoop>);

impl OsEventHooks for Hooks {
    type FdReg = u64;
    type TimeoutReg = (Instant, u64);

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<u64> {
        let t = token.as_u64();
        {
            let mut r = lock(&self.0.reg);
            r.hook_calls[0] += 1;
            r.fds.insert(
                t,
                FdEntry {
                    fd,
                    interest,
                    inflight: Arc::new(AtomicU32::new(0)),
                },
            );
        }
        self.0.wake();
        Ok(t)
    }

    fn fd_modify(&self, _fd: RawFd, reg: &mut u64, interest: Interest) -> io::Result<()> {
        let mut r = lock(&self.0.reg);
        r.hook_calls[1] += 1;
        if let Some(e) = r.fds.get_mut(reg) {
            e.interest = interest;
        }
        drop(r);
        self.0.wake();
        Ok(())
    }

    fn fd_deregister(&self, fd: RawFd, reg: u64) {
        let mut r = lock(&self.0.reg);
        r.hook_calls[2] += 1;
        r.fds.remove(&reg);
        r.dead.bury(reg, Kind::Fd, fd);
    }

    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<(Instant, u64)> {
        let key = (deadline, token.as_u64());
        {
            let mut r = lock(&self.0.reg);
            r.hook_calls[3] += 1;
            r.timeouts.insert(key);
        }
        self.0.wake();
        Ok(key)
    }

    fn timeout_modify(&self, reg: &mut (Instant, u64), deadline: Instant) -> io::Result<()> {
        let mut r = lock(&self.0.reg);
        r.hook_calls[4] += 1;
        // Absent: the loop has reported the old deadline already; the
        // engine sorts that out.
        if r.timeouts.remove(reg) {
            reg.0 = deadline;
            r.timeouts.insert(*reg);
        }
        drop(r);
        self.0.wake();
        Ok(())
    }

    fn timeout_deregister(&self, reg: (Instant, u64)) {
        let mut r = lock(&self.0.reg);
        r.hook_calls[5] += 1;
        r.timeouts.remove(&reg);
        r.dead.bury(reg.1, Kind::Timeout, -1);
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

pub(crate) fn app_loop(app: &AppLoop, sink: &Sink, stop: &AtomicBool) -> LoopOut {
    let threads = lock(&sink.threads).clone();
    let mut rng = Rng::new();
    let mut out = LoopOut::default();
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut meta: Vec<(u64, Arc<AtomicU32>)> = Vec::new();
    let mut live_fds: Vec<(u64, RawFd)> = Vec::new();
    let mut live_timers: Vec<u64> = Vec::new();
    let mut held: Vec<(Instant, Item)> = Vec::new();
    let mut batch: Vec<Item> = Vec::new();
    let mut woken = vec![false; threads.len()];
    while !stop.load(Ordering::SeqCst) {
        out.iterations += 1;
        pfds.clear();
        meta.clear();
        live_fds.clear();
        live_timers.clear();
        pfds.push(pollfd(app.wake_fd.as_raw_fd(), libc::POLLIN));
        let mut wake_at = {
            let r = lock(&app.reg);
            for (&token, e) in &r.fds {
                live_fds.push((token, e.fd));
                if e.inflight.load(Ordering::SeqCst) == 0 {
                    pfds.push(pollfd(e.fd, e.interest.as_poll_events()));
                    meta.push((token, Arc::clone(&e.inflight)));
                }
            }
            live_timers.extend(r.timeouts.iter().map(|&(_, t)| t));
            r.timeouts.first().map(|&(d, _)| d)
        };
        if let Some(release) = held.iter().map(|(at, _)| *at).min() {
            wake_at = Some(wake_at.map_or(release, |w| w.min(release)));
        }
        // Never sleep long, so that the stop flag is seen.
        let sleep = wake_at
            .map_or(Duration::from_millis(100), |at| {
                at.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(100));
        let ts = libc::timespec {
            tv_sec: sleep.as_secs() as libc::time_t,
            tv_nsec: sleep.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `pfds` is a valid, exclusively borrowed array of
        // `pfds.len()` pollfds; `ts` is a valid timespec; a null sigmask
        // means "leave the mask alone".
        let n = unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if n < 0 {
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                out.errors += 1;
                thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        let now = Instant::now();
        if pfds[0].revents != 0 {
            app.consume_wake();
        }
        for (pfd, (token, inflight)) in pfds[1..].iter().zip(&meta) {
            if pfd.revents == 0 {
                continue;
            }
            inflight.fetch_add(1, Ordering::SeqCst);
            batch.push(Item {
                kind: Kind::Fd,
                origin: Origin::Genuine,
                token: *token,
                fd: pfd.fd,
                revents: Readiness::from_poll_revents(pfd.revents),
                detected: now,
                late: false,
                inflight: Some(Arc::clone(inflight)),
            });
        }
        {
            let mut r = lock(&app.reg);
            while let Some(&(deadline, token)) = r.timeouts.first() {
                if deadline > now {
                    break;
                }
                r.timeouts.pop_first();
                batch.push(Item {
                    kind: Kind::Timeout,
                    origin: Origin::Genuine,
                    token,
                    fd: -1,
                    revents: Readiness::EMPTY,
                    detected: now,
                    late: false,
                    inflight: None,
                });
            }
            // Replays of dead tokens: about one per six genuine reports,
            // now and then one even when nothing happened.
            let replays =
                (0..batch.len()).filter(|_| rng.one_in(6)).count() + usize::from(rng.one_in(8));
            for _ in 0..replays {
                let Some(dead) = r.dead.pick(&mut rng) else {
                    break;
                };
                batch.push(replay(&mut rng, dead, &live_fds, now));
            }
        }
        let genuine = batch.len();
        for i in 0..genuine {
            if rng.one_in(30) {
                let dup = batch[i].duplicate();
                batch.push(dup);
            }
            if rng.one_in(40) {
                batch.push(forge(&mut rng, &live_fds, now));
            }
            if rng.one_in(40) && !live_fds.is_empty() {
                let (token, fd) = live_fds[rng.index(live_fds.len())];
                let other = live_fds[rng.index(live_fds.len())].1;
                let wrong = if other == fd { fd + 1 } else { other };
                batch.push(Item::injected(Kind::Fd, Origin::WrongFd, token, wrong, now));
            }
            if rng.one_in(60) {
                let item = if rng.one_in(2) && !live_timers.is_empty() {
                    let token = live_timers[rng.index(live_timers.len())];
                    let fd = live_fds.first().map_or(3, |e| e.1);
                    Item::injected(Kind::Fd, Origin::WrongKind, token, fd, now)
                } else if let Some(&(token, fd)) = live_fds.get(rng.index(live_fds.len().max(1))) {
                    Item::injected(Kind::Timeout, Origin::WrongKind, token, fd, now)
                } else {
                    continue;
                };
                batch.push(item);
            }
        }
        for item in &batch {
            out.generated[item.origin as usize] += 1;
        }
        // Late delivery: hold some genuine reports back for 1-20 ms.
        let mut i = 0;
        while i < batch.len() {
            if batch[i].origin == Origin::Genuine && rng.one_in(25) {
                let mut item = batch.swap_remove(i);
                item.late = true;
                out.late += 1;
                let release = now + Duration::from_micros(1_000 + rng.below(19_000));
                held.push((release, item));
            } else {
                i += 1;
            }
        }
        let mut j = 0;
        while j < held.len() {
            if held[j].0 <= now {
                batch.push(held.swap_remove(j).1);
            } else {
                j += 1;
            }
        }
        rng.shuffle(&mut batch);
        for item in batch.drain(..) {
            let k = rng.index(sink.queues.len());
            sink.queues[k].push(item);
            woken[k] = true;
        }
        for (k, w) in woken.iter_mut().enumerate() {
            if std::mem::take(w) {
                threads[k].unpark();
            }
        }
    }
    out.held_back = held.into_iter().map(|(_, item)| item).collect();
    out
}

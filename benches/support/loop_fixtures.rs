//! Fixtures of the `loop` and `wakeup` benchmarks: the watched fds, the
//! per-event work every implementation does, the counters that prove it
//! was done, a one-shot signal for tokio futures, and the wake-up latency
//! harness.

// Each of the two benches uses a part.
#![allow(dead_code)]

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// What the watched fds do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    /// eventfds with a nonzero counter, never read: always readable. The
    /// callback only counts the event.
    Ready,
    /// Pipes that always hold one byte: the callback reads it and writes
    /// one byte back into the same pipe, so every event makes the next one.
    Busy,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Ready => "ready",
            Shape::Busy => "busy",
        }
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The watched fds of one fixture: `read[i]` is watched for readability;
/// `write[i]` is the pipe's other end (busy shape; -1 for ready).
pub struct Fds {
    pub shape: Shape,
    pub read: Vec<RawFd>,
    pub write: Vec<RawFd>,
    _owned: Vec<OwnedFd>,
}

impl Fds {
    pub fn new(shape: Shape, n: usize) -> Fds {
        let mut fds = Fds {
            shape,
            read: Vec::with_capacity(n),
            write: Vec::with_capacity(n),
            _owned: Vec::with_capacity(2 * n),
        };
        for _ in 0..n {
            match shape {
                Shape::Ready => {
                    // SAFETY: eventfd takes no pointers.
                    let fd =
                        cvt(unsafe { libc::eventfd(1, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })
                            .expect("eventfd");
                    // SAFETY: a fresh descriptor nothing else owns.
                    fds._owned.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    fds.read.push(fd);
                    fds.write.push(-1);
                }
                Shape::Busy => {
                    let mut p = [0 as libc::c_int; 2];
                    // SAFETY: `p` has room for the two descriptors.
                    cvt(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })
                        .expect("pipe2");
                    for fd in p {
                        // SAFETY: fresh descriptors nothing else owns.
                        fds._owned.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                    write_one(p[1]);
                    fds.read.push(p[0]);
                    fds.write.push(p[1]);
                }
            }
        }
        fds
    }

    pub fn len(&self) -> usize {
        self.read.len()
    }

    /// The work of one event on fd `i`; `true` if it was done (the busy
    /// shape moved its byte).
    #[inline(always)]
    pub fn on_event(shape: Shape, r: RawFd, w: RawFd) -> bool {
        match shape {
            Shape::Ready => true,
            Shape::Busy => {
                if read_some(r).ok() == Some(1) {
                    write_one(w);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Busy shape: every pipe still holds exactly one byte, so no event was
    /// lost (a pipe left empty) or handled without its read (two bytes).
    pub fn check_pipes(&self, who: &str) {
        for (i, &r) in self.read.iter().enumerate() {
            if self.shape != Shape::Busy {
                break;
            }
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int into `n`.
            cvt(unsafe { libc::ioctl(r, libc::FIONREAD, &mut n) }).expect("FIONREAD");
            assert_eq!(n, 1, "{who}: pipe {i} holds {n} bytes, not 1");
        }
    }
}

/// Reads what the pipe (or eventfd) holds, up to 64 bytes: a short read
/// from a pipe means it is drained, so an edge-triggered reader need not
/// read again to see `EAGAIN`.
#[inline(always)]
pub fn read_some(fd: RawFd) -> io::Result<usize> {
    let mut buf = [0u8; 64];
    // SAFETY: reads at most 64 bytes into the 64-byte `buf`.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[inline(always)]
pub fn write_one(fd: RawFd) {
    // SAFETY: writes the one byte of a static buffer.
    let n = unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    assert_eq!(n, 1, "write to pipe {fd}: {}", io::Error::last_os_error());
}

/// Per-fd event counts, bumped by every implementation's callback. One
/// thread bumps them, so a plain load and store (no locked instruction).
#[derive(Clone)]
pub struct Counts(Arc<[AtomicU64]>);

impl Counts {
    pub fn new(n: usize) -> Counts {
        Counts((0..n).map(|_| AtomicU64::new(0)).collect())
    }

    #[inline(always)]
    pub fn bump(&self, i: usize) {
        let c = &self.0[i];
        // Relaxed load and store: only the loop's thread writes.
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Every fd got events, and they add up to what the loop said it
    /// dispatched.
    pub fn check(&self, who: &str, dispatched: u64) {
        let counts: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let never = counts.iter().filter(|&&c| c == 0).count();
        assert!(
            never == 0,
            "{who}: {never} of {} fds never dispatched (first: fd {}; most events on one fd: {})",
            counts.len(),
            counts.iter().position(|&c| c == 0).unwrap_or(0),
            counts.iter().max().unwrap_or(&0),
        );
        let sum: u64 = counts.iter().sum();
        assert_eq!(sum, dispatched, "{who}: callbacks that did their work");
    }
}

/// A one-shot signal to a future from any thread: the flag, and the waker
/// to call (what `tokio::sync::Notify` does, without its `sync` feature).
#[derive(Default)]
pub struct Signal {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    pub fn fire(&self) {
        // Release: what the firer did before is visible to the waiter.
        self.fired.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    /// Resolves once fired, and re-arms.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            // Acquire: pairs with the Release in `fire`.
            if self.fired.swap(false, Ordering::Acquire) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.fired.swap(false, Ordering::Acquire) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
    }
}

/// A wrapper that lends a raw fd to mio or tokio without owning it.
pub struct Fd(pub RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A raw epoll set.
pub struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> Epoll {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).expect("epoll_create1");
        // SAFETY: a fresh descriptor nothing else owns.
        Epoll(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    #[inline(always)]
    pub fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event; errors are returned.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) };
        assert_eq!(r, 0, "epoll_ctl: {}", io::Error::last_os_error());
    }

    /// Waits at most `ms`; the number of events written to `buf`.
    #[inline(always)]
    pub fn wait(&self, buf: &mut [libc::epoll_event], ms: libc::c_int) -> usize {
        // SAFETY: `buf` has room for `buf.len()` events.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len() as libc::c_int,
                ms,
            )
        };
        assert!(n >= 0, "epoll_wait: {}", io::Error::last_os_error());
        n as usize
    }
}

/// Wake-up latency: a loop thread calls `sleep` (which blocks until woken)
/// `iters` times; for each, this thread waits until the loop thread is
/// about to sleep, gives it 50 µs to get there, takes the time and calls
/// `wake`, then parks until the loop thread is back. Each latency (from
/// just before `wake` to just after `sleep` returned) is appended to
/// `out`; returns their sum. A `sleep` that returns before its `wake`
/// (spuriously) is simply called again.
pub fn wake_latencies(
    iters: u64,
    sleep: &mut (dyn FnMut() + Send),
    wake: &(dyn Fn() + Sync),
    out: &mut Vec<Duration>,
) -> Duration {
    let armed = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    let woke = AtomicU64::new(0);
    let mut starts = Vec::with_capacity(iters as usize);
    let waker_thread = std::thread::current();
    let ends = std::thread::scope(|s| {
        // Named, so that `perf sched` and `strace` output can tell it.
        let looper = std::thread::Builder::new()
            .name("wake-loop".into())
            .spawn_scoped(s, || {
                let mut ends = Vec::with_capacity(iters as usize);
                for i in 1..=iters {
                    // Release/Acquire: hand-offs between the two threads.
                    armed.store(i, Ordering::Release);
                    loop {
                        sleep();
                        if sent.load(Ordering::Acquire) >= i {
                            break;
                        }
                    }
                    ends.push(Instant::now());
                    woke.store(i, Ordering::Release);
                    waker_thread.unpark();
                }
                ends
            })
            .expect("spawn the loop thread");
        for i in 1..=iters {
            while armed.load(Ordering::Acquire) < i {
                std::hint::spin_loop();
            }
            std::thread::sleep(Duration::from_micros(50));
            starts.push(Instant::now());
            sent.store(i, Ordering::Release);
            wake();
            // Parked, not spinning: a spinning waker could hold the
            // very CPU the woken loop thread is queued on.
            while woke.load(Ordering::Acquire) < i {
                std::thread::park();
            }
        }
        looper.join().expect("loop thread")
    });
    let mut sum = Duration::ZERO;
    for (s, e) in starts.iter().zip(&ends) {
        let d = e.duration_since(*s);
        out.push(d);
        sum += d;
    }
    sum
}

/// The `q` quantile (0..=1) of `v`, which it sorts.
pub fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Where criterion keeps its results: `$CRITERION_HOME`, else
/// `<target dir>/criterion` (`$CARGO_TARGET_DIR`, else three levels above
/// the bench binary, `target/<profile>/deps/`).
pub fn criterion_dir() -> Option<std::path::PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = std::path::PathBuf::from(target);
        if target.is_relative() {
            return Some(std::env::current_dir().ok()?.join(target).join("criterion"));
        }
        return Some(target.join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

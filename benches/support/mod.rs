//! Shared fixtures for the `arena`, `occurred`, `scaling` and `timers`
//! benchmarks: criterion defaults, a many-thread timing harness and the
//! thread counts to run it on, no-op hooks, a model of libxl's event design
//! (the peer of `occurred`), and a counting allocator for the bytes and
//! allocations per registration.
//!
//! # Naming (read by the report script)
//!
//! Every entry is `BenchmarkId::new("<impl>", "<op>/<param>")` in a group
//! named for its file (`arena`, `occurred`, `scaling`, `timers`), so
//! evnexus and each peer share `<op>/<param>` and differ only in `<impl>`. Criterion writes
//! the `/` of the parameter as `_` on disk:
//! `target/criterion/<group>/<impl>/<op>_<param>/new/estimates.json`.
//!
//! # Several threads
//!
//! A `2t` (`Kt`) entry runs two (K) threads (the bench thread and helpers),
//! each doing the criterion iteration count `N` of operations on the
//! shared structure after a common start barrier; the reported time is the
//! slowest thread's elapsed time divided by `N`, so it is the time per
//! operation as each thread sees it (equal to the `1t` figure under perfect
//! scaling).

#![allow(dead_code)]

use criterion::Criterion;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// Live entries every arena fixture holds while it is measured, and the
/// number of live and stale tokens the lookups cycle through.
pub const FIXTURE: usize = 1024;

/// Criterion defaults for nanosecond-scale operations: short enough that
/// `cargo bench` of the three files stays within a few minutes on a
/// two-core machine. Command-line flags override them.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .nresamples(20_000)
}

/// The variable that sets the thread counts of the `scaling` bench.
pub const THREADS_VAR: &str = "EVNEXUS_BENCH_THREADS";

/// Thread counts for the `scaling` bench: `$EVNEXUS_BENCH_THREADS` (a
/// comma-separated list, e.g. `1,2,4,8,16`), else 1, 2, 4, ... up to
/// `std::thread::available_parallelism()`, and that count itself when it
/// is not a power of two. A malformed list is an error naming the variable.
pub fn thread_counts() -> Result<Vec<usize>, String> {
    match std::env::var(THREADS_VAR) {
        Ok(list) => parse_thread_counts(&list),
        Err(std::env::VarError::NotPresent) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Ok(default_thread_counts(cores))
        }
        Err(e) => Err(format!("{THREADS_VAR}: {e}")),
    }
}

/// Powers of two up to `cores`, and `cores` itself.
pub fn default_thread_counts(cores: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |&n| n.checked_mul(2))
        .take_while(|&n| n <= cores)
        .collect();
    if counts.last() != Some(&cores) && cores > 0 {
        counts.push(cores);
    }
    counts
}

/// `"1,2,4"` to `[1, 2, 4]`: positive counts, each at most 1,024, no
/// duplicates (kept in the order given).
pub fn parse_thread_counts(list: &str) -> Result<Vec<usize>, String> {
    let mut counts = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let n: usize = item
            .parse()
            .map_err(|_| format!("{THREADS_VAR}={list:?}: {item:?} is not a thread count"))?;
        if n == 0 || n > 1024 {
            return Err(format!(
                "{THREADS_VAR}={list:?}: {n} threads is out of range (1 to 1024)"
            ));
        }
        if !counts.contains(&n) {
            counts.push(n);
        }
    }
    if counts.is_empty() {
        return Err(format!("{THREADS_VAR}={list:?}: no thread count"));
    }
    Ok(counts)
}

/// A deadline no benchmark reaches.
pub fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(24 * 3600)
}

/// Runs `body(thread, iters, barrier)` on `threads` threads (the calling
/// thread is thread 0) and returns the slowest thread's duration. Each body
/// times its own operations, starting after `barrier.wait()`.
pub fn run_threads<F>(threads: usize, iters: u64, body: F) -> Duration
where
    F: Fn(usize, u64, &Barrier) -> Duration + Sync,
{
    let barrier = Barrier::new(threads);
    if threads == 1 {
        return body(0, iters, &barrier);
    }
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .map(|t| {
                let (body, barrier) = (&body, &barrier);
                s.spawn(move || body(t, iters, barrier))
            })
            .collect();
        let mut slowest = body(0, iters, &barrier);
        for h in helpers {
            slowest = slowest.max(h.join().expect("bench thread panicked"));
        }
        slowest
    })
}

/// Waits at `barrier`, then times `iters` calls of `op(i)`.
#[inline]
pub fn timed(barrier: &Barrier, iters: u64, mut op: impl FnMut(u64)) -> Duration {
    barrier.wait();
    let start = Instant::now();
    for i in 0..iters {
        op(i);
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------
// Hooks

#[path = "../../tests/common/no_hooks.rs"]
mod no_hooks;
#[allow(unused_imports)] // not every bench uses them
pub use no_hooks::NoHooks;

/// A connected socket pair whose first end is readable (the second has
/// written a byte into it and nobody reads it).
pub fn readable_pair() -> (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
) {
    let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    io::Write::write_all(&mut b, b"x").expect("write to socketpair");
    (a, b)
}

// ---------------------------------------------------------------------------
// libxl model

/// A faithful model of libxl's osevent design (tools/libs/light/libxl_event.c,
/// Xen 4.3 on), the peer of the `occurred` benchmark:
///
/// - one global ctx lock (`CTX_LOCK`) around every entry point, held while
///   the callback runs;
/// - a pool of "hook nexus" structs that is never freed; the token the
///   application carries (`for_libxl`) names a nexus (here an index into the
///   pool, in libxl its address: the same two dependent loads to reach the
///   registration), and the nexus points at the current registration or at
///   nothing once it was deregistered; released nexi go on idle lists and
///   are reused by later registrations;
/// - `occurred_fd` compares the fd and re-checks it with `poll(fd, 0)`
///   before calling back (`libxl_osevent_occurred_fd`);
/// - `occurred_timeout` releases the nexus, unlinks the timeout from the
///   sorted `etimes` list and calls back (`libxl_osevent_occurred_timeout`,
///   `time_occurs`).
///
/// Simplifications, each in libxl's favour: a std `Mutex` (a futex) where
/// libxl takes a recursive pthread mutex; no EGC set-up and tear-down around
/// the call (libxl runs deferred callbacks after unlocking); timeouts are
/// inserted into `etimes` scanning from the tail (libxl scans from the head:
/// O(n) per registration, not measured here anyway).
pub struct LibxlModel {
    ctx: Mutex<LibxlCtx>,
}

/// What a model report did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LibxlOutcome {
    /// The callback ran.
    Dispatched,
    /// The re-check found the fd not ready: nothing ran.
    Suppressed,
    /// The nexus names no registration (or one on another fd).
    Stale,
}

type LibxlFdFunc = Box<dyn FnMut(RawFd, i16) + Send>;
type LibxlTimeFunc = Box<dyn FnOnce() + Send>;

struct EvFd {
    fd: RawFd,
    events: i16,
    func: LibxlFdFunc,
}

struct EvTime {
    abs: Instant,
    func: LibxlTimeFunc,
    /// `etimes` links (nexus indices), as libxl's `LIBXL_TAILQ_ENTRY`.
    prev: Option<usize>,
    next: Option<usize>,
}

enum Ev {
    Fd(Box<EvFd>),
    Time(Box<EvTime>),
}

/// libxl's `libxl__osevent_hook_nexus`.
struct Nexus {
    ev: Option<Ev>,
    /// On an idle list (guards against a second release by a duplicate
    /// timeout report, which libxl's contract forbids).
    idle: bool,
}

#[derive(Default)]
struct LibxlCtx {
    nexi: Vec<Nexus>,
    fd_idle: Vec<usize>,
    timeout_idle: Vec<usize>,
    etimes_head: Option<usize>,
    etimes_tail: Option<usize>,
}

impl LibxlCtx {
    fn get_nexus(&mut self, idle: fn(&mut LibxlCtx) -> &mut Vec<usize>, ev: Ev) -> usize {
        let index = match idle(self).pop() {
            Some(i) => i,
            None => {
                self.nexi.push(Nexus {
                    ev: None,
                    idle: false,
                });
                self.nexi.len() - 1
            }
        };
        let nexus = &mut self.nexi[index];
        nexus.idle = false;
        nexus.ev = Some(ev);
        index
    }

    fn release_nexus(&mut self, index: usize, timeout: bool) {
        let nexus = &mut self.nexi[index];
        nexus.ev = None;
        if !nexus.idle {
            nexus.idle = true;
            if timeout {
                self.timeout_idle.push(index);
            } else {
                self.fd_idle.push(index);
            }
        }
    }

    fn time_mut(&mut self, index: usize) -> &mut EvTime {
        match &mut self.nexi[index].ev {
            Some(Ev::Time(t)) => t,
            _ => unreachable!("etimes links only timeout nexi"),
        }
    }

    /// Inserts timeout `index` into `etimes`, sorted by deadline.
    fn etimes_insert(&mut self, index: usize, abs: Instant) {
        let mut after = self.etimes_tail;
        while let Some(a) = after {
            if self.time_mut(a).abs <= abs {
                break;
            }
            after = self.time_mut(a).prev;
        }
        let next = match after {
            Some(a) => self.time_mut(a).next.replace(index),
            None => self.etimes_head.replace(index),
        };
        match next {
            Some(n) => self.time_mut(n).prev = Some(index),
            None => self.etimes_tail = Some(index),
        }
        let t = self.time_mut(index);
        t.prev = after;
        t.next = next;
    }

    fn etimes_remove(&mut self, ev: &EvTime) {
        match ev.prev {
            Some(p) => self.time_mut(p).next = ev.next,
            None => self.etimes_head = ev.next,
        }
        match ev.next {
            Some(n) => self.time_mut(n).prev = ev.prev,
            None => self.etimes_tail = ev.prev,
        }
    }
}

impl Default for LibxlModel {
    fn default() -> Self {
        LibxlModel {
            ctx: Mutex::new(LibxlCtx::default()),
        }
    }
}

impl LibxlModel {
    fn lock(&self) -> std::sync::MutexGuard<'_, LibxlCtx> {
        self.ctx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `libxl__ev_fd_register`: returns the token (the nexus).
    pub fn fd_register(&self, fd: RawFd, events: i16, func: LibxlFdFunc) -> u64 {
        let ev = Ev::Fd(Box::new(EvFd { fd, events, func }));
        self.lock().get_nexus(|c| &mut c.fd_idle, ev) as u64
    }

    /// `libxl__ev_fd_deregister`: the nexus forgets the registration and
    /// goes back to the idle list at once.
    pub fn fd_deregister(&self, token: u64) {
        self.lock().release_nexus(token as usize, false);
    }

    /// `libxl__ev_time_register_abs`.
    pub fn timeout_register(&self, abs: Instant, func: LibxlTimeFunc) -> u64 {
        let mut ctx = self.lock();
        let ev = Ev::Time(Box::new(EvTime {
            abs,
            func,
            prev: None,
            next: None,
        }));
        let index = ctx.get_nexus(|c| &mut c.timeout_idle, ev);
        ctx.etimes_insert(index, abs);
        index as u64
    }

    /// `libxl__ev_time_deregister`: the registration is forgotten, but the
    /// nexus stays out of the idle list until the application's (late)
    /// report of the timeout arrives (libxl asks the application to fire it
    /// at once rather than deregister it).
    pub fn timeout_deregister(&self, token: u64) {
        let mut ctx = self.lock();
        if let Some(Ev::Time(ev)) = ctx.nexi[token as usize].ev.take() {
            ctx.etimes_remove(&ev);
        }
    }

    /// `libxl_osevent_occurred_fd`.
    pub fn occurred_fd(&self, token: u64, fd: RawFd, _revents: i16) -> LibxlOutcome {
        let mut ctx = self.lock();
        let Some(Nexus {
            ev: Some(Ev::Fd(ev)),
            ..
        }) = ctx.nexi.get_mut(token as usize)
        else {
            return LibxlOutcome::Stale;
        };
        if ev.fd != fd {
            return LibxlOutcome::Stale;
        }
        let mut check = libc::pollfd {
            fd,
            events: ev.events,
            revents: 0,
        };
        loop {
            // SAFETY: `check` is one valid pollfd and the timeout is zero.
            let r = unsafe { libc::poll(&mut check, 1, 0) };
            if r == 0 {
                return LibxlOutcome::Suppressed;
            }
            if r == 1 {
                break;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return LibxlOutcome::Suppressed;
            }
        }
        if check.revents == 0 {
            return LibxlOutcome::Suppressed;
        }
        (ev.func)(fd, check.revents);
        LibxlOutcome::Dispatched
    }

    /// `libxl_osevent_occurred_timeout`.
    pub fn occurred_timeout(&self, token: u64) -> LibxlOutcome {
        let mut ctx = self.lock();
        let index = token as usize;
        if index >= ctx.nexi.len() {
            return LibxlOutcome::Stale;
        }
        let ev = ctx.nexi[index].ev.take();
        ctx.release_nexus(index, true);
        let Some(Ev::Time(ev)) = ev else {
            return LibxlOutcome::Stale;
        };
        ctx.etimes_remove(&ev);
        // time_occurs: the callback runs with the ctx lock held.
        (ev.func)();
        LibxlOutcome::Dispatched
    }
}

// ---------------------------------------------------------------------------
// Counting allocator

static COUNTING: AtomicBool = AtomicBool::new(false);
static NET_BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static ALLOC_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting while [`measure`] runs: the net bytes
/// left allocated, and the allocations made (calls of `alloc`,
/// `alloc_zeroed` and `realloc`) with the bytes they asked for. When not
/// measuring it costs one relaxed load of a read-only flag per call.
pub struct CountingAlloc;

/// Counts one allocation of `size` bytes (net `net`) if measuring.
#[inline]
fn count(size: usize, net: isize) {
    // Relaxed everywhere: the counters are read after `measure` switched
    // counting off with a SeqCst store, on the same (only) thread.
    if COUNTING.load(Ordering::Relaxed) {
        NET_BYTES.fetch_add(net, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(size, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; the counting only reads the
// layout and touches atomics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's (valid, non-zero) layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size(), layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size(), layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Relaxed: as in `count`.
        if COUNTING.load(Ordering::Relaxed) {
            NET_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size, new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// What the counting allocator saw during one [`measure`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Counted {
    /// Bytes allocated and not freed again.
    pub net_bytes: isize,
    /// Calls of `alloc`, `alloc_zeroed` and `realloc`.
    pub allocs: usize,
    /// Bytes those calls asked for.
    pub alloc_bytes: usize,
}

/// Runs `f` with the counting allocator on (the binary must install
/// [`CountingAlloc`] as its global allocator) and returns what it counted,
/// with `f`'s result (dropped by the caller, uncounted). Single-threaded
/// use only: other threads' allocations would count too.
pub fn measure<R>(f: impl FnOnce() -> R) -> (Counted, R) {
    NET_BYTES.store(0, Ordering::SeqCst);
    ALLOCS.store(0, Ordering::SeqCst);
    ALLOC_BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let r = f();
    COUNTING.store(false, Ordering::SeqCst);
    let counted = Counted {
        net_bytes: NET_BYTES.load(Ordering::SeqCst),
        allocs: ALLOCS.load(Ordering::SeqCst),
        alloc_bytes: ALLOC_BYTES.load(Ordering::SeqCst),
    };
    (counted, r)
}

/// [`measure`], the net bytes only.
pub fn measure_bytes<R>(f: impl FnOnce() -> R) -> (isize, R) {
    let (counted, r) = measure(f);
    (counted.net_bytes, r)
}

/// Where criterion keeps its results: `$CRITERION_HOME`, else
/// `<target dir>/criterion` (`$CARGO_TARGET_DIR`, else the bench binary's
/// `target/<profile>/deps/..` location).
pub fn criterion_dir() -> Option<std::path::PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = std::path::PathBuf::from(target);
        let target = if target.is_relative() {
            std::env::current_dir().ok()?.join(target)
        } else {
            target
        };
        return Some(target.join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

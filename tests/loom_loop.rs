//! loom models of the protocols between the built-in loop and the threads
//! that change its registrations, on the real epoll loop: each model turns
//! the loop with `run_once(Some(Duration::ZERO))`, which never blocks, so
//! loom explores every interleaving of the loop's atomics with the other
//! threads' (the epoll and eventfd system calls run for real in between).
//!
//! Run (release, as `.ci/run` does):
//!
//! ```text
//! RUSTFLAGS="--cfg evnexus_loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
//!     cargo test --release --test loom_loop
//! ```
//!
//! Each model was checked to fail with its bug put back (see the note on
//! each).
#![cfg(evnexus_loom)]

mod common;

use common::null_fd;
use evnexus::{BackendKind, Engine, Error, Interest, Occurred, OsEventHooks, Readiness, Token};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    // A loop turn is a long path of atomic steps (arena, driver, slot,
    // stats): more than loom's default of 1,000 branches.
    builder.max_branches = 20_000;
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    builder.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    eprintln!(
        "explored {} interleavings",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

fn epoll_engine() -> Arc<Engine> {
    Arc::new(
        Engine::builder()
            .backend(BackendKind::Epoll)
            .build()
            .unwrap(),
    )
}

/// Turns the loop until `fired`, or until a turn that began after `done`
/// was set has ended.
fn turn_until(engine: &Engine, done: &AtomicBool, fired: &AtomicBool) {
    loop {
        let finished = done.load(Ordering::SeqCst);
        engine.run_once(Some(Duration::ZERO)).unwrap();
        if fired.load(Ordering::SeqCst) || finished {
            return;
        }
        thread::yield_now();
    }
}

fn flag() -> (Arc<AtomicBool>, Arc<AtomicBool>) {
    let f = Arc::new(AtomicBool::new(false));
    (f.clone(), f)
}

/// A timer registered on another thread while the loop turns fires: the
/// loop may meet it while its registrant still holds `CTRL` and pass it
/// over, because the registrant hands it to the loop only after letting
/// go. (Bug put back: handing it over before `end_ctrl` loses it.)
#[test]
fn timer_registered_from_another_thread_vs_loop_turn_fires() {
    model(|| {
        let engine = epoll_engine();
        let (fired, f) = flag();
        let (done, d) = flag();
        let registrar = {
            let engine = engine.clone();
            thread::spawn(move || {
                let t = engine
                    .timer_after(Duration::ZERO, move |_| f.store(true, Ordering::SeqCst))
                    .unwrap();
                d.store(true, Ordering::SeqCst);
                t
            })
        };
        turn_until(&engine, &done, &fired);
        let timer = registrar.join().unwrap();
        assert!(fired.load(Ordering::SeqCst), "timer lost");
        assert!(!timer.is_pending());
    });
}

/// A timer reset on another thread while the loop turns fires at the new
/// deadline. (Bug put back: as above, for `modify`.)
#[test]
fn timer_reset_from_another_thread_vs_loop_turn_fires() {
    model(|| {
        let engine = epoll_engine();
        let (fired, f) = flag();
        let (done, d) = flag();
        let timer = engine
            .timer_after(Duration::from_secs(3600), move |_| {
                f.store(true, Ordering::SeqCst)
            })
            .unwrap();
        // The loop has the old deadline queued.
        engine.run_once(Some(Duration::ZERO)).unwrap();
        let resetter = thread::spawn(move || {
            timer.reset_after(Duration::ZERO).unwrap();
            d.store(true, Ordering::SeqCst);
            timer
        });
        turn_until(&engine, &done, &fired);
        let timer = resetter.join().unwrap();
        assert!(fired.load(Ordering::SeqCst), "reset timer lost");
        assert!(!timer.is_pending());
    });
}

/// A due timer reset to much later while the loop checks it: the timer
/// either fired before the reset (which then says `Gone`) or stays pending
/// at its new deadline; it never fires at the old deadline after a reset
/// that succeeded. (Bug put back: without the reset version in the word, a
/// reset that starts and ends between the loop's load of the word and its
/// CAS leaves the word as it was, and the loop fires on the old deadline.)
#[test]
fn timer_reset_later_vs_due_check_never_fires_on_the_old_deadline() {
    model(|| {
        let engine = epoll_engine();
        let (fired, f) = flag();
        let timer = engine
            .timer_after(Duration::ZERO, move |_| f.store(true, Ordering::SeqCst))
            .unwrap();
        let resetter = thread::spawn(move || {
            let r = timer.reset_after(Duration::from_secs(3600));
            (r, timer)
        });
        engine.run_once(Some(Duration::ZERO)).unwrap();
        let (reset, timer) = resetter.join().unwrap();
        match reset {
            Ok(()) => {
                assert!(!fired.load(Ordering::SeqCst), "fired on the old deadline");
                assert!(timer.is_pending());
            }
            Err(Error::Gone) => assert!(fired.load(Ordering::SeqCst)),
            Err(e) => panic!("{e}"),
        }
    });
}

/// A wake-up that lands while the loop dispatches a batch is seen by the
/// batch or ends the next wait at once. (Bug put back: draining the
/// wake-up in batch order, after a callback that came earlier in the
/// batch, swallowed a wake-up that landed in between.)
#[test]
fn wake_during_a_batch_is_seen_or_still_pending() {
    model(|| {
        let engine = epoll_engine();
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(1, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let (state, s) = flag();
        let (seen, sn) = flag();
        // Ready before the wake-up below: first in the batch.
        let _watch = engine
            .register_fd(fd.as_raw_fd(), Interest::READABLE, move |ev| {
                sn.store(s.load(Ordering::SeqCst), Ordering::SeqCst);
                ev.deregister();
            })
            .unwrap();
        let waker = engine.waker();
        waker.wake();
        let other = thread::spawn(move || {
            state.store(true, Ordering::SeqCst);
            waker.wake();
        });
        assert_eq!(engine.run_once(Some(Duration::ZERO)).unwrap(), 1);
        other.join().unwrap();
        let mut pfd = libc::pollfd {
            fd: engine.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let pending = unsafe { libc::poll(&mut pfd, 1, 0) } == 1;
        assert!(
            seen.load(Ordering::SeqCst) || pending,
            "a wake-up was swallowed"
        );
    });
}

/// A watch whose fd was closed is deregistered while a new watch registers
/// the reused number: the old watch's removal never takes the new watch's
/// kernel entry. (Bug put back: without the fd table's ownership check,
/// the old `EPOLL_CTL_DEL` after the new `EPOLL_CTL_ADD` removes the new
/// entry.)
#[test]
fn deregister_of_a_closed_fd_vs_register_of_its_reused_number_keeps_the_new_entry() {
    model(|| {
        let engine = epoll_engine();
        let (a, _a_peer) = UnixStream::pair().unwrap();
        let n = a.as_raw_fd();
        let old = engine.register_fd(n, Interest::READABLE, |_| {}).unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        // SAFETY: both are open descriptors of this model.
        assert_eq!(unsafe { libc::dup2(b.as_raw_fd(), n) }, n);
        drop(b);
        let runs = Arc::new(AtomicUsize::new(0));
        let registrar = {
            let (engine, runs) = (engine.clone(), runs.clone());
            thread::spawn(move || {
                engine
                    .register_fd(n, Interest::READABLE, move |_| {
                        runs.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap()
            })
        };
        let removed = engine.deregister(old.token());
        let new = registrar.join().unwrap();
        assert!(
            matches!(removed, Err(Error::ClosedWhileRegistered(fd)) if fd == n),
            "{removed:?}"
        );
        b_peer.write_all(b"x").unwrap();
        engine.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the new watch's entry is gone"
        );
        drop(new);
        drop(old);
        drop(a);
    });
}

/// Hooks that count modify and deregister calls, and remember which thread
/// made the removal.
#[derive(Default)]
struct Counts {
    modified: std::sync::atomic::AtomicUsize,
    deregistered: std::sync::atomic::AtomicUsize,
    removed_by: std::sync::Mutex<Option<loom::thread::ThreadId>>,
}

struct Counting(std::sync::Arc<Counts>);

impl OsEventHooks for Counting {
    type FdReg = ();
    type TimeoutReg = ();
    fn fd_register(&self, _: RawFd, _: Interest, _: Token) -> io::Result<()> {
        Ok(())
    }
    fn fd_modify(&self, _: RawFd, _: &mut (), _: Interest) -> io::Result<()> {
        self.0
            .modified
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    fn fd_deregister(&self, _: RawFd, _: ()) {
        self.0
            .deregistered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.0.removed_by.lock().unwrap() = Some(thread::current().id());
    }
    fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> {
        Ok(())
    }
    fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> {
        Ok(())
    }
    fn timeout_deregister(&self, _: ()) {}
}

/// A modify races a dispatch: the callback never runs concurrently with
/// itself or with the backend change (loom checks the cells), and the
/// modify reaches the application's hook.
#[test]
fn fd_modify_vs_dispatch_lands_once_and_never_overlaps() {
    model(|| {
        let counts = std::sync::Arc::new(Counts::default());
        let engine = Arc::new(Engine::with_hooks(Counting(counts.clone())));
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let watch = engine
            .register_fd(null_fd(), Interest::READABLE, move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let token = watch.token();
        let reporter = {
            let engine = engine.clone();
            thread::spawn(move || {
                engine
                    .occurred_fd(token, null_fd(), Readiness::READABLE)
                    .unwrap()
            })
        };
        watch
            .modify(Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        assert_eq!(reporter.join().unwrap(), Occurred::Dispatched);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(counts.modified.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(watch);
        assert_eq!(
            counts
                .deregistered
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    });
}

/// A modify races a callback that deregisters its own watch: the backend
/// is told of the removal exactly once, by whichever thread lets go of the
/// registration last, and a modify that lost says so. (Bug put back: the
/// modify returned `Ok` on an ended registration.)
#[test]
fn modify_vs_self_deregistering_callback_removes_once_and_the_loser_says_so() {
    model(|| {
        let counts = std::sync::Arc::new(Counts::default());
        let engine = Arc::new(Engine::with_hooks(Counting(counts.clone())));
        let watch = engine
            .register_fd(null_fd(), Interest::READABLE, |ev| {
                ev.deregister();
            })
            .unwrap();
        let token = watch.token();
        let reporter = {
            let engine = engine.clone();
            thread::spawn(move || {
                engine
                    .occurred_fd(token, null_fd(), Readiness::READABLE)
                    .unwrap()
            })
        };
        let modified = watch.modify(Interest::WRITABLE);
        assert_eq!(reporter.join().unwrap(), Occurred::Dispatched);
        let hook_modifies = counts.modified.load(std::sync::atomic::Ordering::SeqCst);
        let removed_by_modifier =
            *counts.removed_by.lock().unwrap() == Some(thread::current().id());
        match modified {
            // The modify finished before the callback ended the watch, and
            // the callback's thread removed it.
            Ok(()) => assert!(hook_modifies == 1 && !removed_by_modifier),
            // It lost: before its hook call, or during it (then it made the
            // removal itself, on letting go).
            Err(Error::Gone) => assert!(hook_modifies <= 1),
            Err(e) => panic!("{e}"),
        }
        assert_eq!(
            counts
                .deregistered
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(engine.stats().live(), 0);
        drop(watch);
    });
}

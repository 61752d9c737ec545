//! Regression tests for the reliability issue (#7): each pins a guarantee
//! that an adversarial user broke, on every backend it applies to.
//!
//! 1. Timers registered or reset from another thread are never lost, even
//!    when that thread is preempted while it holds the slot's `CTRL` bit.
//! 2. Every `Duration`/`Instant` entry point takes any value.
//! 3. A watch whose fd number was reused never touches the newer watch's
//!    kernel entry; an entry orphaned by a `dup` is found and removed.
//! 4. A deregistration from a callback during a modify on another thread is
//!    finished by that modify, which says it lost.
//! 5. A wake-up that lands while a batch is dispatched is not swallowed.
//! 6. io_uring set-up refused for want of memory or descriptors falls back
//!    to epoll, also when only epoll's own two descriptors are left.

mod common;

use common::{counter, lowest_priority, pair, pin_to_cpu0, LOOP_BACKENDS};
use evnexus::testing::{clear_pauses, pause_at, PausePoint};
use evnexus::{BackendKind, Engine, Error, FdWatch, Interest, OsEventHooks, PollSet, Token};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn loop_engine(kind: BackendKind) -> Arc<Engine> {
    Arc::new(Engine::builder().backend(kind).build().unwrap())
}

/// Runs `engine.run()` on a thread until the returned guard is dropped.
struct LoopThread {
    waker: evnexus::Waker,
    thread: Option<thread::JoinHandle<()>>,
}

impl LoopThread {
    fn start(engine: &Arc<Engine>, setup: impl FnOnce() + Send + 'static) -> LoopThread {
        let e = Arc::clone(engine);
        let thread = thread::spawn(move || {
            setup();
            e.run().unwrap();
        });
        LoopThread {
            waker: engine.waker(),
            thread: Some(thread),
        }
    }
}

impl Drop for LoopThread {
    fn drop(&mut self) {
        self.waker.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(1));
    }
}

// ----- 1. timers from other threads -------------------------------------

#[test]
fn timers_registered_and_reset_by_a_preempted_low_priority_thread_all_fire() {
    const N: usize = 2000;
    for kind in LOOP_BACKENDS {
        let engine = loop_engine(kind);
        let _loop = LoopThread::start(&engine, pin_to_cpu0);
        let (fired, count) = counter();
        let e = Arc::clone(&engine);
        let registrar = thread::spawn(move || {
            pin_to_cpu0();
            lowest_priority();
            let mut timers = Vec::with_capacity(2 * N);
            for i in 0..2 * N {
                let f = Arc::clone(&fired);
                let bump = move |_: &evnexus::TimerEvent<'_>| {
                    f.fetch_add(1, Ordering::SeqCst);
                };
                if i % 2 == 0 {
                    timers.push(e.timer_after(Duration::ZERO, bump).unwrap());
                } else {
                    let t = e.timer_after(Duration::from_secs(3600), bump).unwrap();
                    t.reset_after(Duration::ZERO).unwrap();
                    timers.push(t);
                }
            }
            timers
        });
        let timers = registrar.join().unwrap();
        wait_for(
            &format!("{kind:?}: {} timers", 2 * N),
            Duration::from_secs(20),
            || count.load(Ordering::SeqCst) == 2 * N,
        );
        assert!(timers.iter().all(|t| !t.is_pending()), "{kind:?}: pending");
        assert_eq!(engine.stats().live(), 0, "{kind:?}: counted as live");
    }
}

/// A loop asleep until its earliest timer is not woken for a timer handed
/// over from another thread that is due later than that: it takes the timer
/// in when it wakes. One due earlier wakes it. From preempted threads as
/// well: every timer fires, none before its deadline, each soon after it.
#[test]
fn timers_handed_over_to_a_loop_asleep_until_an_earlier_or_later_timer_fire_on_time() {
    const THREADS: usize = 3;
    const EACH: usize = 200;
    for kind in LOOP_BACKENDS {
        let engine = loop_engine(kind);
        let _loop = LoopThread::start(&engine, pin_to_cpu0);
        let start = Instant::now();
        // The loop sleeps until this one (after it has taken it in).
        let (anchor_fired, anchor_count) = counter();
        let _anchor = engine
            .timer_at(start + Duration::from_millis(200), move |_| {
                anchor_fired.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        thread::sleep(Duration::from_millis(20));
        let late = Arc::new(Mutex::new(Vec::new()));
        let registrars: Vec<_> = (0..THREADS)
            .map(|k| {
                let (e, late) = (Arc::clone(&engine), Arc::clone(&late));
                thread::spawn(move || {
                    if k == 0 {
                        pin_to_cpu0();
                        lowest_priority();
                    }
                    (0..EACH)
                        .map(|i| {
                            // Deadlines from 30 ms to 290 ms after `start`:
                            // before and after the anchor's 200 ms.
                            let ms = 30 + ((i * 7 + k * 13) % 27) as u64 * 10;
                            let deadline = start + Duration::from_millis(ms);
                            let late = Arc::clone(&late);
                            e.timer_at(deadline, move |ev| {
                                let now = Instant::now();
                                assert!(now >= ev.deadline(), "fired early");
                                late.lock().unwrap().push(now - deadline);
                            })
                            .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let timers: Vec<_> = registrars
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect();
        wait_for(
            &format!("{kind:?}: {} timers", THREADS * EACH),
            Duration::from_secs(20),
            || late.lock().unwrap().len() == THREADS * EACH,
        );
        assert_eq!(anchor_count.load(Ordering::SeqCst), 1, "{kind:?}: anchor");
        assert!(timers.iter().all(|t| !t.is_pending()), "{kind:?}: pending");
        let worst = late.lock().unwrap().iter().copied().max().unwrap();
        // Generous for a loaded CI machine; a timer due at 30 ms left to
        // the anchor's wake-up at 200 ms would be late by 170 ms.
        assert!(
            worst < Duration::from_millis(100),
            "{kind:?}: a timer fired {worst:?} after its deadline"
        );
    }
}

/// Hand-overs that need no wake-up (`Duration::MAX`: never due), more than
/// the backlog that forces one, from a preempted thread, while the loop
/// sleeps with no timer of its own: none fires, a due one set after them
/// still fires at once, and cancelling them all leaves nothing live.
#[test]
fn never_due_hand_overs_past_the_backlog_lose_nothing_and_fire_nothing() {
    const N: usize = 3000;
    for kind in LOOP_BACKENDS {
        let engine = loop_engine(kind);
        let _loop = LoopThread::start(&engine, pin_to_cpu0);
        thread::sleep(Duration::from_millis(10));
        let (fired, count) = counter();
        let e = Arc::clone(&engine);
        let never: Vec<_> = thread::spawn(move || {
            pin_to_cpu0();
            lowest_priority();
            (0..N)
                .map(|_| {
                    let f = Arc::clone(&fired);
                    e.timer_after(Duration::MAX, move |_| {
                        f.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap()
                })
                .collect()
        })
        .join()
        .unwrap();
        let (due_fired, due_count) = counter();
        let _due = engine
            .timer_after(Duration::ZERO, move |_| {
                due_fired.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        wait_for(
            &format!("{kind:?}: the due timer"),
            Duration::from_secs(5),
            || due_count.load(Ordering::SeqCst) == 1,
        );
        assert!(never.iter().all(|t| t.is_pending()), "{kind:?}: pending");
        drop(never);
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "{kind:?}: a never-due timer fired"
        );
        assert_eq!(engine.stats().live(), 0, "{kind:?}: counted as live");
    }
}

/// The registrar stops right where the loop used to meet the registration
/// under `CTRL` and drop it: after the backend was told, before `CTRL` is
/// released.
fn pause_under_ctrl(at: PausePoint, how_long: Duration) {
    pause_at(move |p| {
        if p == at {
            thread::sleep(how_long);
        }
    });
}

#[test]
fn timer_registered_while_its_registrant_holds_ctrl_fires() {
    for kind in LOOP_BACKENDS {
        let engine = loop_engine(kind);
        let _loop = LoopThread::start(&engine, || {});
        let (fired, count) = counter();
        let e = Arc::clone(&engine);
        let timer = thread::spawn(move || {
            pause_under_ctrl(PausePoint::AfterBackendCall, Duration::from_millis(50));
            let t = e.timer_after(Duration::ZERO, move |_| {
                fired.fetch_add(1, Ordering::SeqCst);
            });
            clear_pauses();
            t.unwrap()
        })
        .join()
        .unwrap();
        wait_for(
            &format!("{kind:?}: the timer"),
            Duration::from_secs(2),
            || count.load(Ordering::SeqCst) == 1,
        );
        assert!(!timer.is_pending());
    }
}

#[test]
fn timer_reset_while_the_resetter_holds_ctrl_fires_at_the_new_deadline() {
    for kind in LOOP_BACKENDS {
        let engine = loop_engine(kind);
        let _loop = LoopThread::start(&engine, || {});
        let (fired, count) = counter();
        let timer = engine
            .timer_after(Duration::from_secs(3600), move |_| {
                fired.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let timer = thread::spawn(move || {
            pause_under_ctrl(PausePoint::AfterBackendCall, Duration::from_millis(50));
            let r = timer.reset_after(Duration::ZERO);
            clear_pauses();
            r.unwrap();
            timer
        })
        .join()
        .unwrap();
        wait_for(
            &format!("{kind:?}: the reset timer"),
            Duration::from_secs(2),
            || count.load(Ordering::SeqCst) == 1,
        );
        assert!(!timer.is_pending());
    }
}

// ----- 2. extreme durations and instants --------------------------------

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(i64::MAX as u64 / 4)
}

fn far_past() -> Instant {
    Instant::now()
        .checked_sub(Duration::from_secs(i64::MAX as u64 / 4))
        .unwrap_or_else(Instant::now)
}

#[test]
fn every_duration_and_instant_entry_point_takes_extreme_values() {
    let kinds = [
        BackendKind::Hooks,
        BackendKind::Uring,
        BackendKind::Epoll,
        BackendKind::Poll,
    ];
    for kind in kinds {
        let rig = common::Rig::new(kind, |b| b);
        let engine = &rig.engine;
        let (fired, count) = counter();
        let bump = || {
            let f = Arc::clone(&fired);
            move |_: &evnexus::TimerEvent<'_>| {
                f.fetch_add(1, Ordering::SeqCst);
            }
        };
        let never_a = engine.timer_after(Duration::MAX, bump()).unwrap();
        let never_b = engine.timer_at(far_future(), bump()).unwrap();
        let moved_away = engine.timer_after(Duration::ZERO, bump()).unwrap();
        moved_away.reset_after(Duration::MAX).unwrap();
        moved_away.reset_at(far_future()).unwrap();
        let due = [
            engine.timer_at(far_past(), bump()).unwrap(),
            engine.timer_after(Duration::ZERO, bump()).unwrap(),
            engine.timer_after(Duration::from_nanos(1), bump()).unwrap(),
        ];
        let moved_back = engine.timer_after(Duration::MAX, bump()).unwrap();
        moved_back.reset_at(far_past()).unwrap();
        match kind {
            BackendKind::Hooks => {
                // The application's loop decides; report what it was given.
                for t in due.iter().chain([&moved_back]) {
                    let r = engine.occurred_timeout(t.token()).unwrap();
                    assert_eq!(r, evnexus::Occurred::Dispatched);
                }
                let rec = rig.rec.as_ref().unwrap();
                let given = rec.timeouts.lock().unwrap()[&never_a.token()];
                assert!(given > Instant::now() + Duration::from_secs(500 * 365 * 86400));
            }
            BackendKind::Poll => {
                let mut set = PollSet::new();
                assert_eq!(engine.poll_once(&mut set, Some(Duration::MAX)).unwrap(), 4);
                let _ = engine.beforepoll(&mut set).unwrap();
                assert_eq!(engine.afterpoll(&mut set).unwrap(), 0);
            }
            _ => {
                assert_eq!(
                    engine.run_once(Some(Duration::ZERO)).unwrap(),
                    4,
                    "{kind:?}"
                );
                assert_eq!(engine.run_once(Some(Duration::from_nanos(1))).unwrap(), 0);
                assert_eq!(
                    engine.next_timeout(),
                    None,
                    "{kind:?}: only 'never' timers left"
                );
                // A wait of Duration::MAX waits (no overflow, no spin) until
                // woken.
                let waker = engine.waker();
                let wake = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(50));
                    waker.wake();
                });
                let start = Instant::now();
                assert_eq!(engine.run_once(Some(Duration::MAX)).unwrap(), 0);
                assert!(
                    start.elapsed() >= Duration::from_millis(40),
                    "{kind:?}: did not wait"
                );
                wake.join().unwrap();
            }
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            4,
            "{kind:?}: the due timers, and only they, fired"
        );
        for t in [&never_a, &never_b, &moved_away] {
            assert!(t.is_pending(), "{kind:?}: a 'never' timer fired");
        }
    }
    assert_eq!(
        evnexus::poll_timeout_ms(Some(Duration::MAX)),
        libc::c_int::MAX
    );
    assert_eq!(evnexus::poll_timeout_ms(Some(Duration::from_nanos(1))), 1);
}

// ----- 3. fd numbers reused while still registered ----------------------

/// Makes fd number `n` name `with`'s file instead of its own (the file `n`
/// named is closed unless another descriptor keeps it): "the fd was closed
/// and its number reused", without a window in which another thread of the
/// test binary could take the number.
fn reuse_number(n: RawFd, with: &impl AsRawFd) {
    // SAFETY: `n` and `with` are open descriptors this test owns.
    assert_eq!(unsafe { libc::dup2(with.as_raw_fd(), n) }, n);
}

fn run_until(engine: &Engine, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        engine.run_once(Some(Duration::from_millis(10))).unwrap();
    }
}

#[test]
fn deregistering_a_watch_whose_fd_number_was_reused_leaves_the_newer_watch_alone() {
    for kind in LOOP_BACKENDS {
        let engine = loop_engine(kind);
        let (a, _a_peer) = pair();
        let n = a.as_raw_fd();
        let (old_runs, old_count) = counter();
        let old: FdWatch = engine
            .register_fd(n, Interest::READABLE, move |_| {
                old_runs.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let (b, mut b_peer) = pair();
        reuse_number(n, &b);
        drop(b);
        let (new_runs, new_count) = counter();
        let new = engine
            .register_fd(n, Interest::READABLE, move |_| {
                new_runs.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        // The old watch's late changes do not reach the new entry...
        assert!(
            old.modify(Interest::WRITABLE).is_err(),
            "{kind:?}: modify of a closed fd"
        );
        assert!(
            matches!(engine.deregister(old.token()), Err(Error::ClosedWhileRegistered(fd)) if fd == n),
            "{kind:?}: the deregistration says the fd was closed"
        );
        drop(old);
        assert_eq!(engine.stats().closed_while_registered, 1, "{kind:?}");
        // ...which keeps being served.
        b_peer.write_all(b"x").unwrap();
        run_until(&engine, Duration::from_secs(2), || {
            new_count.load(Ordering::SeqCst) >= 1
        });
        assert_eq!(
            old_count.load(Ordering::SeqCst),
            0,
            "{kind:?}: the old callback ran"
        );
        assert!(engine.deregister(new.token()).unwrap());
        drop(a); // closes n (now naming b's file)
    }
}

/// A level watch on a readable socket, its fd duplicated, then its number
/// reused: the kernel entry outlives the watch and would wake the loop on
/// every wait.
fn orphan(engine: &Engine) -> (OwnedFd, UnixStream, UnixStream) {
    let (a, mut a_peer) = pair();
    a_peer.write_all(b"ready").unwrap();
    let n = a.as_raw_fd();
    let keep = a.try_clone().unwrap();
    let watch = engine
        .register_fd(n, Interest::READABLE, |ev| {
            // Level-triggered, never drained: ready on every wait.
            let _ = ev;
        })
        .unwrap();
    engine.run_once(Some(Duration::ZERO)).unwrap();
    let (other, _other_peer) = pair();
    reuse_number(n, &other);
    assert!(matches!(
        engine.deregister(watch.token()),
        Err(Error::ClosedWhileRegistered(_))
    ));
    drop(watch);
    // `a` now owns number n (naming `other`'s file); `keep` keeps the
    // watched file open; `a_peer` keeps it readable.
    (keep.into(), a_peer, a)
}

/// Turns of the loop until it sleeps through a 100 ms wait without a stale
/// report, or `limit` turns.
fn turns_until_quiet(engine: &Engine, limit: usize) -> Option<usize> {
    (1..=limit).find(|_| {
        let stale = engine.stats().stale.total();
        let start = Instant::now();
        engine.run_once(Some(Duration::from_millis(100))).unwrap();
        engine.stats().stale.total() == stale && start.elapsed() >= Duration::from_millis(90)
    })
}

#[test]
fn orphaned_entry_kept_by_a_dup_is_removed_and_the_loop_sleeps_again() {
    for kind in LOOP_BACKENDS {
        let engine = loop_engine(kind);
        let (keep, _peer, _owner) = orphan(&engine);
        let turns = turns_until_quiet(&engine, 10);
        assert!(
            turns.is_some(),
            "{kind:?}: the loop kept waking for the orphan"
        );
        let s = engine.stats();
        assert_eq!(
            (s.orphans_removed, s.orphans_left),
            (1, 0),
            "{kind:?}: {s:?}"
        );
        // The file itself is untouched: still open and readable.
        let mut buf = [0u8; 5];
        let mut file = std::fs::File::from(keep);
        assert_eq!(file.read(&mut buf).unwrap(), 5);
    }
}

#[test]
fn orphaned_entry_kept_only_by_another_process_is_counted_and_goes_when_it_exits() {
    use std::os::unix::process::CommandExt;
    for kind in LOOP_BACKENDS {
        let engine = loop_engine(kind);
        let (keep, _peer, _owner) = orphan(&engine);
        let raw = keep.as_raw_fd();
        // SAFETY: the pre-exec hook only calls dup2 (async-signal-safe).
        let mut child = unsafe {
            std::process::Command::new("sleep")
                .arg("30")
                .pre_exec(move || {
                    if libc::dup2(raw, 3) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                })
                .spawn()
                .unwrap()
        };
        drop(keep);
        for _ in 0..5 {
            engine.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        let s = engine.stats();
        assert_eq!(
            (s.orphans_removed, s.orphans_left),
            (0, 1),
            "{kind:?}: {s:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // The last copy of the file is closed: the kernel drops the entry.
        assert!(
            turns_until_quiet(&engine, 10).is_some(),
            "{kind:?}: still waking"
        );
    }
}

// ----- 4. deregistration from a callback during a modify -----------------

/// Hooks whose `fd_modify` stops until the test lets it go (then refuses
/// the change if `refuse`), and that count `fd_deregister` calls.
struct SlowModify {
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
    refuse: bool,
    deregistered: AtomicUsize,
}

struct SlowHooks(Arc<SlowModify>);

impl OsEventHooks for SlowHooks {
    type FdReg = ();
    type TimeoutReg = ();
    fn fd_register(&self, _: RawFd, _: Interest, _: Token) -> io::Result<()> {
        Ok(())
    }
    fn fd_modify(&self, _: RawFd, _: &mut (), _: Interest) -> io::Result<()> {
        self.0.entered.lock().unwrap().send(()).unwrap();
        self.0.release.lock().unwrap().recv().unwrap();
        if self.0.refuse {
            return Err(io::Error::other("refused by the application's loop"));
        }
        Ok(())
    }
    fn fd_deregister(&self, _: RawFd, _: ()) {
        self.0.deregistered.fetch_add(1, Ordering::SeqCst);
    }
    fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> {
        Ok(())
    }
    fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> {
        Ok(())
    }
    fn timeout_deregister(&self, _: ()) {}
}

/// A watch's callback deregisters it while another thread's modify is in
/// its (slow) `fd_modify` hook, which then succeeds or refuses; returns
/// what the modify returned. Checks that the removal waited for the hook,
/// was made once, and left nothing live.
fn modify_racing_self_deregistration(refuse: bool) -> evnexus::Result<()> {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let hooks = Arc::new(SlowModify {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
        refuse,
        deregistered: AtomicUsize::new(0),
    });
    let engine = Arc::new(Engine::with_hooks(SlowHooks(Arc::clone(&hooks))));
    let (a, _b) = pair();
    let watch = engine
        .register_fd(a.as_raw_fd(), Interest::READABLE, |ev| {
            assert!(ev.deregister(), "the callback ends its own watch");
        })
        .unwrap();
    let token = watch.token();
    let modifier = thread::spawn(move || watch.modify(Interest::WRITABLE));
    entered.recv().unwrap();
    // The modify holds the registration's CTRL inside its hook.
    let r = engine.occurred_fd(token, a.as_raw_fd(), evnexus::Readiness::READABLE);
    assert_eq!(r.unwrap(), evnexus::Occurred::Dispatched);
    assert_eq!(
        hooks.deregistered.load(Ordering::SeqCst),
        0,
        "the removal waits for the modify's hook to return"
    );
    release.send(()).unwrap();
    let modified = modifier.join().unwrap();
    assert_eq!(hooks.deregistered.load(Ordering::SeqCst), 1);
    assert_eq!(engine.stats().live(), 0);
    assert!(matches!(
        engine.occurred_fd(token, a.as_raw_fd(), evnexus::Readiness::READABLE),
        Ok(evnexus::Occurred::Stale(_))
    ));
    modified
}

#[test]
fn self_deregistration_during_a_slow_modify_is_finished_by_the_modify_which_returns_gone() {
    let r = modify_racing_self_deregistration(false);
    assert!(
        matches!(r, Err(Error::Gone)),
        "a modify that lost to a deregistration says so: {r:?}"
    );
}

#[test]
fn a_modify_refused_by_its_hook_while_the_watch_ended_returns_gone_and_removes_it_once() {
    // The shape the concurrent fuzz target found: the hook refuses the
    // change while the watch is ended from its callback. The refusal is
    // moot; what the caller learns is that the watch is gone.
    let r = modify_racing_self_deregistration(true);
    assert!(matches!(r, Err(Error::Gone)), "{r:?}");
}

#[test]
fn slow_modify_racing_a_self_deregistering_callback_never_touches_a_newer_watch() {
    for kind in LOOP_BACKENDS {
        let engine = loop_engine(kind);
        let (a, mut a_peer) = pair();
        let n = a.as_raw_fd();
        let watch = engine
            .register_fd(n, Interest::READABLE, |ev| {
                ev.deregister();
            })
            .unwrap();
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let modifier = thread::spawn(move || {
            pause_at(move |p| {
                if p == PausePoint::BeforeBackendCall {
                    entered_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                }
            });
            let r = watch.modify(Interest::READABLE | Interest::WRITABLE);
            clear_pauses();
            r
        });
        entered.recv().unwrap();
        a_peer.write_all(b"x").unwrap();
        // The callback deregisters its own watch while the modify holds
        // CTRL: it returns at once, the removal is the modify's to make.
        run_until(&engine, Duration::from_secs(2), || {
            engine.stats().dispatched == 1
        });
        // The fd is closed and its number taken by a new watch.
        let (b, mut b_peer) = pair();
        reuse_number(n, &b);
        let (runs, count) = counter();
        let new = engine
            .register_fd(n, Interest::READABLE, move |_| {
                runs.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        release.send(()).unwrap();
        assert!(
            matches!(modifier.join().unwrap(), Err(Error::Gone)),
            "{kind:?}"
        );
        assert_eq!(engine.stats().closed_while_registered, 1, "{kind:?}");
        b_peer.write_all(b"y").unwrap();
        run_until(&engine, Duration::from_secs(2), || {
            count.load(Ordering::SeqCst) >= 1
        });
        drop(new);
        drop(a);
    }
}

// ----- 5. a wake-up during a batch ---------------------------------------

#[test]
fn wake_that_lands_while_a_batch_is_dispatched_is_not_swallowed() {
    for kind in LOOP_BACKENDS {
        let engine = loop_engine(kind);
        // An fd that is ready before the wake-up is written: in the batch,
        // its event comes before the wake-up's.
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(1, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let waker = engine.waker();
        let w = waker.clone();
        let watch = engine
            .register_fd(fd.as_raw_fd(), Interest::READABLE, move |ev| {
                // As if another thread's wake-up landed right here.
                w.wake();
                ev.deregister();
            })
            .unwrap();
        waker.wake();
        assert_eq!(engine.run_once(Some(Duration::ZERO)).unwrap(), 1);
        // The wake-up from inside the batch must end the next wait at once.
        let start = Instant::now();
        engine.run_once(Some(Duration::from_secs(2))).unwrap();
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{kind:?}: the wake-up was lost ({:?})",
            start.elapsed()
        );
        drop(watch);
    }
}

// ----- 6. io_uring set-up refused ---------------------------------------

#[test]
fn io_uring_refused_for_memory_or_descriptors_falls_back_to_epoll() {
    for errno in [libc::ENOMEM, libc::EMFILE, libc::ENFILE] {
        let engine = Engine::builder()
            .inject_uring_setup_error(errno)
            .build()
            .unwrap();
        assert_eq!(engine.backend(), BackendKind::Epoll, "errno {errno}");
        let strict = Engine::builder()
            .backend(BackendKind::Uring)
            .inject_uring_setup_error(errno)
            .build();
        assert!(
            matches!(strict, Err(Error::Backend(_))),
            "errno {errno}: asked for io_uring"
        );
    }
}

const CHILD: &str = "EVNEXUS_SPARE_FDS";

/// In a child process (the limit is per process): leaves exactly `spare`
/// descriptors free and builds the default engine.
fn engine_with_spare_fds(spare: u64) -> Option<BackendKind> {
    // Fill every hole up to the highest open descriptor, so the numbers
    // left free are exactly those above it. (The listing's own directory
    // descriptor is closed again by the time the holes are filled.)
    let top: RawFd = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .max()
        .unwrap();
    let mut fillers = Vec::new();
    for n in 0..=top {
        // SAFETY: F_GETFD only reads descriptor flags; any int is valid.
        if unsafe { libc::fcntl(n, libc::F_GETFD) } == -1 {
            fillers.push(std::fs::File::open("/dev/null").unwrap());
        }
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the valid struct above.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_cur = top as u64 + 1 + spare;
    // SAFETY: setrlimit reads the valid struct above (the hard limit kept).
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    Engine::new().ok().map(|e| e.backend())
}

#[test]
fn default_engine_fits_where_only_epolls_two_descriptors_are_left() {
    if let Ok(spare) = std::env::var(CHILD) {
        let got = engine_with_spare_fds(spare.parse().unwrap());
        println!("RESULT {got:?}");
        return;
    }
    for (spare, want) in [(2, "Some(Epoll)"), (3, "Some(Uring)"), (1, "None")] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "default_engine_fits_where_only_epolls_two_descriptors_are_left",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, spare.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("RESULT {want}")),
            "{spare} spare descriptors: want {want}, child said:\n{stdout}"
        );
    }
}

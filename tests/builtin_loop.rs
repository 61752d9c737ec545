//! The engine's own loop (io_uring, epoll, and io_uring as on kernels
//! without the `EPOLL_WAIT` operation): dispatch, triggering modes, stale
//! completions, a tiny ring, the epoll fallback, cross-thread wake-ups,
//! timers and child processes.

mod common;

use common::{counter, lowest_priority, pin_to_cpu0};
use evnexus::{BackendKind, Builder, Engine, Error, FdWatch, Interest, Occurred, Readiness, Timer};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The loop flavours every test here runs on.
const LOOPS: [&str; 3] = ["uring", "epoll", "uring-no-epoll-wait-op"];

fn builder(flavour: &str) -> Builder {
    match flavour {
        "uring" => Engine::builder().backend(BackendKind::Uring),
        "epoll" => Engine::builder().backend(BackendKind::Epoll),
        "uring-no-epoll-wait-op" => Engine::builder()
            .backend(BackendKind::Uring)
            .without_uring_epoll_wait(),
        other => panic!("unknown flavour {other}"),
    }
}

fn engine(flavour: &str) -> Engine {
    builder(flavour)
        .build()
        .unwrap_or_else(|e| panic!("{flavour}: {e}"))
}

/// Runs `test` on every loop flavour, naming the flavour on failure.
fn each_loop(test: impl Fn(&str, &Engine)) {
    for flavour in LOOPS {
        let engine = engine(flavour);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(flavour, &engine)));
        if let Err(e) = r {
            eprintln!("failed on the {flavour} loop");
            std::panic::resume_unwind(e);
        }
    }
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// Runs the loop until `done()` or 5 s.
fn run_until(engine: &Engine, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "loop did not get there in 5 s"
        );
        engine.run_once(Some(Duration::from_millis(100))).unwrap();
    }
}

#[test]
fn new_engine_runs_on_io_uring() {
    let engine = Engine::new().unwrap();
    assert_eq!(engine.backend(), BackendKind::Uring);
}

#[test]
fn level_triggered_watch_runs_again_while_the_condition_holds() {
    each_loop(|_, engine| {
        let (a, mut b) = pair();
        let reader = a.try_clone().unwrap();
        let (runs, r) = counter();
        let _w = engine
            .register_fd(a.as_raw_fd(), Interest::READABLE, move |ev| {
                assert!(ev.readiness().is_readable());
                let mut byte = [0u8; 1];
                (&reader).read_exact(&mut byte).unwrap(); // one byte per run
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        b.write_all(b"abc").unwrap();
        for expected in 1..=3 {
            assert_eq!(engine.run_once(Some(Duration::from_secs(5))).unwrap(), 1);
            assert_eq!(runs.load(Ordering::SeqCst), expected);
        }
        assert_eq!(engine.run_once(Some(Duration::from_millis(30))).unwrap(), 0);
    });
}

#[test]
fn edge_triggered_watch_runs_once_per_edge() {
    each_loop(|_, engine| {
        let (a, mut b) = pair();
        let (runs, r) = counter();
        let _w = engine
            .register_fd(
                a.as_raw_fd(),
                Interest::READABLE | Interest::EDGE,
                move |_| {
                    r.fetch_add(1, Ordering::SeqCst); // reads nothing
                },
            )
            .unwrap();
        b.write_all(b"x").unwrap();
        run_until(engine, || runs.load(Ordering::SeqCst) == 1);
        // Still readable, but no new edge: no run.
        assert_eq!(engine.run_once(Some(Duration::from_millis(50))).unwrap(), 0);
        b.write_all(b"y").unwrap();
        run_until(engine, || runs.load(Ordering::SeqCst) == 2);
        assert_eq!(engine.run_once(Some(Duration::from_millis(50))).unwrap(), 0);
    });
}

#[test]
fn edge_triggering_needs_a_built_in_loop() {
    let hooks = Engine::builder()
        .backend(BackendKind::Poll)
        .build()
        .unwrap();
    let (a, _b) = pair();
    assert!(matches!(
        hooks.register_fd(a.as_raw_fd(), Interest::READABLE | Interest::EDGE, |_| {}),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn modify_changes_interest_without_losing_an_event() {
    for edge in [Interest::NONE, Interest::EDGE] {
        each_loop(|flavour, engine| {
            let (a, mut b) = pair();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s2 = Arc::clone(&seen);
            // A socket with room to write: WRITABLE holds at once.
            let w = engine
                .register_fd(a.as_raw_fd(), Interest::WRITABLE | edge, move |ev| {
                    s2.lock().unwrap().push(ev.readiness());
                })
                .unwrap();
            run_until(engine, || !seen.lock().unwrap().is_empty());
            // Data arrives while the watch only asks for WRITABLE...
            b.write_all(b"x").unwrap();
            // ...then it asks for READABLE instead: the data is reported.
            w.modify(Interest::READABLE | edge).unwrap();
            run_until(engine, || {
                seen.lock().unwrap().iter().any(|r| r.is_readable())
            });
            assert!(
                matches!(w.modify(Interest::READABLE), Err(Error::Backend(_)))
                    || edge == Interest::NONE,
                "{flavour}: switching trigger mode is refused"
            );
        });
    }
}

#[test]
fn completion_after_deregister_is_stale_and_a_reused_slot_never_gets_it() {
    for edge in [Interest::NONE, Interest::EDGE] {
        each_loop(|flavour, engine| {
            let (a, mut b) = pair();
            let (c, _d) = pair();
            let (runs, r) = counter();
            // Run the loop once with nothing ready, so that its wait times
            // out with the io_uring operation (EPOLL_WAIT, or POLL_ADD on
            // the epoll fd) still in flight. (A zero timeout reads the set
            // directly and leaves nothing in flight, for nesting.)
            let w = engine
                .register_fd(a.as_raw_fd(), Interest::READABLE | edge, move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            assert_eq!(engine.run_once(Some(Duration::from_millis(1))).unwrap(), 0);
            b.write_all(b"x").unwrap();
            // Let the kernel complete the in-flight operation.
            thread::sleep(Duration::from_millis(50));
            let old = w.token();
            drop(w);
            // The slot is reused at once by a watch on another fd that
            // never becomes ready.
            let (new_runs, nr) = counter();
            let w2 = engine
                .register_fd(c.as_raw_fd(), Interest::READABLE | edge, move |_| {
                    nr.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            assert_eq!(w2.token().index(), old.index(), "{flavour}: slot reused");
            let stale_before = engine.stats().stale.generation;
            for _ in 0..3 {
                engine.run_once(Some(Duration::from_millis(20))).unwrap();
            }
            assert_eq!(
                runs.load(Ordering::SeqCst),
                0,
                "{flavour}: ran after deregister"
            );
            assert_eq!(
                new_runs.load(Ordering::SeqCst),
                0,
                "{flavour}: old completion reached the new watch"
            );
            let stale = engine.stats().stale.generation - stale_before;
            if flavour == "uring" {
                // The EPOLL_WAIT result was already in the ring: it came
                // back and was rejected. (Without the EPOLL_WAIT operation
                // the loop reads the epoll set after the POLL_ADD fired,
                // when the watch is gone from it already.)
                assert_eq!(stale, 1, "{flavour}: late completion counted as stale");
            }
        });
    }
}

#[test]
fn callback_that_deregisters_a_watch_ready_in_the_same_batch_makes_its_event_stale() {
    each_loop(|flavour, engine| {
        let (a, mut a2) = pair();
        let (b, mut b2) = pair();
        let other: Arc<Mutex<Vec<FdWatch>>> = Arc::default();
        let (runs, r) = counter();
        let make = |other: Arc<Mutex<Vec<FdWatch>>>, r: Arc<AtomicUsize>| {
            move |_: &evnexus::FdEvent<'_>| {
                r.fetch_add(1, Ordering::SeqCst);
                other.lock().unwrap().clear(); // drops (deregisters) both handles
            }
        };
        let wa = engine
            .register_fd(
                a.as_raw_fd(),
                Interest::READABLE,
                make(Arc::clone(&other), Arc::clone(&r)),
            )
            .unwrap();
        let wb = engine
            .register_fd(
                b.as_raw_fd(),
                Interest::READABLE,
                make(Arc::clone(&other), Arc::clone(&r)),
            )
            .unwrap();
        other.lock().unwrap().extend([wa, wb]);
        a2.write_all(b"x").unwrap();
        b2.write_all(b"x").unwrap();
        thread::sleep(Duration::from_millis(20));
        let stale_before = engine.stats().stale.generation;
        run_until(engine, || runs.load(Ordering::SeqCst) >= 1);
        for _ in 0..3 {
            engine.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{flavour}: both ran");
        assert_eq!(
            engine.stats().stale.generation - stale_before,
            1,
            "{flavour}"
        );
    });
}

/// Lets this process open `n` more descriptors.
fn allow_fds(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill and then pass back.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < n {
            lim.rlim_cur = n.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn signal(fd: RawFd) {
    let one = 1u64;
    // SAFETY: writes 8 bytes from `one`.
    assert_eq!(
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) },
        8
    );
}

#[test]
fn ring_of_4_entries_carries_1000_watches_and_1000_timers() {
    allow_fds(4096);
    let engine = Engine::builder()
        .backend(BackendKind::Uring)
        .ring_entries(4)
        .build()
        .unwrap();
    let fds: Vec<OwnedFd> = (0..1000).map(|_| eventfd()).collect();
    let fd_runs: Arc<Vec<AtomicUsize>> = Arc::new((0..1000).map(|_| AtomicUsize::new(0)).collect());
    let mut watches = Vec::new();
    for (i, fd) in fds.iter().enumerate() {
        let runs = Arc::clone(&fd_runs);
        // Edge-triggered: EPOLLET entries of the set the ring waits on.
        watches.push(
            engine
                .register_fd(
                    fd.as_raw_fd(),
                    Interest::READABLE | Interest::EDGE,
                    move |_| {
                        runs[i].fetch_add(1, Ordering::SeqCst);
                    },
                )
                .unwrap(),
        );
    }
    let fired = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let timers: Vec<Timer> = (0..1000)
        .map(|i| {
            let f = Arc::clone(&fired);
            engine
                .timer_at(start + Duration::from_micros(10 * i), move |_| {
                    f.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap()
        })
        .collect();
    // Make all 1,000 fds ready at once: far more events than the ring has
    // entries; they come back through the one EPOLL_WAIT operation.
    engine.run_once(Some(Duration::ZERO)).unwrap();
    for fd in &fds {
        signal(fd.as_raw_fd());
    }
    run_until(&engine, || {
        fired.load(Ordering::SeqCst) == 1000
            && fd_runs.iter().all(|r| r.load(Ordering::SeqCst) >= 1)
    });
    // One edge, one run: nothing lost, nothing repeated.
    assert!(
        fd_runs.iter().all(|r| r.load(Ordering::SeqCst) == 1),
        "an edge ran twice"
    );
    let s = engine.stats();
    assert_eq!(s.dispatched, 2000);
    assert!(timers.iter().all(|t| !t.is_pending()));
    drop(watches);
}

#[test]
fn default_engine_falls_back_to_epoll_when_io_uring_setup_fails() {
    for errno in [libc::ENOSYS, libc::EPERM, libc::EACCES] {
        let engine = Engine::builder()
            .inject_uring_setup_error(errno)
            .build()
            .unwrap();
        assert_eq!(engine.backend(), BackendKind::Epoll, "errno {errno}");
        // And it works.
        let (a, mut b) = pair();
        let (runs, r) = counter();
        let _w = engine
            .register_fd(a.as_raw_fd(), Interest::READABLE, move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        b.write_all(b"x").unwrap();
        run_until(&engine, || runs.load(Ordering::SeqCst) > 0);
    }
    // Asked for explicitly, io_uring does not fall back.
    let explicit = Engine::builder()
        .backend(BackendKind::Uring)
        .inject_uring_setup_error(libc::EPERM)
        .build();
    assert!(matches!(explicit, Err(Error::Backend(e)) if e.raw_os_error() == Some(libc::EPERM)));
}

#[test]
fn registration_from_another_thread_during_a_long_wait_dispatches_promptly() {
    each_loop(|flavour, engine| {
        let (a, mut b) = pair();
        b.write_all(b"ready").unwrap();
        let fd_at = Arc::new(Mutex::new(None));
        let timer_at = Arc::new(Mutex::new(None));
        let start = Instant::now();
        thread::scope(|s| {
            let registrar = s.spawn(|| {
                thread::sleep(Duration::from_millis(100));
                let f = Arc::clone(&fd_at);
                let w = engine
                    .register_fd(a.as_raw_fd(), Interest::READABLE, move |ev| {
                        f.lock().unwrap().get_or_insert(Instant::now());
                        ev.deregister();
                    })
                    .unwrap();
                let t = Arc::clone(&timer_at);
                let timer = engine
                    .timer_after(Duration::ZERO, move |_| {
                        *t.lock().unwrap() = Some(Instant::now());
                    })
                    .unwrap();
                (w, timer, Instant::now())
            });
            // One wait of up to 10 s; the registrations must cut it short.
            while fd_at.lock().unwrap().is_none() || timer_at.lock().unwrap().is_none() {
                engine.run_once(Some(Duration::from_secs(10))).unwrap();
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "{flavour}: not prompt"
                );
            }
            let (_w, _t, registered) = registrar.join().unwrap();
            for at in [
                fd_at.lock().unwrap().unwrap(),
                timer_at.lock().unwrap().unwrap(),
            ] {
                let delay = at.saturating_duration_since(registered);
                assert!(
                    delay < Duration::from_millis(500),
                    "{flavour}: dispatched after {delay:?}"
                );
            }
        });
    });
}

#[test]
fn waker_interrupts_a_wait_and_stop_ends_run() {
    each_loop(|flavour, engine| {
        let waker = engine.waker();
        let start = Instant::now();
        thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(50));
                waker.wake();
            });
            assert_eq!(engine.run_once(Some(Duration::from_secs(10))).unwrap(), 0);
        });
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{flavour}: wake ignored"
        );
        let start = Instant::now();
        thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(50));
                waker.stop();
            });
            engine.run().unwrap();
        });
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{flavour}: stop ignored"
        );
        // A callback can stop the loop too.
        let _t = engine
            .timer_after(Duration::ZERO, |ev| ev.engine().stop())
            .unwrap();
        engine.run().unwrap();
    });
}

#[test]
fn run_once_from_inside_a_callback_or_on_a_hooks_engine_is_refused() {
    each_loop(|_, engine| {
        let nested = Arc::new(Mutex::new(None));
        let n2 = Arc::clone(&nested);
        let _t = engine
            .timer_after(Duration::ZERO, move |ev| {
                *n2.lock().unwrap() = Some(ev.engine().run_once(Some(Duration::ZERO)));
            })
            .unwrap();
        run_until(engine, || nested.lock().unwrap().is_some());
        assert!(matches!(
            *nested.lock().unwrap(),
            Some(Err(Error::Unsupported(_)))
        ));
    });
    let poll = Engine::builder()
        .backend(BackendKind::Poll)
        .build()
        .unwrap();
    assert!(matches!(poll.run_once(None), Err(Error::Unsupported(_))));
}

#[test]
fn timers_never_fire_early_and_ties_fire_in_registration_order() {
    each_loop(|flavour, engine| {
        let order = Arc::new(Mutex::new(Vec::new()));
        let base = Instant::now() + Duration::from_millis(30);
        let mut timers = Vec::new();
        for (i, ms) in [(0, 40u64), (1, 10), (2, 20), (3, 10), (4, 10)] {
            let o = Arc::clone(&order);
            let deadline = base + Duration::from_millis(ms);
            timers.push(
                engine
                    .timer_at(deadline, move |ev| {
                        assert!(Instant::now() >= ev.deadline(), "fired early");
                        assert_eq!(ev.deadline(), deadline);
                        o.lock().unwrap().push(i);
                    })
                    .unwrap(),
            );
        }
        run_until(engine, || order.lock().unwrap().len() == 5);
        assert_eq!(*order.lock().unwrap(), vec![1, 3, 4, 2, 0], "{flavour}");
    });
}

/// Hundreds of timers on seven deadlines, in an order that fills the loop's
/// runs and its heap: 300 set by another thread (handed over to the loop)
/// and 300 by a callback on the loop's thread (straight into its queue),
/// all before the first is due, and all due when the loop next looks.
/// Each fires no earlier than its deadline, the firing order never goes
/// back in deadline, and each registrant's ties fire in the order it set
/// them.
#[test]
fn many_ties_from_another_thread_and_a_callback_fire_in_deadline_then_registration_order() {
    each_loop(|flavour, engine| {
        const N: u64 = 300;
        // (registrant, k, deadline), in firing order.
        let fired = Arc::new(Mutex::new(Vec::new()));
        let base = Instant::now() + Duration::from_millis(400);
        let at = |k: u64, step: u64| base + Duration::from_millis((k * step) % 7);
        let record = |who: char, k: u64, deadline: Instant| {
            let fired = Arc::clone(&fired);
            move |ev: &evnexus::TimerEvent<'_>| {
                assert!(Instant::now() >= deadline, "fired early");
                assert_eq!(ev.deadline(), deadline);
                fired.lock().unwrap().push((who, k, deadline));
            }
        };
        let from_callback: Arc<Mutex<Vec<Timer>>> = Arc::default();
        let keep = Arc::clone(&from_callback);
        let records: Vec<_> = (0..N)
            .map(|k| (at(k, 5), record('c', k, at(k, 5))))
            .collect();
        let records = Mutex::new(Some(records));
        let _starter = engine
            .timer_after(Duration::ZERO, move |ev| {
                let mut keep = keep.lock().unwrap();
                for (deadline, cb) in records.lock().unwrap().take().unwrap() {
                    keep.push(ev.engine().timer_at(deadline, cb).unwrap());
                }
            })
            .unwrap();
        let (remote, remote_done) = thread::scope(|s| {
            let remote = s.spawn(|| {
                let timers: Vec<Timer> = (0..N)
                    .map(|k| engine.timer_at(at(k, 3), record('r', k, at(k, 3))).unwrap())
                    .collect();
                (timers, Instant::now())
            });
            run_until(engine, || from_callback.lock().unwrap().len() == N as usize);
            remote.join().unwrap()
        });
        assert!(
            remote_done < base && Instant::now() < base,
            "{flavour}: registering took past the first deadline; the order cannot be checked"
        );
        // Every timer due before the loop looks again: one turn takes them
        // all out of its runs and heap at once.
        thread::sleep(base + Duration::from_millis(10) - Instant::now());
        run_until(engine, || fired.lock().unwrap().len() == 2 * N as usize);
        let fired = fired.lock().unwrap();
        let deadlines: Vec<Instant> = fired.iter().map(|f| f.2).collect();
        assert!(
            deadlines.windows(2).all(|w| w[0] <= w[1]),
            "{flavour}: fired out of deadline order"
        );
        for who in ['r', 'c'] {
            let mine: Vec<(Instant, u64)> = fired
                .iter()
                .filter(|f| f.0 == who)
                .map(|f| (f.2, f.1))
                .collect();
            let mut sorted = mine.clone();
            sorted.sort();
            assert_eq!(mine.len(), N as usize, "{flavour}");
            assert!(
                mine == sorted,
                "{flavour}: registrant {who}'s ties not in its registration order"
            );
        }
        drop(remote);
    });
}

#[test]
fn modifying_a_timer_earlier_and_later_is_respected() {
    each_loop(|flavour, engine| {
        let fired = Arc::new(Mutex::new(Vec::new()));
        let f = Arc::clone(&fired);
        let later = engine
            .timer_after(Duration::from_millis(10), move |_| {
                f.lock().unwrap().push(("later", Instant::now()))
            })
            .unwrap();
        let f = Arc::clone(&fired);
        let earlier = engine
            .timer_after(Duration::from_secs(60), move |_| {
                f.lock().unwrap().push(("earlier", Instant::now()))
            })
            .unwrap();
        let later_at = Instant::now() + Duration::from_millis(120);
        later.reset_at(later_at).unwrap();
        let earlier_at = Instant::now() + Duration::from_millis(40);
        earlier.reset_at(earlier_at).unwrap();
        run_until(engine, || fired.lock().unwrap().len() == 2);
        let fired = fired.lock().unwrap();
        assert_eq!(fired[0].0, "earlier", "{flavour}");
        assert!(
            fired[0].1 >= earlier_at && fired[1].1 >= later_at,
            "{flavour}: fired early"
        );
        assert!(
            fired[0].1 < earlier_at + Duration::from_secs(1),
            "{flavour}: earlier not honoured"
        );
    });
}

/// Timers handed over by two threads while the loop runs on a third fire
/// exactly once each, and the loop gives their slots back (it frees fired
/// timers in batches): rounds of due timers, each round waiting for its
/// timers to fire, register several times as many timers as the engine
/// has slots, so a slot the loop kept would soon make `timer_at` fail.
#[test]
fn timers_handed_over_by_two_threads_fire_once_each_and_their_slots_come_back() {
    for flavour in LOOPS {
        handed_over_timers_fire_once_and_their_slots_come_back(flavour, false, 20);
    }
}

/// The same with the loop and both registrants on one CPU, one registrant
/// at the lowest priority: the loop is preempted with slots in its batch,
/// and a registrant in the middle of a hand-over.
#[test]
fn timers_handed_over_by_preempted_threads_fire_once_each_and_their_slots_come_back() {
    for flavour in LOOPS {
        handed_over_timers_fire_once_and_their_slots_come_back(flavour, true, 8);
    }
}

/// Two threads hand `rounds` rounds of 500 due timers each to the loop
/// running on a third; with `crowded`, all three share CPU 0 and the
/// second registrant runs at the lowest priority.
fn handed_over_timers_fire_once_and_their_slots_come_back(
    flavour: &str,
    crowded: bool,
    rounds: usize,
) {
    const THREADS: usize = 2;
    const BATCH: usize = 500;
    // What two threads keep live at once, and room for the timers whose
    // teardown is under way when their registrant moves on.
    const LIMIT: usize = THREADS * BATCH + 256;
    let engine = builder(flavour)
        .max_registrations(LIMIT)
        .build()
        .unwrap_or_else(|e| panic!("{flavour}: {e}"));
    let hits: Arc<Vec<AtomicUsize>> = Arc::new(
        (0..THREADS * rounds * BATCH)
            .map(|_| AtomicUsize::new(0))
            .collect(),
    );
    thread::scope(|s| {
        let looper = s.spawn(|| {
            if crowded {
                pin_to_cpu0();
            }
            engine.run()
        });
        let registrants: Vec<_> = (0..THREADS)
            .map(|t| {
                let (engine, hits) = (&engine, Arc::clone(&hits));
                s.spawn(move || {
                    if crowded {
                        pin_to_cpu0();
                        if t == 1 {
                            lowest_priority();
                        }
                    }
                    let fired = Arc::new(AtomicUsize::new(0));
                    let mut timers = Vec::with_capacity(BATCH);
                    for round in 0..rounds {
                        for k in 0..BATCH {
                            let i = (t * rounds + round) * BATCH + k;
                            let (hits, fired) = (Arc::clone(&hits), Arc::clone(&fired));
                            let timer = engine.timer_at(Instant::now(), move |_| {
                                hits[i].fetch_add(1, Ordering::SeqCst);
                                fired.fetch_add(1, Ordering::SeqCst);
                            });
                            match timer {
                                Ok(timer) => timers.push(timer),
                                Err(e) => {
                                    panic!("{flavour}: thread {t}, round {round}, timer {k}: {e}")
                                }
                            }
                        }
                        let start = Instant::now();
                        while fired.load(Ordering::SeqCst) < (round + 1) * BATCH {
                            assert!(
                                start.elapsed() < Duration::from_secs(10),
                                "{flavour}: thread {t}, round {round}: timers not fired"
                            );
                            // A sleep, not a yield: on a shared CPU the
                            // loop must get to run.
                            thread::sleep(Duration::from_micros(50));
                        }
                        timers.clear();
                    }
                })
            })
            .collect();
        let results: Vec<_> = registrants.into_iter().map(|r| r.join()).collect();
        engine.stop();
        looper.join().unwrap().unwrap();
        for r in results {
            if let Err(e) = r {
                std::panic::resume_unwind(e);
            }
        }
    });
    let twice: Vec<usize> = (0..hits.len())
        .filter(|&i| hits[i].load(Ordering::SeqCst) != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "{flavour}: timers not fired exactly once: {twice:?}"
    );
    assert_eq!(engine.stats().live(), 0, "{flavour}");
    assert_eq!(
        engine.stats().dispatched,
        (THREADS * rounds * BATCH) as u64,
        "{flavour}"
    );
}

#[test]
fn timer_cancel_vs_fire_from_another_thread_has_exactly_one_outcome() {
    each_loop(|flavour, engine| {
        let rounds = if cfg!(debug_assertions) { 50 } else { 300 };
        let (mut cancelled, mut fired) = (0, 0);
        for _ in 0..rounds {
            let (runs, r) = counter();
            let timer = engine
                .timer_after(Duration::from_micros(200), move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            let was_cancelled = thread::scope(|s| {
                let c = s.spawn(|| {
                    thread::sleep(Duration::from_micros(150));
                    timer.cancel()
                });
                let end = Instant::now() + Duration::from_millis(2);
                while Instant::now() < end {
                    engine.run_once(Some(Duration::from_micros(100))).unwrap();
                }
                c.join().unwrap()
            });
            // Let a fire that began before the cancel finish.
            engine.run_once(Some(Duration::ZERO)).unwrap();
            let ran = runs.load(Ordering::SeqCst);
            if was_cancelled {
                cancelled += 1;
                assert_eq!(
                    ran, 0,
                    "{flavour}: cancel returned true but the callback ran"
                );
            } else {
                fired += 1;
                assert_eq!(
                    ran, 1,
                    "{flavour}: cancel returned false but the callback did not run once"
                );
            }
        }
        assert_eq!(cancelled + fired, rounds);
    });
}

#[test]
// The engine reaps the children (that is what is under test).
#[allow(clippy::zombie_processes)]
fn child_exit_status_is_reported_once() {
    each_loop(|flavour, engine| {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        let pid = child.id();
        let watch = engine
            .watch_child(pid, move |ev| {
                assert_eq!(ev.pid(), pid);
                g.lock().unwrap().push(ev.status().as_ref().unwrap().code());
            })
            .unwrap();
        run_until(engine, || !got.lock().unwrap().is_empty());
        for _ in 0..3 {
            engine.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(*got.lock().unwrap(), vec![Some(7)], "{flavour}");
        assert!(!watch.is_pending());
        // Killed by a signal.
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let got = Arc::new(Mutex::new(None));
        let g = Arc::clone(&got);
        let _w = engine
            .watch_child(child.id(), move |ev| {
                use std::os::unix::process::ExitStatusExt;
                *g.lock().unwrap() = Some(ev.status().as_ref().unwrap().signal());
            })
            .unwrap();
        // SAFETY: kill takes two integers.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        run_until(engine, || got.lock().unwrap().is_some());
        assert_eq!(*got.lock().unwrap(), Some(Some(libc::SIGKILL)), "{flavour}");
    });
    // No such process: an error, not a panic.
    let engine = engine("epoll");
    assert!(matches!(
        engine.watch_child(u32::MAX >> 1, |_| {}),
        Err(Error::Backend(_))
    ));
}

#[test]
fn reports_from_the_application_mix_with_the_loop() {
    // The occurred entry points work on a loop engine too: a report from
    // another thread while the loop dispatches the same watch is deferred
    // or dispatched, never run concurrently; a stale one is rejected.
    each_loop(|flavour, engine| {
        let (a, mut b) = pair();
        let reader = a.try_clone().unwrap();
        let inside = Arc::new(AtomicUsize::new(0));
        let (runs, r) = counter();
        let i2 = Arc::clone(&inside);
        let w = engine
            .register_fd(a.as_raw_fd(), Interest::READABLE, move |_| {
                assert_eq!(i2.fetch_add(1, Ordering::SeqCst), 0, "concurrent run");
                let mut buf = [0u8; 64];
                let _ = (&reader).read(&mut buf);
                r.fetch_add(1, Ordering::SeqCst);
                i2.fetch_sub(1, Ordering::SeqCst);
            })
            .unwrap();
        let token = w.token();
        let fd = a.as_raw_fd();
        thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..2000 {
                    let o = engine.occurred_fd(token, fd, Readiness::READABLE).unwrap();
                    assert!(
                        matches!(o, Occurred::Dispatched | Occurred::Deferred),
                        "{o:?}"
                    );
                }
            });
            for _ in 0..200 {
                b.write_all(b"x").unwrap();
                engine.run_once(Some(Duration::from_millis(1))).unwrap();
            }
        });
        assert!(runs.load(Ordering::SeqCst) > 0, "{flavour}");
        drop(w);
        assert!(matches!(
            engine.occurred_fd(token, fd, Readiness::READABLE).unwrap(),
            Occurred::Stale(_)
        ));
    });
}

#[test]
fn timer_moved_earlier_from_another_thread_wakes_the_loop() {
    each_loop(|flavour, engine| {
        let fired = Arc::new(Mutex::new(None));
        let f = Arc::clone(&fired);
        let timer = engine
            .timer_after(Duration::from_secs(60), move |_| {
                *f.lock().unwrap() = Some(Instant::now())
            })
            .unwrap();
        let moved_to = Mutex::new(None);
        thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(50));
                let at = Instant::now() + Duration::from_millis(20);
                timer.reset_at(at).unwrap();
                *moved_to.lock().unwrap() = Some(at);
            });
            let start = Instant::now();
            while fired.lock().unwrap().is_none() {
                engine.run_once(Some(Duration::from_secs(10))).unwrap();
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "{flavour}: not woken"
                );
            }
        });
        let (at, fired) = (
            moved_to.lock().unwrap().unwrap(),
            fired.lock().unwrap().unwrap(),
        );
        assert!(fired >= at, "{flavour}: fired early");
        assert!(
            fired - at < Duration::from_millis(500),
            "{flavour}: fired {:?} late",
            fired - at
        );
    });
}

#[test]
fn epoll_loop_falls_back_to_epoll_wait_when_epoll_pwait2_is_refused() {
    // ENOSYS: a kernel before 5.11; EPERM: a seccomp profile older than
    // the call. Asked for, or fallen back to from io_uring.
    /// A builder whose epoll loop gets `epoll_pwait2` refused with an errno.
    type Refusing = fn(i32) -> Builder;
    let builders: [(&str, Refusing); 2] = [
        ("epoll", |errno| {
            Engine::builder()
                .backend(BackendKind::Epoll)
                .inject_epoll_pwait2_error(errno)
        }),
        ("default, io_uring refused", |errno| {
            Engine::builder()
                .inject_uring_setup_error(libc::EPERM)
                .inject_epoll_pwait2_error(errno)
        }),
    ];
    for (name, make) in builders {
        for errno in [libc::ENOSYS, libc::EPERM] {
            let what = format!("{name}, epoll_pwait2 refused with errno {errno}");
            let engine = make(errno).build().unwrap();
            assert_eq!(engine.backend(), BackendKind::Epoll, "{what}");
            // A wait with nothing to do sleeps its whole timeout, never
            // less (epoll_wait's milliseconds are rounded up).
            for timeout in [Duration::from_micros(300), Duration::from_millis(20)] {
                let start = Instant::now();
                assert_eq!(engine.run_once(Some(timeout)).unwrap(), 0, "{what}");
                assert!(start.elapsed() >= timeout, "{what}: woke early");
            }
            // Timers below and above a millisecond fire, never early.
            let fired = Arc::new(Mutex::new(Vec::new()));
            let mut timers = Vec::new();
            for delay_us in [100, 700, 1_500, 5_000] {
                let f = Arc::clone(&fired);
                timers.push(
                    engine
                        .timer_after(Duration::from_micros(delay_us), move |ev| {
                            f.lock().unwrap().push((Instant::now(), ev.deadline()));
                        })
                        .unwrap(),
                );
            }
            run_until(&engine, || fired.lock().unwrap().len() == 4);
            for &(at, deadline) in fired.lock().unwrap().iter() {
                assert!(at >= deadline, "{what}: a timer fired early");
            }
            // An fd event wakes a sleeping wait.
            let (a, mut b) = pair();
            let (runs, r) = counter();
            let _w = engine
                .register_fd(a.as_raw_fd(), Interest::READABLE, move |ev| {
                    r.fetch_add(1, Ordering::SeqCst);
                    ev.deregister();
                })
                .unwrap();
            let writer = thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                b.write_all(b"x").unwrap();
                b
            });
            run_until(&engine, || runs.load(Ordering::SeqCst) == 1);
            drop(writer.join().unwrap());
        }
    }
}

#[test]
fn epoll_pwait2_errors_other_than_missing_or_refused_are_reported() {
    // The injected error reaches the loop (so the fallback above is not
    // vacuous), and one that says something is wrong is not swallowed.
    let engine = Engine::builder()
        .backend(BackendKind::Epoll)
        .inject_epoll_pwait2_error(libc::EINVAL)
        .build()
        .unwrap();
    let r = engine.run_once(Some(Duration::from_millis(5)));
    assert!(
        matches!(&r, Err(Error::Backend(e)) if e.raw_os_error() == Some(libc::EINVAL)),
        "{r:?}"
    );
}

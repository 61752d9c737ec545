//! The built-in loop nested in a host's loop: a plain `poll()` loop, and
//! tokio through `AsyncFd`. The host watches the engine's fd, sleeps at
//! most `next_timeout()`, and turns the engine with
//! `run_once(Some(Duration::ZERO))`. Registrations made on other threads
//! while the host sleeps must wake it.

mod common;

use common::{counter, pair, LOOP_BACKENDS};
use evnexus::{Engine, Interest};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// One turn of a plain `poll()` host: wait for the engine's fd at most
/// until its next timer (and at most `cap`), then dispatch without
/// blocking. Returns what ran.
fn poll_host_turn(engine: &Engine, cap: Duration) -> usize {
    let mut pfd = libc::pollfd {
        fd: engine.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let wait = engine.next_timeout().map_or(cap, |t| t.min(cap));
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, evnexus::poll_timeout_ms(Some(wait))) };
    engine.run_once(Some(Duration::ZERO)).unwrap()
}

#[test]
fn engine_nested_in_a_poll_loop_dispatches_fds_and_timers_registered_from_other_threads() {
    for kind in LOOP_BACKENDS {
        let engine = Arc::new(Engine::builder().backend(kind).build().unwrap());
        // The host takes the fd before anything is registered, as a host
        // loop does when it sets up.
        let _ = engine.as_fd();
        let (a, mut b) = pair();
        let (fd_runs, r) = counter();
        let _watch = engine
            .register_fd(
                a.as_raw_fd(),
                Interest::READABLE | Interest::EDGE,
                move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                },
            )
            .unwrap();
        let (fired, f) = counter();
        let e = Arc::clone(&engine);
        let other = thread::spawn(move || {
            // While the host sleeps (its cap is far away): a timer from
            // another thread, then an fd event.
            thread::sleep(Duration::from_millis(30));
            let timer = e
                .timer_after(Duration::from_millis(20), move |_| {
                    f.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            thread::sleep(Duration::from_millis(60));
            b.write_all(b"x").unwrap();
            (timer, b)
        });
        let start = Instant::now();
        let mut turns = 0;
        while fd_runs.load(Ordering::SeqCst) == 0 || fired.load(Ordering::SeqCst) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{kind:?}: host not woken"
            );
            poll_host_turn(&engine, Duration::from_secs(10));
            turns += 1;
        }
        let (timer, _b) = other.join().unwrap();
        assert!(!timer.is_pending());
        // Woken for the timer's registration, the timer, the fd: a handful
        // of turns, not a spin.
        assert!(turns < 20, "{kind:?}: {turns} host turns");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{kind:?}: slept through a wake-up"
        );
    }
}

#[test]
fn next_timeout_ignores_timers_reset_away_or_cancelled() {
    for kind in LOOP_BACKENDS {
        let engine = Engine::builder().backend(kind).build().unwrap();
        let moved = engine
            .timer_after(Duration::from_millis(400), |_| {})
            .unwrap();
        engine.run_once(Some(Duration::ZERO)).unwrap();
        moved.reset_after(Duration::from_secs(3600)).unwrap();
        let cancelled = engine
            .timer_after(Duration::from_millis(300), |_| {})
            .unwrap();
        engine.run_once(Some(Duration::ZERO)).unwrap();
        drop(cancelled);
        let next = engine.next_timeout().expect("the moved timer is pending");
        assert!(
            next > Duration::from_secs(3000),
            "{kind:?}: next timeout {next:?} is a stale entry's"
        );
        drop(moved);
        assert_eq!(engine.next_timeout(), None, "{kind:?}");
    }
}

/// A timer that a callback arms is in the next deadline the turn
/// publishes, whether or not a timer fired in that turn (the loop publishes
/// at the end of the turn on two paths: with no timer due, and after the
/// due timers' callbacks). A callback of the next turn reads what was
/// published: the loop is running, so `next_timeout` does not recompute.
#[test]
fn next_timeout_includes_timers_armed_by_callbacks_with_and_without_a_timer_due() {
    for kind in LOOP_BACKENDS {
        for timer_due in [false, true] {
            let engine = Engine::builder().backend(kind).build().unwrap();
            let (a, mut b) = pair();
            b.write_all(b"x").unwrap(); // readable, never drained
            let seen: Arc<std::sync::Mutex<Vec<Option<Duration>>>> = Arc::default();
            let (armed, arm) = counter();
            let hour = Duration::from_secs(3600);
            let seen_in_cb = Arc::clone(&seen);
            let arm_in_fd = Arc::clone(&arm);
            let _watch = engine
                .register_fd(a.as_raw_fd(), Interest::READABLE, move |ev| {
                    seen_in_cb.lock().unwrap().push(ev.engine().next_timeout());
                    // Without a due timer, the watch's first run arms the
                    // hour-long timer.
                    if !timer_due && arm_in_fd.fetch_add(1, Ordering::SeqCst) == 0 {
                        ev.engine().timer_after_detached(hour, |_| {}).unwrap();
                    }
                })
                .unwrap();
            if timer_due {
                // Due at once; its callback arms the hour-long timer.
                engine
                    .timer_after_detached(Duration::ZERO, move |ev| {
                        arm.fetch_add(1, Ordering::SeqCst);
                        ev.engine().timer_after_detached(hour, |_| {}).unwrap();
                    })
                    .unwrap();
            }
            engine.run_once(Some(Duration::ZERO)).unwrap();
            assert_eq!(armed.load(Ordering::SeqCst), 1, "{kind:?} due={timer_due}");
            engine.run_once(Some(Duration::ZERO)).unwrap();
            let seen = seen.lock().unwrap().clone();
            let next = seen.last().copied().flatten().unwrap_or_else(|| {
                panic!("{kind:?} due={timer_due}: the armed timer was not published: {seen:?}")
            });
            assert!(
                next > hour - Duration::from_secs(60) && next <= hour,
                "{kind:?} due={timer_due}: next timeout {next:?}, not the hour-long timer's"
            );
        }
    }
}

#[test]
fn engine_nested_in_tokio_through_async_fd() {
    use tokio::io::unix::AsyncFd;
    for kind in LOOP_BACKENDS {
        let engine = Engine::builder().backend(kind).build().unwrap();
        let (a, mut b) = pair();
        let (fd_runs, r) = counter();
        let _watch = engine
            .register_fd(a.as_raw_fd(), Interest::READABLE, move |ev| {
                // Level-triggered: drain, or it stays ready.
                let mut buf = [0u8; 16];
                // SAFETY: reads into a buffer of its length.
                unsafe { libc::read(ev.fd(), buf.as_mut_ptr().cast(), buf.len()) };
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let (fired, f) = counter();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            // SAFETY: the engine's fd is open, and names the same file, for
            // the engine's whole life (its `AsFd` promise); the AsyncFd
            // owns the engine.
            let host =
                unsafe { AsyncFd::register_with_interest(engine, tokio::io::Interest::READABLE) }
                    .map_err(std::io::Error::from)
                    .unwrap();
            let timer = host
                .get_ref()
                .timer_after(Duration::from_millis(20), move |_| {
                    f.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            let writer = tokio::task::spawn_blocking(move || {
                thread::sleep(Duration::from_millis(40));
                b.write_all(b"x").unwrap();
                b
            });
            let deadline = Instant::now() + Duration::from_secs(5);
            while fd_runs.load(Ordering::SeqCst) == 0 || fired.load(Ordering::SeqCst) == 0 {
                assert!(Instant::now() < deadline, "{kind:?}: not dispatched");
                let sleep = host
                    .get_ref()
                    .next_timeout()
                    .unwrap_or(Duration::from_secs(60));
                tokio::select! {
                    guard = host.readable() => {
                        let mut guard = guard.unwrap();
                        // tokio's readiness is edge-triggered: turn the
                        // engine until a turn dispatches nothing, then
                        // clear (as a reader drains to WouldBlock).
                        while host.get_ref().run_once(Some(Duration::ZERO)).unwrap() > 0 {}
                        guard.clear_ready();
                    }
                    _ = tokio::time::sleep(sleep) => {
                        host.get_ref().run_once(Some(Duration::ZERO)).unwrap();
                    }
                }
            }
            drop(writer.await.unwrap());
            assert!(!timer.is_pending());
        });
    }
}

//! The plain-`poll()` loop: `beforepoll` / `afterpoll` / `poll_once`.

mod common;

use common::{hooks_engine, pair, raw};
use evnexus::{BackendKind, Engine, Error, Interest, PollSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn poll_engine() -> Engine {
    Engine::builder()
        .backend(BackendKind::Poll)
        .build()
        .unwrap()
}

#[test]
fn readable_fd_is_dispatched_level_triggered_until_drained() {
    let engine = poll_engine();
    let (a, mut b) = pair();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let reader = a.try_clone().unwrap();
    let _watch = engine
        .register_fd(raw(&a), Interest::READABLE, move |ev| {
            assert!(ev.readiness().is_readable());
            // Read one byte per run: the fd stays readable, the callback
            // runs again on the next iteration.
            let mut byte = [0u8; 1];
            (&reader).read_exact(&mut byte).unwrap();
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    b.write_all(b"abc").unwrap();
    let mut set = PollSet::new();
    for expected in 1..=3 {
        assert_eq!(
            engine
                .poll_once(&mut set, Some(Duration::from_secs(5)))
                .unwrap(),
            1
        );
        assert_eq!(runs.load(Ordering::SeqCst), expected);
    }
    // Drained: nothing more within a short wait.
    assert_eq!(
        engine
            .poll_once(&mut set, Some(Duration::from_millis(20)))
            .unwrap(),
        0
    );
}

#[test]
fn timers_never_fire_early_and_fire_in_deadline_order() {
    let engine = poll_engine();
    let order = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut timers = Vec::new();
    for (i, ms) in [(0, 60u64), (1, 20), (2, 40), (3, 20)] {
        let o = Arc::clone(&order);
        let deadline = start + Duration::from_millis(ms);
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
    let mut set = PollSet::new();
    while order.lock().unwrap().len() < 4 {
        engine
            .poll_once(&mut set, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    let order = order.lock().unwrap();
    assert_eq!(order[3], 0, "latest deadline last");
    assert_eq!(order[2], 2);
    assert!(order[..2].contains(&1) && order[..2].contains(&3));
}

#[test]
fn moving_a_timer_later_is_respected_by_the_loop() {
    let engine = poll_engine();
    let fired = Arc::new(Mutex::new(None));
    let f = Arc::clone(&fired);
    let timer = engine
        .timer_after(Duration::from_millis(10), move |_| {
            *f.lock().unwrap() = Some(Instant::now());
        })
        .unwrap();
    let moved_to = Instant::now() + Duration::from_millis(80);
    timer.reset_at(moved_to).unwrap();
    let mut set = PollSet::new();
    while fired.lock().unwrap().is_none() {
        engine
            .poll_once(&mut set, Some(Duration::from_secs(5)))
            .unwrap();
    }
    assert!(fired.lock().unwrap().unwrap() >= moved_to);
}

#[test]
fn registration_from_another_thread_wakes_a_sleeping_loop() {
    let engine = poll_engine();
    let fired = Arc::new(AtomicUsize::new(0));
    let mut set = PollSet::new();
    let start = Instant::now();
    thread::scope(|s| {
        let f = Arc::clone(&fired);
        let engine = &engine;
        let registrar = s.spawn(move || {
            thread::sleep(Duration::from_millis(100));
            // The loop sleeps without a deadline; this must wake it.
            engine
                .timer_after(Duration::ZERO, move |_| {
                    f.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap()
        });
        while fired.load(Ordering::SeqCst) == 0 {
            engine.poll_once(&mut set, None).unwrap();
            assert!(start.elapsed() < Duration::from_secs(5), "not woken");
        }
        assert!(!registrar.join().unwrap().is_pending());
    });
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn application_fds_ride_along_and_stale_entries_are_rejected() {
    let engine = poll_engine();
    let (a, mut b) = pair();
    let (mine, mut mine_peer) = pair();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let watch = engine
        .register_fd(raw(&a), Interest::READABLE, move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    b.write_all(b"x").unwrap();
    mine_peer.write_all(b"y").unwrap();
    let mut set = PollSet::new();
    assert_eq!(
        engine.beforepoll(&mut set).unwrap(),
        None,
        "no timers: no limit"
    );
    assert_eq!(set.engine_len(), 2, "the wake-up eventfd and one watch");
    let my_index = set.push_fd(raw(&mine), libc::POLLIN);
    let fds = set.fds_mut();
    // SAFETY: a valid slice of pollfds.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
    assert_eq!(n, 2);
    assert!(
        set.fds()[my_index].revents & libc::POLLIN != 0,
        "the application's own fd"
    );
    // The watch ends between poll() and afterpoll(): its entry is stale.
    drop(watch);
    assert_eq!(engine.afterpoll(&mut set).unwrap(), 0);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(engine.stats().stale.generation, 1);
}

#[test]
fn beforepoll_on_a_hooks_engine_is_unsupported() {
    let (engine, _rec) = hooks_engine();
    let mut set = PollSet::new();
    assert!(matches!(
        engine.beforepoll(&mut set),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        engine.afterpoll(&mut set),
        Err(Error::Unsupported(_))
    ));
    let other = poll_engine();
    assert!(matches!(
        other.afterpoll(&mut set),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn poll_timeout_rounds_up_so_timers_are_not_woken_early() {
    use evnexus::poll_timeout_ms;
    assert_eq!(poll_timeout_ms(None), -1);
    assert_eq!(poll_timeout_ms(Some(Duration::ZERO)), 0);
    assert_eq!(poll_timeout_ms(Some(Duration::from_nanos(1))), 1);
    assert_eq!(poll_timeout_ms(Some(Duration::from_micros(1500))), 2);
    assert_eq!(
        poll_timeout_ms(Some(Duration::from_secs(u64::MAX))),
        libc::c_int::MAX
    );
}

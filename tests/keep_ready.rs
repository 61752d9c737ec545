//! Readiness kept in user space (`Interest::KEEP_READY`): a watch whose
//! callback does not clear its readiness runs again on every turn of the
//! built-in loop without the kernel; `FdEvent::clear_ready` hands it back
//! to the kernel's next edge. On both built-in loops.

mod common;

use common::{counter, pair, LOOP_BACKENDS};
use evnexus::{BackendKind, Engine, Error, Interest, Unsupported};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn turn(engine: &Engine) -> usize {
    engine.run_once(Some(Duration::ZERO)).unwrap()
}

#[test]
fn a_watch_that_keeps_its_readiness_runs_each_turn_without_a_kernel_event() {
    for kind in LOOP_BACKENDS {
        let engine = Engine::builder().backend(kind).build().unwrap();
        let (mut a, mut b) = pair();
        let (runs, r) = counter();
        let _watch = engine
            .register_fd(
                a.as_raw_fd(),
                Interest::READABLE | Interest::KEEP_READY,
                move |_| {
                    // Reads everything but never says so: the engine cannot know
                    // the socket is empty, and keeps running the callback.
                    let mut buf = [0u8; 64];
                    let _ = a.read(&mut buf);
                    r.fetch_add(1, Ordering::SeqCst);
                },
            )
            .unwrap();
        assert_eq!(turn(&engine), 0, "{kind:?}: nothing ready yet");
        b.write_all(b"x").unwrap();
        assert_eq!(turn(&engine), 1, "{kind:?}: the edge");
        // The socket is empty now; a level-triggered watch would not run.
        for n in 2..=5 {
            assert_eq!(turn(&engine), 1, "{kind:?}: turn {n}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        assert_eq!(
            engine.next_timeout(),
            Some(Duration::ZERO),
            "{kind:?}: work is pending"
        );
    }
}

#[test]
fn clear_ready_waits_for_the_kernels_next_edge() {
    for kind in LOOP_BACKENDS {
        let engine = Engine::builder().backend(kind).build().unwrap();
        let (mut a, mut b) = pair();
        let (runs, r) = counter();
        let (bytes, by) = counter();
        let _watch = engine
            .register_fd(
                a.as_raw_fd(),
                Interest::READABLE | Interest::KEEP_READY,
                move |ev| {
                    r.fetch_add(1, Ordering::SeqCst);
                    // One byte per run: a callback with a budget.
                    let mut buf = [0u8; 1];
                    match a.read(&mut buf) {
                        Ok(n) => {
                            by.fetch_add(n, Ordering::SeqCst);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => ev.clear_ready(),
                        Err(e) => panic!("{e}"),
                    }
                },
            )
            .unwrap();
        b.write_all(b"abc").unwrap();
        // One edge, then three bytes one per turn, then the WouldBlock run
        // clears the readiness.
        let mut turns = 0;
        while turn(&engine) > 0 {
            turns += 1;
            assert!(turns < 10, "{kind:?}: never cleared");
        }
        assert_eq!(
            (runs.load(Ordering::SeqCst), bytes.load(Ordering::SeqCst)),
            (4, 3)
        );
        // Cleared: quiet until new data.
        for _ in 0..3 {
            assert_eq!(turn(&engine), 0, "{kind:?}: ran after clear_ready");
        }
        assert_eq!(engine.next_timeout(), None, "{kind:?}");
        b.write_all(b"d").unwrap();
        assert_eq!(turn(&engine), 1, "{kind:?}: the next edge");
        assert_eq!(bytes.load(Ordering::SeqCst), 4);
    }
}

#[test]
fn a_kept_watch_deregistered_between_turns_or_by_itself_runs_no_more() {
    for kind in LOOP_BACKENDS {
        let engine = Arc::new(Engine::builder().backend(kind).build().unwrap());
        let (a, mut b) = pair();
        let (runs, r) = counter();
        let watch = engine
            .register_fd(
                a.as_raw_fd(),
                Interest::READABLE | Interest::KEEP_READY,
                move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                },
            )
            .unwrap();
        b.write_all(b"x").unwrap();
        assert_eq!(turn(&engine), 1);
        assert_eq!(turn(&engine), 1, "kept");
        // Deregistered from another thread between two turns.
        let token = watch.token();
        std::thread::spawn(move || drop(watch)).join().unwrap();
        assert_eq!(turn(&engine), 0, "{kind:?}: ran after its deregistration");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(
            engine.stats().stale.total(),
            0,
            "{kind:?}: not a stale report"
        );
        assert!(!engine.deregister(token).unwrap());

        // A callback that ends its own watch while kept.
        let (c, mut d) = pair();
        let (own, o) = counter();
        let _w = engine
            .register_fd(
                c.as_raw_fd(),
                Interest::READABLE | Interest::KEEP_READY,
                move |ev| {
                    if o.fetch_add(1, Ordering::SeqCst) == 2 {
                        ev.deregister();
                    }
                },
            )
            .unwrap();
        d.write_all(b"y").unwrap();
        for _ in 0..6 {
            turn(&engine);
        }
        assert_eq!(own.load(Ordering::SeqCst), 3, "{kind:?}");
    }
}

#[test]
fn keeping_readiness_needs_a_built_in_loop_and_cannot_be_switched_by_modify() {
    let (a, _b) = pair();
    let (hooks, _) = common::hooks_engine();
    let r = hooks.register_fd(
        a.as_raw_fd(),
        Interest::READABLE | Interest::KEEP_READY,
        |_| {},
    );
    assert!(matches!(
        r,
        Err(Error::Unsupported(Unsupported::KeepReadyNeedsBuiltinLoop))
    ));
    let poll = Engine::builder()
        .backend(BackendKind::Poll)
        .build()
        .unwrap();
    assert!(poll
        .register_fd(
            a.as_raw_fd(),
            Interest::READABLE | Interest::KEEP_READY,
            |_| {}
        )
        .is_err());
    for kind in LOOP_BACKENDS {
        let engine = Engine::builder().backend(kind).build().unwrap();
        let plain = engine
            .register_fd(a.as_raw_fd(), Interest::READABLE, |_| {})
            .unwrap();
        assert!(plain
            .modify(Interest::READABLE | Interest::KEEP_READY)
            .is_err());
        drop(plain);
        let kept = engine
            .register_fd(
                a.as_raw_fd(),
                Interest::READABLE | Interest::KEEP_READY,
                |_| {},
            )
            .unwrap();
        assert!(kept.modify(Interest::READABLE).is_err());
        kept.modify(Interest::READABLE | Interest::WRITABLE | Interest::KEEP_READY)
            .unwrap();
    }
}

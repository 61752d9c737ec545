//! Registration behaviour: callbacks re-entering the engine, hooks, bad
//! input, panics, and the engine's lifetime (DESIGN.md invariants 3 and 6,
//! and the error policy), on every backend: hooks, io_uring and epoll (see
//! `common::each_backend`). Tests about the hooks themselves run on the
//! hooks backend only.

mod common;

use common::{
    dup, dups, each_backend, each_backend_owned, each_backend_with, hooks_engine, on_backends,
    pair, raw, Call, LOOP_BACKENDS,
};
use evnexus::{Engine, Error, FdWatch, Interest, Occurred, Readiness, StaleReason, Timer};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn callback_registers_and_deregisters_other_watches() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _a2) = pair();
        let (b, _b2) = pair();
        // The three children watch `b` at once: one descriptor each.
        let b_fds = dups(&b, 3);
        let child_fds: Vec<RawFd> = b_fds.iter().map(AsRawFd::as_raw_fd).collect();
        let children: Arc<Mutex<Vec<FdWatch>>> = Arc::default();
        let child_runs = Arc::new(AtomicUsize::new(0));
        let (kids, cr) = (Arc::clone(&children), Arc::clone(&child_runs));
        let kid_fds = child_fds.clone();
        let parent = engine
            .register_fd(raw(&a), Interest::READABLE, move |ev| {
                let mut kids = kids.lock().unwrap();
                if ev.readiness().is_readable() {
                    // Register a child from inside the callback.
                    let cr = Arc::clone(&cr);
                    let fd_b = kid_fds[kids.len()];
                    let child = ev
                        .engine()
                        .register_fd(fd_b, Interest::READABLE, move |_| {
                            cr.fetch_add(1, Ordering::SeqCst);
                        })
                        .expect("register from a callback");
                    kids.push(child);
                } else {
                    // Deregister them all from inside the callback.
                    for child in kids.drain(..) {
                        assert!(child.deregister());
                    }
                }
            })
            .unwrap();
        for _ in 0..3 {
            assert_eq!(
                engine
                    .occurred_fd(parent.token(), raw(&a), Readiness::READABLE)
                    .unwrap(),
                Occurred::Dispatched
            );
        }
        let tokens: Vec<_> = children
            .lock()
            .unwrap()
            .iter()
            .map(FdWatch::token)
            .collect();
        assert_eq!(tokens.len(), 3);
        for (&t, &fd_b) in tokens.iter().zip(&child_fds) {
            assert_eq!(
                engine.occurred_fd(t, fd_b, Readiness::READABLE).unwrap(),
                Occurred::Dispatched
            );
        }
        assert_eq!(child_runs.load(Ordering::SeqCst), 3);
        assert_eq!(
            engine
                .occurred_fd(parent.token(), raw(&a), Readiness::WRITABLE)
                .unwrap(),
            Occurred::Dispatched
        );
        for (&t, &fd_b) in tokens.iter().zip(&child_fds) {
            assert_eq!(
                engine.occurred_fd(t, fd_b, Readiness::READABLE).unwrap(),
                Occurred::Stale(StaleReason::Generation)
            );
            if let Some(rec) = &rig.rec {
                assert!(rec.calls().contains(&Call::FdDeregister(fd_b, t)));
            }
        }
        assert_eq!(child_runs.load(Ordering::SeqCst), 3);
        // Only the parent is left.
        let s = engine.stats();
        assert_eq!((s.registered, s.deregistered), (4, 3));
        drop(parent);
        drop(b_fds);
    });
}

#[test]
fn timer_callback_rearms_a_new_timer_from_inside() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let next: Arc<Mutex<Option<Timer>>> = Arc::default();
        let n2 = Arc::clone(&next);
        let first = engine
            .timer_after(Duration::from_secs(3600), move |ev| {
                let t = ev
                    .engine()
                    .timer_after(Duration::from_secs(3600), |_| {})
                    .unwrap();
                *n2.lock().unwrap() = Some(t);
            })
            .unwrap();
        assert_eq!(
            engine.occurred_timeout(first.token()).unwrap(),
            Occurred::Dispatched
        );
        let second = next.lock().unwrap().take().expect("re-armed");
        assert!(second.is_pending());
        assert_eq!(
            engine.occurred_timeout(second.token()).unwrap(),
            Occurred::Dispatched
        );
    });
}

#[test]
fn modify_reaches_the_backend_and_a_failed_modify_changes_nothing() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let watch = engine
            .register_fd(raw(&a), Interest::READABLE, |_| {})
            .unwrap();
        watch.modify(Interest::WRITABLE).unwrap();
        if let Some(rec) = &rig.rec {
            assert_eq!(
                rec.fds.lock().unwrap()[&watch.token()].1,
                Interest::WRITABLE
            );
            // The application's loop refuses the change.
            rec.fail_next(io::ErrorKind::PermissionDenied);
            match watch.modify(Interest::READABLE) {
                Err(Error::Backend(e)) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied),
                other => panic!("{other:?}"),
            }
            assert_eq!(
                rec.fds.lock().unwrap()[&watch.token()].1,
                Interest::WRITABLE
            );
        }
        // A change no backend can make (level to edge triggering) is
        // refused the same way on each.
        match watch.modify(Interest::READABLE | Interest::EDGE) {
            Err(Error::Backend(e)) => assert_eq!(e.kind(), io::ErrorKind::Unsupported),
            other => panic!("{other:?}"),
        }
        if let Some(rec) = &rig.rec {
            assert_eq!(
                rec.fds.lock().unwrap()[&watch.token()].1,
                Interest::WRITABLE
            );
        }
        assert!(watch.is_live());
        watch.modify(Interest::READABLE).unwrap();
        let timer = engine.timer_after(Duration::from_secs(60), |_| {}).unwrap();
        let later = Instant::now() + Duration::from_secs(120);
        timer.reset_at(later).unwrap();
        if let Some(rec) = &rig.rec {
            assert_eq!(rec.timeouts.lock().unwrap()[&timer.token()], later);
        }
        // The timer carries the new deadline on every backend: its event says so.
        let fired_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let f2 = Arc::clone(&fired_at);
        let timer = engine
            .timer_after(Duration::from_secs(60), move |ev| {
                *f2.lock().unwrap() = Some(ev.deadline())
            })
            .unwrap();
        timer.reset_at(later).unwrap();
        assert_eq!(
            engine.occurred_timeout(timer.token()).unwrap(),
            Occurred::Dispatched
        );
        assert_eq!(*fired_at.lock().unwrap(), Some(later));
    });
}

/// About the hooks themselves (a failing hook): hooks backend only. The
/// loop backends' counterpart is
/// `backend_refusal_fails_registration_cleanly_and_returns_the_slot`.
#[test]
fn hook_error_fails_registration_cleanly_and_returns_the_slot() {
    let (engine, rec) = hooks_engine();
    let (a, _b) = pair();
    rec.fail_next(io::ErrorKind::OutOfMemory);
    let err = engine
        .register_fd(raw(&a), Interest::READABLE, |_| panic!("never runs"))
        .unwrap_err();
    assert!(matches!(err, Error::Backend(ref e) if e.kind() == io::ErrorKind::OutOfMemory));
    // The failed registration made no hook record...
    assert!(rec.calls().is_empty());
    // ...and its slot is free again, under a new generation.
    let w = engine
        .register_fd(raw(&a), Interest::READABLE, |_| {})
        .unwrap();
    assert_eq!(w.token().index(), 0);
    assert_eq!(w.token().generation().unwrap().get(), 2);
    let failed = evnexus::Token::from_u64(w.token().as_u64() - (1 << 24));
    assert_eq!(
        engine
            .occurred_fd(failed, raw(&a), Readiness::READABLE)
            .unwrap(),
        Occurred::Stale(StaleReason::Generation)
    );
    rec.fail_next(io::ErrorKind::Other);
    assert!(matches!(
        engine.timer_after(Duration::from_secs(1), |_| {}),
        Err(Error::Backend(_))
    ));
    let s = engine.stats();
    assert_eq!(s.live(), 1);
}

/// The same on the engine's own loops, where the backend that refuses is
/// the kernel: a second live watch of one fd number is `EEXIST` in the
/// epoll set.
#[test]
fn backend_refusal_fails_registration_cleanly_and_returns_the_slot() {
    on_backends(
        &LOOP_BACKENDS,
        |b| b,
        |rig| {
            let engine = &rig.engine;
            let (a, _b) = pair();
            let first = engine
                .register_fd(raw(&a), Interest::READABLE, |_| {})
                .unwrap();
            let err = engine
                .register_fd(raw(&a), Interest::READABLE, |_| panic!("never runs"))
                .unwrap_err();
            assert!(
                matches!(err, Error::Backend(ref e) if e.raw_os_error() == Some(libc::EEXIST)),
                "{err:?}"
            );
            // The failed registration's slot is free again, under a new generation.
            let other = dup(&a);
            let w = engine
                .register_fd(other.as_raw_fd(), Interest::READABLE, |_| {})
                .unwrap();
            assert_eq!(w.token().index(), 1);
            assert_eq!(w.token().generation().unwrap().get(), 2);
            let failed = evnexus::Token::from_u64(w.token().as_u64() - (1 << 24));
            assert_eq!(
                engine
                    .occurred_fd(failed, raw(&a), Readiness::READABLE)
                    .unwrap(),
                Occurred::Stale(StaleReason::Generation)
            );
            // The first watch is untouched by the refusal of the second.
            assert_eq!(
                engine
                    .occurred_fd(first.token(), raw(&a), Readiness::READABLE)
                    .unwrap(),
                Occurred::Dispatched
            );
            let s = engine.stats();
            assert_eq!((s.registered, s.deregistered, s.live()), (3, 1, 2));
            drop((first, w));
        },
    );
}

#[test]
fn negative_and_closed_fds_are_errors_not_panics() {
    each_backend(|rig| {
        let engine = &rig.engine;
        assert!(matches!(
            engine.register_fd(-1, Interest::READABLE, |_| {}),
            Err(Error::BadFd(-1))
        ));
        // A number no other test thread is handed meanwhile (the kernel
        // gives out the lowest free one): the highest this process may use.
        let (a, _b) = pair();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid rlimit to fill.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let closed = RawFd::try_from(lim.rlim_cur.min(1 << 20) - 1).unwrap();
        // SAFETY: dup2 onto a number this test alone uses; closed below.
        assert_eq!(unsafe { libc::dup2(raw(&a), closed) }, closed);
        // SAFETY: `closed` is the copy made above, owned by nothing else.
        assert_eq!(unsafe { libc::close(closed) }, 0);
        assert!(matches!(
            engine.register_fd(closed, Interest::READABLE, |_| {}),
            Err(Error::BadFd(fd)) if fd == closed
        ));
        if let Some(rec) = &rig.rec {
            assert!(rec.calls().is_empty());
        }
        assert_eq!(engine.stats().registered, 0);
        // The error converts to io::Error for callers that want one.
        let e: io::Error = Error::BadFd(-1).into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn modify_and_deregister_on_dead_handle_are_gone_and_noop() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let watch = engine
            .register_fd(raw(&a), Interest::READABLE, |ev| {
                ev.deregister();
            })
            .unwrap();
        let _ = engine
            .occurred_fd(watch.token(), raw(&a), Readiness::READABLE)
            .unwrap();
        assert!(matches!(watch.modify(Interest::WRITABLE), Err(Error::Gone)));
        let deregistrations = rig.rec.as_ref().map(|rec| rec.calls().len());
        let before = engine.stats();
        assert_eq!(before.deregistered, 1);
        assert!(
            !watch.deregister(),
            "deregister on an ended watch is a no-op"
        );
        if let Some(rec) = &rig.rec {
            assert_eq!(
                Some(rec.calls().len()),
                deregistrations,
                "no second hook call"
            );
        }
        assert_eq!(engine.stats(), before, "no second deregistration");

        let timer = engine.timer_after(Duration::from_secs(60), |_| {}).unwrap();
        let _ = engine.occurred_timeout(timer.token()).unwrap();
        assert!(matches!(
            timer.reset_after(Duration::from_secs(1)),
            Err(Error::Gone)
        ));
        assert!(!timer.is_pending());
        assert!(!timer.cancel());
    });
}

#[test]
fn panicking_fd_callback_ends_its_watch_and_frees_its_slot() {
    each_backend(|rig| {
        let engine = &rig.engine;
        let (a, _b) = pair();
        let watch = engine
            .register_fd(raw(&a), Interest::READABLE, |_| panic!("callback bug"))
            .unwrap();
        let token = watch.token();
        match engine.occurred_fd(token, raw(&a), Readiness::READABLE) {
            Err(Error::CallbackPanicked(p)) => {
                let (t, message) = (p.token, p.message);
                assert_eq!(t, token);
                assert_eq!(message, "callback bug");
            }
            other => panic!("{other:?}"),
        }
        // Policy: the watch is ended (as if it had deregistered itself) and its
        // slot is torn down, not left BUSY: later reports are stale, the
        // application was told, and the slot is reused.
        assert!(!watch.is_live());
        assert_eq!(
            engine
                .occurred_fd(token, raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Stale(StaleReason::Generation)
        );
        assert_eq!(engine.stats().live(), 0);
        if let Some(rec) = &rig.rec {
            assert!(rec.calls().contains(&Call::FdDeregister(raw(&a), token)));
        }
        let next = engine
            .register_fd(raw(&a), Interest::READABLE, |_| {})
            .unwrap();
        assert_eq!(next.token().index(), token.index());
        assert_eq!(
            engine
                .occurred_fd(next.token(), raw(&a), Readiness::READABLE)
                .unwrap(),
            Occurred::Dispatched
        );
        let s = engine.stats();
        assert_eq!((s.panicked, s.dispatched), (1, 2));
        // A panicking timer callback: fired once, slot freed.
        let timer = engine
            .timer_after(Duration::ZERO, |_| panic!("timer bug"))
            .unwrap();
        assert!(matches!(
            engine.occurred_timeout(timer.token()),
            Err(Error::CallbackPanicked(_))
        ));
        assert!(!timer.is_pending());
    });
}

/// About the hooks themselves (a hook re-entering the engine): hooks
/// backend only.
#[test]
fn hook_that_modifies_its_own_registration_gets_reentrant_error() {
    use evnexus::{OsEventHooks, Token};
    type Shared = Arc<Mutex<Option<Arc<FdWatch>>>>;
    /// Hooks whose fd_modify calls back into the engine to modify the very
    /// registration it is serving.
    struct Reentrant(Shared, Arc<Mutex<Option<evnexus::Result<()>>>>);
    impl OsEventHooks for Reentrant {
        type FdReg = ();
        type TimeoutReg = ();
        fn fd_register(&self, _: i32, _: Interest, _: Token) -> io::Result<()> {
            Ok(())
        }
        fn fd_modify(&self, _: i32, _: &mut (), _: Interest) -> io::Result<()> {
            let watch = self.0.lock().unwrap().clone();
            if let Some(w) = watch {
                *self.1.lock().unwrap() = Some(w.modify(Interest::WRITABLE));
            }
            Ok(())
        }
        fn fd_deregister(&self, _: i32, _: ()) {}
        fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> {
            Ok(())
        }
        fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> {
            Ok(())
        }
        fn timeout_deregister(&self, _: ()) {}
    }
    let shared: Shared = Arc::default();
    let inner_result = Arc::default();
    let engine = Engine::with_hooks(Reentrant(Arc::clone(&shared), Arc::clone(&inner_result)));
    let (a, _b) = pair();
    let watch = Arc::new(
        engine
            .register_fd(raw(&a), Interest::READABLE, |_| {})
            .unwrap(),
    );
    *shared.lock().unwrap() = Some(Arc::clone(&watch));
    // Would spin forever on its own CTRL bit; refused instead.
    watch
        .modify(Interest::READABLE | Interest::PRIORITY)
        .unwrap();
    assert!(matches!(
        *inner_result.lock().unwrap(),
        Some(Err(Error::Reentrant))
    ));
    assert!(watch.is_live());
    shared.lock().unwrap().take();
}

#[test]
fn dropping_the_engine_ends_live_registrations_and_handles_outlive_it() {
    each_backend_owned(|rig| {
        let engine = rig.engine;
        let (a, _b) = pair();
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Tracker(Arc<AtomicUsize>);
        impl Drop for Tracker {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let t = Tracker(Arc::clone(&dropped));
        let watch = engine
            .register_fd(raw(&a), Interest::READABLE, move |_| {
                let _keep = &t;
            })
            .unwrap();
        let t2 = Tracker(Arc::clone(&dropped));
        let timer = engine
            .timer_after(Duration::from_secs(60), move |_| {
                let _keep = &t2;
            })
            .unwrap();
        assert_eq!(engine.stats().live(), 2);
        drop(engine);
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            2,
            "callbacks dropped with the engine"
        );
        if let Some(rec) = &rig.rec {
            assert_eq!(rec.live_fds(), 0);
            assert_eq!(rec.live_timeouts(), 0);
        }
        // The handles outlive the engine harmlessly.
        assert!(!watch.is_live());
        assert!(matches!(watch.modify(Interest::WRITABLE), Err(Error::Gone)));
        assert!(!watch.deregister());
        assert!(!timer.cancel());
    });
}

#[test]
fn engine_full_is_an_error() {
    each_backend_with(
        |b| b.max_registrations(2),
        |rig| {
            let engine = &rig.engine;
            let _t1 = engine.timer_after(Duration::from_secs(60), |_| {}).unwrap();
            let t2 = engine.timer_after(Duration::from_secs(60), |_| {}).unwrap();
            assert!(matches!(
                engine.timer_after(Duration::from_secs(60), |_| {}),
                Err(Error::Full { limit: 2 })
            ));
            drop(t2);
            assert!(engine.timer_after(Duration::from_secs(60), |_| {}).is_ok());
        },
    );
}

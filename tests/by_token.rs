//! Changes by token (`Engine::modify_fd`, `Engine::reset_timer`) and
//! handles let go of without ending their registration
//! (`FdWatch::into_token`, `Timer::into_token`), on every backend: live
//! tokens work, and stale, forged and wrong-kind tokens are `Error::Gone`
//! with nothing touched.

mod common;
#[path = "common/drive.rs"]
mod drive;

use common::{on_backends, pair, raw, Call, Rig, ALL_BACKENDS};
use drive::{turn, turn_until};
use evnexus::{Error, Interest, Token};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);

fn each(test: impl Fn(&Rig)) {
    on_backends(&ALL_BACKENDS, |b| b, |rig| test(&rig));
}

/// Tokens that name nothing: out of range, malformed, a generation never
/// handed out at slot 0.
fn forged() -> [Token; 4] {
    [
        Token::from_u64(u64::MAX),
        Token::from_u64(0),
        Token::from_u64(7),
        Token::from_u64((u64::MAX >> 24) << 24),
    ]
}

fn gone<T: std::fmt::Debug>(r: evnexus::Result<T>) -> bool {
    matches!(r, Err(Error::Gone))
}

#[test]
fn modify_fd_by_token_changes_a_live_watch() {
    each(|rig| {
        let (a, mut b) = pair();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        let w = rig
            .engine
            .register_fd(raw(&a), Interest::WRITABLE, move |ev| {
                assert!(ev.readiness().is_readable(), "the new interest");
                r.fetch_add(1, Ordering::SeqCst);
                ev.deregister();
            })
            .unwrap();
        rig.engine.modify_fd(w.token(), Interest::READABLE).unwrap();
        if let Some(rec) = &rig.rec {
            assert!(rec
                .calls()
                .contains(&Call::FdModify(raw(&a), Interest::READABLE, w.token())));
        }
        b.write_all(b"x").unwrap();
        turn_until(rig, "the modified watch", LIMIT, || {
            runs.load(Ordering::SeqCst) == 1
        });
        // Ended by its callback: its token is stale now.
        assert!(gone(rig.engine.modify_fd(w.token(), Interest::READABLE)));
    });
}

#[test]
fn modify_fd_with_a_stale_forged_or_timer_token_is_gone_and_touches_nothing() {
    each(|rig| {
        let (a, _b) = pair();
        let stale = rig
            .engine
            .register_fd(raw(&a), Interest::READABLE, |_| {})
            .unwrap();
        let stale_token = stale.token();
        assert!(stale.deregister());
        let fired = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&fired);
        let timer = rig
            .engine
            .timer_after(Duration::from_millis(20), move |_| {
                f.store(true, Ordering::SeqCst)
            })
            .unwrap();
        let calls_before = rig.rec.as_ref().map(|r| r.calls().len());
        assert!(gone(rig.engine.modify_fd(stale_token, Interest::WRITABLE)));
        for t in forged() {
            assert!(gone(rig.engine.modify_fd(t, Interest::WRITABLE)), "{t:?}");
        }
        assert!(gone(
            rig.engine.modify_fd(timer.token(), Interest::WRITABLE)
        ));
        // Nothing reached the application's loop, and the timer is intact:
        // it fires at its deadline.
        assert_eq!(rig.rec.as_ref().map(|r| r.calls().len()), calls_before);
        assert!(timer.is_pending());
        turn_until(rig, "the timer", LIMIT, || fired.load(Ordering::SeqCst));
    });
}

#[test]
fn reset_timer_by_token_moves_a_pending_timer() {
    each(|rig| {
        let fired_at = Arc::new(std::sync::Mutex::new(None));
        let f = Arc::clone(&fired_at);
        let token = rig
            .engine
            .timer_after(Duration::from_secs(3600), move |ev| {
                *f.lock().unwrap() = Some((Instant::now(), ev.deadline()));
            })
            .unwrap()
            .into_token();
        let deadline = Instant::now() + Duration::from_millis(10);
        rig.engine.reset_timer(token, deadline).unwrap();
        if let Some(rec) = &rig.rec {
            assert!(rec.calls().contains(&Call::TimeoutModify(token)));
        }
        turn_until(rig, "the reset timer", LIMIT, || {
            fired_at.lock().unwrap().is_some()
        });
        let (at, seen) = fired_at.lock().unwrap().unwrap();
        assert_eq!(seen, deadline);
        assert!(at >= deadline, "never early");
        // Fired: its token is stale now.
        assert!(gone(rig.engine.reset_timer(token, Instant::now())));
    });
}

#[test]
fn reset_timer_with_a_stale_forged_or_fd_token_is_gone_and_touches_nothing() {
    each(|rig| {
        let cancelled = rig
            .engine
            .timer_after(Duration::from_secs(60), |_| {})
            .unwrap();
        let cancelled_token = cancelled.token();
        assert!(cancelled.cancel());
        let (a, mut b) = pair();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        let w = rig
            .engine
            .register_fd(raw(&a), Interest::READABLE, move |_| {
                let mut buf = [0u8; 8];
                let _ = std::io::Read::read(&mut &a, &mut buf);
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let calls_before = rig.rec.as_ref().map(|r| r.calls().len());
        let now = Instant::now();
        assert!(gone(rig.engine.reset_timer(cancelled_token, now)));
        for t in forged() {
            assert!(gone(rig.engine.reset_timer(t, now)), "{t:?}");
        }
        assert!(gone(rig.engine.reset_timer(w.token(), now)));
        assert_eq!(rig.rec.as_ref().map(|r| r.calls().len()), calls_before);
        // The watch still delivers, on its own fd and interest.
        b.write_all(b"x").unwrap();
        turn_until(rig, "the watch", LIMIT, || runs.load(Ordering::SeqCst) >= 1);
        assert!(w.is_live());
    });
}

#[test]
fn fd_watch_into_token_keeps_the_watch_until_deregistered_by_token() {
    each(|rig| {
        let (a, mut b) = pair();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        let dropped = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(Arc::clone(&dropped));
        let fd = raw(&a);
        let token = rig
            .engine
            .register_fd(fd, Interest::READABLE, move |_| {
                let _keep = &flag;
                let mut buf = [0u8; 8];
                let _ = std::io::Read::read(&mut &a, &mut buf);
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap()
            .into_token();
        // The handle is gone; the watch is not.
        assert!(!dropped.load(Ordering::SeqCst));
        b.write_all(b"x").unwrap();
        turn_until(rig, "the handle-less watch", LIMIT, || {
            runs.load(Ordering::SeqCst) >= 1
        });
        rig.engine
            .modify_fd(token, Interest::READABLE | Interest::PRIORITY)
            .unwrap();
        assert!(rig.engine.deregister(token).unwrap());
        assert!(dropped.load(Ordering::SeqCst));
        assert!(!rig.engine.deregister(token).unwrap());
        if let Some(rec) = &rig.rec {
            assert!(rec.calls().contains(&Call::FdDeregister(fd, token)));
        }
    });
}

#[test]
fn timer_into_token_fires_once_without_its_handle() {
    each(|rig| {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        let token = rig
            .engine
            .timer_after(Duration::from_millis(5), move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap()
            .into_token();
        turn_until(rig, "the handle-less timer", LIMIT, || {
            runs.load(Ordering::SeqCst) == 1
        });
        for _ in 0..3 {
            turn(rig, Duration::from_millis(5));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!rig.engine.deregister(token).unwrap());
        assert_eq!(rig.engine.stats().live(), 0);
    });
}

#[test]
fn registrations_let_go_of_end_with_the_engine() {
    on_backends(
        &ALL_BACKENDS,
        |b| b,
        |rig| {
            let dropped = Arc::new(AtomicUsize::new(0));
            struct Count(Arc<AtomicUsize>);
            impl Drop for Count {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let (a, _b) = pair();
            let c = Count(Arc::clone(&dropped));
            rig.engine
                .register_fd(raw(&a), Interest::READABLE, move |_| {
                    let _keep = &c;
                })
                .unwrap()
                .into_token();
            let c = Count(Arc::clone(&dropped));
            rig.engine
                .timer_after(Duration::from_secs(60), move |_| {
                    let _keep = &c;
                })
                .unwrap()
                .into_token();
            assert_eq!(dropped.load(Ordering::SeqCst), 0);
            drop(rig.engine);
            assert_eq!(dropped.load(Ordering::SeqCst), 2);
        },
    );
}

//! Hooks that know their engine (`Engine::with_hooks_fn`,
//! `Builder::hooks_with`): the application's threads report through the
//! `EngineHandle` the hooks were given, callbacks run through it re-enter
//! a real engine, and the handle keeps nothing alive that it should not.

use evnexus::{
    Engine, EngineHandle, Error, Interest, Occurred, OsEventHooks, Readiness, StaleReason, Token,
};
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The application's side: its table, and the handle its threads report
/// through.
struct App {
    handle: EngineHandle,
    fds: Mutex<HashMap<Token, RawFd>>,
    timeouts: Mutex<HashMap<Token, Instant>>,
    /// Set when the hooks are dropped.
    hooks_dropped: Arc<AtomicBool>,
}

struct Hooks(Arc<App>);

impl Drop for Hooks {
    fn drop(&mut self) {
        self.0.hooks_dropped.store(true, Ordering::SeqCst);
    }
}

impl OsEventHooks for Hooks {
    type FdReg = Token;
    type TimeoutReg = Token;
    fn fd_register(&self, fd: RawFd, _: Interest, token: Token) -> io::Result<Token> {
        self.0.fds.lock().unwrap().insert(token, fd);
        Ok(token)
    }
    fn fd_modify(&self, _: RawFd, _: &mut Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn fd_deregister(&self, _: RawFd, token: Token) {
        self.0.fds.lock().unwrap().remove(&token);
    }
    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<Token> {
        self.0.timeouts.lock().unwrap().insert(token, deadline);
        Ok(token)
    }
    fn timeout_modify(&self, token: &mut Token, deadline: Instant) -> io::Result<()> {
        self.0.timeouts.lock().unwrap().insert(*token, deadline);
        Ok(())
    }
    fn timeout_deregister(&self, token: Token) {
        self.0.timeouts.lock().unwrap().remove(&token);
    }
}

/// An engine whose hooks hold its handle, and the application's side.
fn engine_with_app() -> (Engine, Arc<App>, Arc<AtomicBool>) {
    let hooks_dropped = Arc::new(AtomicBool::new(false));
    let mut app = None;
    let flag = Arc::clone(&hooks_dropped);
    let engine = Engine::with_hooks_fn(|handle| {
        let a = Arc::new(App {
            handle,
            fds: Mutex::default(),
            timeouts: Mutex::default(),
            hooks_dropped: flag,
        });
        app = Some(Arc::clone(&a));
        Hooks(a)
    });
    (
        engine,
        app.expect("with_hooks_fn calls its closure"),
        hooks_dropped,
    )
}

fn pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().unwrap()
}

#[test]
fn application_threads_report_through_the_handle_without_the_engine() {
    let (engine, app, _) = engine_with_app();
    let (a, mut b) = pair();
    let reads = Arc::new(AtomicUsize::new(0));
    let fired = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&reads);
    let f = Arc::clone(&fired);
    let _w = engine
        .register_fd(a.as_raw_fd(), Interest::READABLE, move |ev| {
            let mut buf = [0u8; 64];
            let _ = io::Read::read(&mut &a, &mut buf);
            r.fetch_add(1, Ordering::SeqCst);
            // Re-entry through the event's engine: a timer, reported by
            // the application's thread too.
            let f = Arc::clone(&f);
            ev.engine()
                .timer_after_detached(Duration::ZERO, move |_| {
                    f.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
        })
        .unwrap();
    b.write_all(b"x").unwrap();
    // The application's loop thread: it has the handle (through its side
    // of the hooks) and nothing else.
    let app2 = Arc::clone(&app);
    let reporter = thread::spawn(move || -> evnexus::Result<(Occurred, Occurred)> {
        let (token, fd) = {
            let fds = app2.fds.lock().unwrap();
            let (&t, &fd) = fds.iter().next().expect("the watch");
            (t, fd)
        };
        let fd_outcome = app2.handle.occurred_fd(token, fd, Readiness::READABLE)?;
        // The callback registered a timeout; report it in one batch
        // through one reference.
        let due: Vec<Token> = app2
            .timeouts
            .lock()
            .unwrap()
            .drain()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(due.len(), 1);
        let engine = app2.handle.engine().expect("the engine is alive");
        let timer_outcome = engine.occurred_timeout(due[0])?;
        Ok((fd_outcome, timer_outcome))
    });
    let (fd_outcome, timer_outcome) = reporter.join().unwrap().unwrap();
    assert_eq!(fd_outcome, Occurred::Dispatched);
    assert_eq!(timer_outcome, Occurred::Dispatched);
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    // The temporary references are gone; the engine's watch is not.
    assert_eq!(engine.stats().live(), 1);
    assert_eq!(app.fds.lock().unwrap().len(), 1);
}

#[test]
fn reports_through_the_handle_after_the_engine_is_dropped_are_stale() {
    let (engine, app, hooks_dropped) = engine_with_app();
    let (a, _b) = pair();
    let w = engine
        .register_fd(a.as_raw_fd(), Interest::READABLE, |_| {
            panic!("no callback runs after the engine is gone")
        })
        .unwrap();
    let token = w.token();
    drop(engine);
    // No reference cycle: the engine's core, and the hooks in it, went
    // with the engine (the handle is weak). The watch's handle kept only
    // the core's registrations table alive, with nothing live in it.
    assert!(!w.is_live());
    drop(w);
    assert!(
        hooks_dropped.load(Ordering::SeqCst),
        "engine -> hooks -> handle cycle"
    );
    assert!(app.handle.engine().is_none());
    let stale = Occurred::Stale(StaleReason::Generation);
    assert_eq!(
        app.handle
            .occurred_fd(token, a.as_raw_fd(), Readiness::READABLE)
            .unwrap(),
        stale
    );
    assert_eq!(app.handle.occurred_timeout(token).unwrap(), stale);
    assert_eq!(
        app.handle
            .occurred_timeout(Token::from_u64(u64::MAX))
            .unwrap(),
        stale
    );
    assert!(format!("{:?}", app.handle).contains("false"));
}

#[test]
fn dropping_the_engine_during_a_report_through_the_handle_ends_registrations_after_it() {
    let (engine, app, hooks_dropped) = engine_with_app();
    let (a, _b) = pair();
    let in_callback = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let callback_dropped = Arc::new(AtomicBool::new(false));
    let late_timer_dropped = Arc::new(AtomicBool::new(false));
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let token = {
        let (in_cb, rel) = (Arc::clone(&in_callback), Arc::clone(&release));
        let flag = Flag(Arc::clone(&callback_dropped));
        let late = Arc::clone(&late_timer_dropped);
        engine
            .register_fd(a.as_raw_fd(), Interest::WRITABLE, move |ev| {
                let _keep = &flag;
                in_cb.wait();
                rel.wait();
                // The application's engine is gone by now; this one still
                // works, and what it registers ends with the rest.
                let late = Flag(Arc::clone(&late));
                ev.engine()
                    .timer_after_detached(Duration::from_secs(3600), move |_| {
                        let _keep = &late;
                    })
                    .unwrap();
            })
            .unwrap()
            .into_token()
    };
    let reporter = {
        let app = Arc::clone(&app);
        let fd = a.as_raw_fd();
        thread::spawn(move || app.handle.occurred_fd(token, fd, Readiness::WRITABLE))
    };
    in_callback.wait();
    // Does not wait for the report: that would deadlock a callback that
    // drops its engine.
    drop(engine);
    assert!(
        !callback_dropped.load(Ordering::SeqCst),
        "ended under a running report"
    );
    assert!(app.handle.engine().is_some(), "the report holds the engine");
    release.wait();
    assert_eq!(reporter.join().unwrap().unwrap(), Occurred::Dispatched);
    // The report's reference was the last: everything ended with it.
    assert!(callback_dropped.load(Ordering::SeqCst));
    assert!(
        late_timer_dropped.load(Ordering::SeqCst),
        "a registration outlived the engine"
    );
    assert!(app.fds.lock().unwrap().is_empty());
    assert!(app.timeouts.lock().unwrap().is_empty());
    assert!(app.handle.engine().is_none());
    assert!(hooks_dropped.load(Ordering::SeqCst));
}

#[test]
fn letting_go_of_the_handles_engine_does_not_end_registrations() {
    let (engine, app, _) = engine_with_app();
    let (a, mut b) = pair();
    b.write_all(b"x").unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let w = engine
        .register_fd(a.as_raw_fd(), Interest::READABLE, move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    for _ in 0..3 {
        let shadow = app.handle.engine().unwrap();
        assert_eq!(
            shadow
                .occurred_fd(w.token(), a.as_raw_fd(), Readiness::READABLE)
                .unwrap(),
            Occurred::Dispatched
        );
        drop(shadow);
        assert!(w.is_live());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    // Through the engine and through the handle: the same registrations.
    assert_eq!(
        engine
            .occurred_fd(w.token(), a.as_raw_fd(), Readiness::READABLE)
            .unwrap(),
        Occurred::Dispatched
    );
    assert!(w.deregister());
    assert!(matches!(
        app.handle
            .occurred_fd(Token::from_u64(1 << 24), 0, Readiness::READABLE)
            .unwrap(),
        Occurred::Stale(_)
    ));
}

#[test]
fn builder_hooks_with_takes_the_other_options() {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::builder()
        .max_registrations(2)
        .hooks_with(move |handle| {
            tx.send(handle.clone()).unwrap();
            Hooks(Arc::new(App {
                handle,
                fds: Mutex::default(),
                timeouts: Mutex::default(),
                hooks_dropped: Arc::default(),
            }))
        })
        .build()
        .unwrap();
    assert_eq!(engine.backend(), evnexus::BackendKind::Hooks);
    let handle: EngineHandle = rx.recv().unwrap();
    let _t1 = engine.timer_after(Duration::from_secs(60), |_| {}).unwrap();
    let t2 = engine.timer_after(Duration::from_secs(60), |_| {}).unwrap();
    assert!(matches!(
        engine.timer_after(Duration::from_secs(60), |_| {}),
        Err(Error::Full { limit: 2 })
    ));
    assert_eq!(
        handle.occurred_timeout(t2.token()).unwrap(),
        Occurred::Dispatched
    );
    assert!(!t2.cancel(), "fired through the handle");
}

#[test]
fn many_threads_report_through_clones_of_the_handle() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 2_000;
    let (engine, app, _) = engine_with_app();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut socks = Vec::new();
    let mut watches = Vec::new();
    for _ in 0..THREADS {
        let (a, b) = pair();
        let r = Arc::clone(&runs);
        watches.push(
            engine
                .register_fd(a.as_raw_fd(), Interest::WRITABLE, move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap(),
        );
        socks.push((a, b));
    }
    let targets: Vec<(Token, RawFd)> = app
        .fds
        .lock()
        .unwrap()
        .iter()
        .map(|(&t, &f)| (t, f))
        .collect();
    thread::scope(|s| {
        for chunk in targets.chunks(1) {
            let handle = app.handle.clone();
            s.spawn(move || {
                let (token, fd) = chunk[0];
                for _ in 0..ROUNDS {
                    let r = handle.occurred_fd(token, fd, Readiness::WRITABLE).unwrap();
                    assert_eq!(r, Occurred::Dispatched);
                }
            });
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), THREADS * ROUNDS);
    drop(watches);
    assert!(app.fds.lock().unwrap().is_empty());
}

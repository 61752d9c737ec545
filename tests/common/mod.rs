//! Shared fixtures: the backend rigs every invariant test runs on, a hooks
//! implementation that records every call, and socket pairs.
#![allow(dead_code)] // each test file uses a different part

use evnexus::{BackendKind, Builder, Engine, Interest, OsEventHooks, Token};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

mod no_hooks;
#[allow(unused_imports)] // each test file uses a different part
pub use no_hooks::{null_fd, NoHooks};
use std::time::Instant;

/// One hook call, as the application saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    FdRegister(RawFd, Interest, Token),
    FdModify(RawFd, Interest, Token),
    FdDeregister(RawFd, Token),
    TimeoutRegister(Token),
    TimeoutModify(Token),
    TimeoutDeregister(Token),
}

#[derive(Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<Call>>,
    /// The next hook call fails with this error kind.
    pub fail_next: Mutex<Option<io::ErrorKind>>,
    /// Live registrations as the application sees them.
    pub fds: Mutex<HashMap<Token, (RawFd, Interest)>>,
    pub timeouts: Mutex<HashMap<Token, Instant>>,
    /// Timeouts that the test's loop (`drive::turn`) took as occurred and
    /// is reporting: the engine may still deregister one of them, if a
    /// cancel on another thread races the report (the hooks contract
    /// allows that).
    pub occurred: Mutex<HashSet<Token>>,
}

impl Recorder {
    fn gate(&self) -> io::Result<()> {
        match self.fail_next.lock().unwrap().take() {
            Some(kind) => Err(io::Error::new(kind, "injected hook failure")),
            None => Ok(()),
        }
    }
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    pub fn fail_next(&self, kind: io::ErrorKind) {
        *self.fail_next.lock().unwrap() = Some(kind);
    }
    pub fn live_fds(&self) -> usize {
        self.fds.lock().unwrap().len()
    }
    pub fn live_timeouts(&self) -> usize {
        self.timeouts.lock().unwrap().len()
    }
}

/// Hooks that record each call; the registration value is the token, so
/// modify and deregister can say which registration they are for.
#[derive(Clone, Default)]
pub struct Hooks(pub Arc<Recorder>);

impl OsEventHooks for Hooks {
    type FdReg = Token;
    type TimeoutReg = Token;

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<Token> {
        self.0.gate()?;
        self.0
            .calls
            .lock()
            .unwrap()
            .push(Call::FdRegister(fd, interest, token));
        self.0.fds.lock().unwrap().insert(token, (fd, interest));
        Ok(token)
    }
    fn fd_modify(&self, fd: RawFd, reg: &mut Token, interest: Interest) -> io::Result<()> {
        self.0.gate()?;
        self.0
            .calls
            .lock()
            .unwrap()
            .push(Call::FdModify(fd, interest, *reg));
        self.0.fds.lock().unwrap().insert(*reg, (fd, interest));
        Ok(())
    }
    fn fd_deregister(&self, fd: RawFd, reg: Token) {
        self.0
            .calls
            .lock()
            .unwrap()
            .push(Call::FdDeregister(fd, reg));
        assert!(
            self.0.fds.lock().unwrap().remove(&reg).is_some(),
            "double fd_deregister"
        );
    }
    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<Token> {
        self.0.gate()?;
        self.0
            .calls
            .lock()
            .unwrap()
            .push(Call::TimeoutRegister(token));
        self.0.timeouts.lock().unwrap().insert(token, deadline);
        Ok(token)
    }
    fn timeout_modify(&self, reg: &mut Token, deadline: Instant) -> io::Result<()> {
        self.0.gate()?;
        self.0.calls.lock().unwrap().push(Call::TimeoutModify(*reg));
        self.0.timeouts.lock().unwrap().insert(*reg, deadline);
        Ok(())
    }
    fn timeout_deregister(&self, reg: Token) {
        self.0
            .calls
            .lock()
            .unwrap()
            .push(Call::TimeoutDeregister(reg));
        let live = self.0.timeouts.lock().unwrap().remove(&reg).is_some();
        assert!(
            live || self.0.occurred.lock().unwrap().remove(&reg),
            "double timeout_deregister"
        );
    }
}

/// An engine on recording hooks, and the recorder.
pub fn hooks_engine() -> (Engine, Arc<Recorder>) {
    let hooks = Hooks::default();
    let recorder = Arc::clone(&hooks.0);
    (Engine::with_hooks(hooks), recorder)
}

/// The backends every invariant test runs on: the application's loop
/// (hooks), and the engine's own loop on io_uring and on epoll. Each loop
/// backend is asked for explicitly, so a machine that refuses io_uring
/// fails the suite loudly instead of testing epoll twice.
pub const BACKENDS: [BackendKind; 3] = [BackendKind::Hooks, BackendKind::Uring, BackendKind::Epoll];

/// Every backend: [`BACKENDS`] and the `poll()` loop (driven by
/// `drive::turn` with `poll_once`).
pub const ALL_BACKENDS: [BackendKind; 4] = [
    BackendKind::Hooks,
    BackendKind::Uring,
    BackendKind::Epoll,
    BackendKind::Poll,
];

/// The engine's own loops only.
pub const LOOP_BACKENDS: [BackendKind; 2] = [BackendKind::Uring, BackendKind::Epoll];

/// One engine on one backend, for one run of a test.
///
/// Nobody runs the built-in loop in these tests: every event is reported
/// through `occurred_fd` / `occurred_timeout`, which work the same on every
/// backend. The built-in loops put level-triggered fds in an epoll set, so
/// two *live* watches of one fd number fail there with `EEXIST`: a test
/// that keeps several watches of one socket live at once gives each its
/// own descriptor ([`dup`]).
pub struct Rig {
    pub kind: BackendKind,
    pub engine: Engine,
    /// The recording hooks, on the hooks backend; `None` on the loops.
    /// Assertions about hook calls apply only where this is `Some`.
    pub rec: Option<Arc<Recorder>>,
}

impl Rig {
    /// An engine on `kind`, with the options `configure` adds (recording
    /// hooks for [`BackendKind::Hooks`]). Panics, naming the backend, if
    /// the engine cannot be built or runs on another backend than asked.
    pub fn new(kind: BackendKind, configure: impl FnOnce(Builder) -> Builder) -> Rig {
        let (builder, rec) = match kind {
            BackendKind::Hooks => {
                let hooks = Hooks::default();
                let rec = Arc::clone(&hooks.0);
                (Engine::builder().hooks(hooks), Some(rec))
            }
            other => (Engine::builder().backend(other), None),
        };
        let engine = configure(builder)
            .build()
            .unwrap_or_else(|e| panic!("cannot build an engine on the {kind:?} backend: {e}"));
        assert_eq!(
            engine.backend(),
            kind,
            "asked for the {kind:?} backend, got another"
        );
        Rig { kind, engine, rec }
    }
}

/// Runs `test` on every backend of [`BACKENDS`], each with a fresh engine.
pub fn each_backend(test: impl Fn(&Rig)) {
    each_backend_with(|b| b, test);
}

/// [`each_backend`] with builder options (`recheck_fds`,
/// `max_registrations`, `first_generation`, ...) on every rig.
pub fn each_backend_with(configure: impl Fn(Builder) -> Builder, test: impl Fn(&Rig)) {
    on_backends(&BACKENDS, configure, |rig| test(&rig));
}

/// [`each_backend`] for a test that consumes the rig (drops the engine).
pub fn each_backend_owned(test: impl Fn(Rig)) {
    on_backends(&BACKENDS, |b| b, test);
}

/// Runs `test` on each of `kinds`. Every backend runs even if an earlier
/// one failed; then the test fails with the backends that failed named
/// (the original panic, with its location, is printed above by the panic
/// hook).
pub fn on_backends(
    kinds: &[BackendKind],
    configure: impl Fn(Builder) -> Builder,
    test: impl Fn(Rig),
) {
    let mut failures = Vec::new();
    for &kind in kinds {
        let outcome = catch_unwind(AssertUnwindSafe(|| test(Rig::new(kind, &configure))));
        if let Err(payload) = outcome {
            let message = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_owned()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_owned()
            };
            eprintln!("^^^ that failure was on the {kind:?} backend");
            failures.push(format!("on the {kind:?} backend: {message}"));
        }
    }
    if !failures.is_empty() {
        panic!(
            "failed on {} of {} backends:\n{}",
            failures.len(),
            kinds.len(),
            failures.join("\n")
        );
    }
}

/// A new descriptor for the same socket: lets several watches of one
/// socket be live at once on the loop backends (one epoll entry per fd
/// number). Keep it until its watches have ended: closing a duplicate
/// while it is still in an epoll set leaves the entry behind.
pub fn dup(s: &impl AsFd) -> OwnedFd {
    s.as_fd().try_clone_to_owned().expect("dup")
}

/// `n` duplicates of `s`; see [`dup`].
pub fn dups(s: &impl AsFd, n: usize) -> Vec<OwnedFd> {
    (0..n).map(|_| dup(s)).collect()
}

/// A connected pair of sockets; `.0` is the end to watch.
pub fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

pub fn raw(s: &UnixStream) -> RawFd {
    s.as_raw_fd()
}

/// A count shared by a test and a callback: (the test's handle, the
/// callback's handle).
pub fn counter() -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let c = Arc::new(AtomicUsize::new(0));
    (Arc::clone(&c), c)
}

/// A run count, and an fd callback that adds one to it per run.
pub fn counting_fd_callback() -> (
    Arc<AtomicUsize>,
    impl FnMut(&evnexus::FdEvent<'_>) + Send + 'static,
) {
    let (runs, r) = counter();
    (runs, move |_: &evnexus::FdEvent<'_>| {
        r.fetch_add(1, Ordering::SeqCst);
    })
}

/// Puts the calling thread on CPU 0, where a loop thread (or another
/// thread of the test) also runs: with [`lowest_priority`], a thread that
/// is preempted in the middle of whatever it does.
pub fn pin_to_cpu0() {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET and
    // sched_setaffinity(0 = this thread) read and write only `set`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Lowers the calling thread's priority as far as it goes (nice 19).
pub fn lowest_priority() {
    // SAFETY: setpriority on this thread's id; lowering needs no privilege.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
}

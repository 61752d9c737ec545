//! Shared fixtures: a hooks implementation that records every call, and
//! socket pairs.
#![allow(dead_code)] // each test file uses a different part

use evnexus::{Engine, Interest, OsEventHooks, Token};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
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
        assert!(
            self.0.timeouts.lock().unwrap().remove(&reg).is_some(),
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

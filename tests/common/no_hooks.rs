//! Hooks that accept everything and keep nothing, and an fd that is always
//! open: for tests (and benches) that exercise the engine's side alone.
//! Shared by `tests/common` and, through `#[path]`, `benches/support` and
//! `examples/reports.rs`.

use evnexus::{Interest, OsEventHooks, Token};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

/// Application-loop hooks that keep nothing: the engine's own cost and
/// protocol alone.
pub struct NoHooks;

impl OsEventHooks for NoHooks {
    type FdReg = ();
    type TimeoutReg = ();
    fn fd_register(&self, _: RawFd, _: Interest, _: Token) -> io::Result<()> {
        Ok(())
    }
    fn fd_modify(&self, _: RawFd, _: &mut (), _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn fd_deregister(&self, _: RawFd, _: ()) {}
    fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> {
        Ok(())
    }
    fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> {
        Ok(())
    }
    fn timeout_deregister(&self, _: ()) {}
}

/// An fd (`/dev/null`) that stays open for the whole run: the engine checks
/// that a registered fd is open, and the tests that use this never read it.
#[allow(dead_code)] // the benches use only the hooks
pub fn null_fd() -> RawFd {
    static FD: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    FD.get_or_init(|| std::fs::File::open("/dev/null").unwrap())
        .as_raw_fd()
}

//! `evnexus_hooks`: an application's own event loop carrying the engine's
//! registrations, in the shape of libxl's `libxl_osevent_hooks`.

use crate::clock::MonoClock;
use evnexus::{Interest, OsEventHooks, Token};
use std::ffi::{c_int, c_short, c_void};
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// The hooks by which an application's event loop carries the engine's fd
/// and timeout registrations (libxl's `libxl_osevent_hooks`, with a size
/// field so the struct can grow, and the registration's token in every
/// call).
///
/// Set `size` to `sizeof(evnexus_hooks)`; a smaller size is `-EINVAL`.
/// Every hook must be set. `evnexus_new_with_hooks` copies the struct; it
/// need not outlive the call, but `user` must stay valid until
/// `evnexus_free` returns.
///
/// `reg` points at the application's own value for one registration
/// (libxl's `for_app_registration`): a register hook stores it (it starts
/// NULL), a modify hook may update it, a deregister hook receives it for the
/// last time. The engine never looks at it.
///
/// Threading: every hook may be called from any thread that uses the
/// engine (a callback's thread included), concurrently for different
/// registrations, never concurrently for the same one. A hook may register,
/// deregister and report events (`evnexus_occurred_*`), but a modify from
/// inside a hook fails with `-EDEADLK`; a hook should not block on a lock
/// that the application holds while it calls into the engine.
///
/// Errors: a register or modify hook returns 0, or a negative errno that
/// the engine call then returns (any other value becomes `-EIO`); a failed
/// register leaves no registration behind, a failed modify leaves it as it
/// was.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct evnexus_hooks {
    /// `sizeof(evnexus_hooks)`.
    pub size: usize,
    /// Passed to every hook.
    pub user: *mut c_void,
    /// Start watching `fd` for `events` (poll(2) bits); report with
    /// `evnexus_occurred_fd(ev, token, fd, revents)`, from any thread, at
    /// any delay. A report may come as soon as this hook has been entered.
    pub fd_register: Option<
        unsafe extern "C" fn(
            user: *mut c_void,
            fd: c_int,
            reg: *mut *mut c_void,
            events: c_short,
            token: u64,
        ) -> c_int,
    >,
    /// Watch `fd` for `events` instead.
    pub fd_modify: Option<
        unsafe extern "C" fn(
            user: *mut c_void,
            fd: c_int,
            reg: *mut *mut c_void,
            events: c_short,
            token: u64,
        ) -> c_int,
    >,
    /// Stop watching `fd`; `reg` is the value for the last time. Reports
    /// already on their way are harmless: the engine rejects them.
    pub fd_deregister:
        Option<unsafe extern "C" fn(user: *mut c_void, fd: c_int, reg: *mut c_void, token: u64)>,
    /// Call `evnexus_occurred_timeout(ev, token)` once, at or after
    /// `deadline_ns` on `CLOCK_MONOTONIC`.
    pub timeout_register: Option<
        unsafe extern "C" fn(
            user: *mut c_void,
            reg: *mut *mut c_void,
            deadline_ns: i64,
            token: u64,
        ) -> c_int,
    >,
    /// Move the timeout to `deadline_ns`. May race with the application's
    /// own report of the old deadline; the engine sorts that out.
    pub timeout_modify: Option<
        unsafe extern "C" fn(
            user: *mut c_void,
            reg: *mut *mut c_void,
            deadline_ns: i64,
            token: u64,
        ) -> c_int,
    >,
    /// Forget the timeout: it was cancelled before it occurred. Not called
    /// for a timeout that has occurred (it is over for the application).
    pub timeout_deregister:
        Option<unsafe extern "C" fn(user: *mut c_void, reg: *mut c_void, token: u64)>,
}

/// The hook table with every hook checked present.
struct Table {
    user: *mut c_void,
    fd_register: unsafe extern "C" fn(*mut c_void, c_int, *mut *mut c_void, c_short, u64) -> c_int,
    fd_modify: unsafe extern "C" fn(*mut c_void, c_int, *mut *mut c_void, c_short, u64) -> c_int,
    fd_deregister: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, u64),
    timeout_register: unsafe extern "C" fn(*mut c_void, *mut *mut c_void, i64, u64) -> c_int,
    timeout_modify: unsafe extern "C" fn(*mut c_void, *mut *mut c_void, i64, u64) -> c_int,
    timeout_deregister: unsafe extern "C" fn(*mut c_void, *mut c_void, u64),
}

/// The engine's side of C hooks.
pub(crate) struct CHooks {
    table: Table,
    clock: MonoClock,
}

// SAFETY: the header makes it the application's promise that every hook
// may be called from any thread, concurrently for different registrations,
// with `user` (see `evnexus_hooks`). The rest is plain data.
unsafe impl Send for CHooks {}
// SAFETY: as above; the engine only reads the table.
unsafe impl Sync for CHooks {}

/// The application's value for one registration, and its token.
pub(crate) struct AppReg {
    token: Token,
    value: *mut c_void,
}

// SAFETY: the value is the application's, handed back to its hooks, which
// it promised may run on any thread (see `evnexus_hooks`); the engine never
// dereferences it.
unsafe impl Send for AppReg {}

impl CHooks {
    /// Checks a C hooks struct: `None` if it is short or a hook is missing.
    ///
    /// # Safety
    /// `hooks` is NULL or points at `size` readable bytes, the first
    /// `size_of::<usize>()` of them the `size` field.
    pub(crate) unsafe fn new(hooks: *const evnexus_hooks, clock: MonoClock) -> Option<CHooks> {
        if hooks.is_null() {
            return None;
        }
        // SAFETY: the caller's promise: the size field is readable.
        let size = unsafe { std::ptr::addr_of!((*hooks).size).read_unaligned() };
        if size < std::mem::size_of::<evnexus_hooks>() {
            return None;
        }
        // SAFETY: the whole struct is readable (`size` covers it).
        let h = unsafe { hooks.read_unaligned() };
        Some(CHooks {
            table: Table {
                user: h.user,
                fd_register: h.fd_register?,
                fd_modify: h.fd_modify?,
                fd_deregister: h.fd_deregister?,
                timeout_register: h.timeout_register?,
                timeout_modify: h.timeout_modify?,
                timeout_deregister: h.timeout_deregister?,
            },
            clock,
        })
    }
}

/// A hook's return value as a result.
fn hook_result(r: c_int) -> io::Result<()> {
    match r {
        0 => Ok(()),
        r if r < 0 => Err(io::Error::from_raw_os_error(r.saturating_neg())),
        _ => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

// SAFETY (every hook call below): the function pointers were checked
// non-NULL and are valid for the engine's life (the application's promise
// in `evnexus_hooks`); `reg` points at a live `*mut c_void` for the call.
impl OsEventHooks for CHooks {
    type FdReg = AppReg;
    type TimeoutReg = AppReg;

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<AppReg> {
        let t = &self.table;
        let mut reg = AppReg {
            token,
            value: std::ptr::null_mut(),
        };
        let events = interest.as_poll_events();
        // SAFETY: see the impl.
        hook_result(unsafe {
            (t.fd_register)(t.user, fd, &mut reg.value, events, token.as_u64())
        })?;
        Ok(reg)
    }

    fn fd_modify(&self, fd: RawFd, reg: &mut AppReg, interest: Interest) -> io::Result<()> {
        let t = &self.table;
        let events = interest.as_poll_events();
        let token = reg.token.as_u64();
        // SAFETY: see the impl.
        hook_result(unsafe { (t.fd_modify)(t.user, fd, &mut reg.value, events, token) })
    }

    fn fd_deregister(&self, fd: RawFd, reg: AppReg) {
        let t = &self.table;
        // SAFETY: see the impl.
        unsafe { (t.fd_deregister)(t.user, fd, reg.value, reg.token.as_u64()) }
    }

    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<AppReg> {
        let t = &self.table;
        let mut reg = AppReg {
            token,
            value: std::ptr::null_mut(),
        };
        let ns = self.clock.to_ns(deadline);
        // SAFETY: see the impl.
        hook_result(unsafe { (t.timeout_register)(t.user, &mut reg.value, ns, token.as_u64()) })?;
        Ok(reg)
    }

    fn timeout_modify(&self, reg: &mut AppReg, deadline: Instant) -> io::Result<()> {
        let t = &self.table;
        let ns = self.clock.to_ns(deadline);
        let token = reg.token.as_u64();
        // SAFETY: see the impl.
        hook_result(unsafe { (t.timeout_modify)(t.user, &mut reg.value, ns, token) })
    }

    fn timeout_deregister(&self, reg: AppReg) {
        let t = &self.table;
        // SAFETY: see the impl.
        unsafe { (t.timeout_deregister)(t.user, reg.value, reg.token.as_u64()) }
    }
}

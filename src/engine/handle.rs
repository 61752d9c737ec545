//! Hooks that know their engine: [`EngineHandle`], given to the hooks at
//! construction ([`Engine::with_hooks_fn`], [`Builder::hooks_with`]).
//!
//! # Why a shadow engine
//!
//! A callback receives `&Engine` (to re-enter: register, deregister,
//! modify), so a report through a handle needs an [`Engine`] value to lend
//! it. The application holds the engine itself, so the handle cannot
//! borrow that one. Instead, an engine built with a handle has a *shadow*:
//! a second [`Engine`] value over the same core and backend, kept in a
//! [`Shadow`] that the application's engine holds strongly and the handles
//! weakly (the hooks hold the handle, the engine's core holds the hooks: a
//! strong reference there would be a cycle).
//!
//! Dropping an engine ends its registrations; the shadow must not do that
//! when a report lets go of it, and the application's engine must not do
//! it while a report through a handle is running callbacks on another
//! thread (they could register anew behind the teardown). So the job moves
//! to the [`Shadow`]: it ends every registration when the last strong
//! reference goes, which is the application's engine or the last report in
//! progress. After that, no handle can reach the engine again.
//!
//! [`Builder::hooks_with`]: crate::Builder::hooks_with

use crate::base::error::Result;
use crate::base::readiness::Readiness;
use crate::base::sync::{Arc, StdArc};
use crate::base::token::{StaleReason, Token};
use crate::dispatch::Occurred;
use crate::engine::{Driven, Engine, EngineCore, Life};
use std::fmt;
use std::ops::Deref;
use std::os::fd::RawFd;
use std::sync::Weak;

/// The engine that handles lend; ends the registrations when dropped.
pub(crate) struct Shadow(Engine);

impl Shadow {
    /// An application's engine with a shadow: `core` builds the core from
    /// the handle that the hooks get.
    pub(crate) fn build(core: impl FnOnce(EngineHandle) -> Arc<EngineCore>) -> Engine {
        let shadow = StdArc::new_cyclic(|weak| {
            Shadow(Engine {
                core: core(EngineHandle {
                    shadow: weak.clone(),
                }),
                driven: Driven::Hooks,
                life: Life::Shadow,
            })
        });
        Engine {
            core: Arc::clone(&shadow.0.core),
            driven: Driven::Hooks,
            life: Life::Shared(shadow),
        }
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        // The application's engine is gone, and no report through a handle
        // is in progress (each holds a strong reference), nor can one
        // start: end every registration still live, as `Drop for Engine`
        // does for an engine without handles.
        self.0.core.end_all();
        EngineCore::close(&self.0.core);
    }
}

/// A handle of the engine that the hooks serve, given to them at
/// construction ([`Engine::with_hooks_fn`], [`Builder::hooks_with`]): the
/// application's threads report events through it without a reference to
/// the engine. Cheap to clone, `Send + Sync`.
///
/// It does not keep the engine alive: once the engine has been dropped,
/// [`EngineHandle::engine`] is `None` and a report through the handle is
/// [`Occurred::Stale`]. A report that is running while the engine is
/// dropped finishes normally, with the engine's registrations still live;
/// they end when it returns.
///
/// Each report through [`EngineHandle::occurred_fd`] and
/// [`EngineHandle::occurred_timeout`] takes and releases a reference: two
/// atomic read-modify-writes on a count that every thread reporting
/// through the handle shares (about 25 instructions more than
/// [`Engine::occurred_fd`]; `benches/occurred.rs`, `evnexus-handle`,
/// measures the time, which grows when threads contend for the count). A
/// loop that reports a batch takes [`EngineHandle::engine`] once and
/// reports through it, at the cost of a direct report.
///
/// ```
/// use evnexus::{Engine, EngineHandle, Interest, Occurred, OsEventHooks, Readiness, Token};
/// use std::io;
/// use std::os::fd::{AsRawFd, RawFd};
/// use std::sync::{Arc, Mutex};
/// use std::time::Instant;
///
/// /// The application's loop: what to watch, and the way to report.
/// struct MyLoop {
///     handle: EngineHandle,
///     fds: Mutex<Vec<(Token, RawFd)>>,
/// }
///
/// struct Hooks(Arc<MyLoop>);
///
/// impl OsEventHooks for Hooks {
///     type FdReg = ();
///     type TimeoutReg = ();
///     fn fd_register(&self, fd: RawFd, _: Interest, token: Token) -> io::Result<()> {
///         self.0.fds.lock().unwrap().push((token, fd));
///         Ok(())
///     }
///     fn fd_modify(&self, _: RawFd, _: &mut (), _: Interest) -> io::Result<()> { Ok(()) }
///     fn fd_deregister(&self, fd: RawFd, _: ()) {
///         self.0.fds.lock().unwrap().retain(|e| e.1 != fd);
///     }
///     fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> { Ok(()) }
///     fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> { Ok(()) }
///     fn timeout_deregister(&self, _: ()) {}
/// }
///
/// let mut my_loop = None;
/// let engine = Engine::with_hooks_fn(|handle| {
///     let l = Arc::new(MyLoop { handle, fds: Mutex::default() });
///     my_loop = Some(Arc::clone(&l));
///     Hooks(l)
/// });
/// let my_loop = my_loop.expect("with_hooks_fn calls its closure");
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let _w = engine.register_fd(a.as_raw_fd(), Interest::WRITABLE, |ev| {
///     // A callback run through the handle re-enters its engine as usual.
///     assert!(ev.engine().stats().live() >= 1);
/// })?;
///
/// // The loop's batch: one reference for all its reports.
/// let batch = my_loop.fds.lock().unwrap().clone();
/// if let Some(engine) = my_loop.handle.engine() {
///     for (token, fd) in batch {
///         assert_eq!(engine.occurred_fd(token, fd, Readiness::WRITABLE)?, Occurred::Dispatched);
///     }
/// }
///
/// drop(_w);
/// drop(engine);
/// assert!(my_loop.handle.engine().is_none());
/// assert!(matches!(
///     my_loop.handle.occurred_timeout(Token::from_u64(1 << 24))?,
///     Occurred::Stale(_)
/// ));
/// # Ok::<(), evnexus::Error>(())
/// ```
///
/// [`Builder::hooks_with`]: crate::Builder::hooks_with
#[derive(Clone)]
pub struct EngineHandle {
    shadow: Weak<Shadow>,
}

impl EngineHandle {
    /// The engine, while it exists: a reference that keeps it from ending
    /// its registrations until dropped (so keep it for a batch of reports,
    /// not for good). `None` once the engine has been dropped.
    ///
    /// ```
    /// # use evnexus::{Engine, EngineHandle, Interest, OsEventHooks, Token};
    /// # use std::{io, os::fd::RawFd, time::Instant};
    /// /// The application's hooks: they keep the handle.
    /// struct MyHooks(EngineHandle);
    /// # impl OsEventHooks for MyHooks {
    /// #     type FdReg = ();
    /// #     type TimeoutReg = ();
    /// #     fn fd_register(&self, _: RawFd, _: Interest, _: Token) -> io::Result<()> { Ok(()) }
    /// #     fn fd_modify(&self, _: RawFd, _: &mut (), _: Interest) -> io::Result<()> { Ok(()) }
    /// #     fn fd_deregister(&self, _: RawFd, _: ()) {}
    /// #     fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> { Ok(()) }
    /// #     fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> { Ok(()) }
    /// #     fn timeout_deregister(&self, _: ()) {}
    /// # }
    /// let mut handle = None;
    /// let engine = Engine::with_hooks_fn(|h: EngineHandle| {
    ///     handle = Some(h.clone());
    ///     MyHooks(h)
    /// });
    /// let handle = handle.unwrap();
    /// if let Some(engine) = handle.engine() {
    ///     assert_eq!(engine.stats().live(), 0); // a whole `&Engine`
    /// }
    /// drop(engine);
    /// assert!(handle.engine().is_none());
    /// ```
    #[inline]
    pub fn engine(&self) -> Option<EngineRef> {
        self.shadow.upgrade().map(|shadow| EngineRef { shadow })
    }

    /// [`Engine::occurred_fd`] through the handle. Once the engine has
    /// been dropped: `Ok(Occurred::Stale(StaleReason::Generation))`, as
    /// for any registration that has ended (not counted in the engine's
    /// statistics, which are gone with it).
    ///
    /// ```
    /// # use evnexus::{Engine, EngineHandle, Interest, OsEventHooks, Token};
    /// # use std::{io, os::fd::RawFd, time::Instant};
    /// /// The application's hooks: they keep the handle.
    /// struct MyHooks(EngineHandle);
    /// # impl OsEventHooks for MyHooks {
    /// #     type FdReg = ();
    /// #     type TimeoutReg = ();
    /// #     fn fd_register(&self, _: RawFd, _: Interest, _: Token) -> io::Result<()> { Ok(()) }
    /// #     fn fd_modify(&self, _: RawFd, _: &mut (), _: Interest) -> io::Result<()> { Ok(()) }
    /// #     fn fd_deregister(&self, _: RawFd, _: ()) {}
    /// #     fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> { Ok(()) }
    /// #     fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> { Ok(()) }
    /// #     fn timeout_deregister(&self, _: ()) {}
    /// # }
    /// use evnexus::{Occurred, Readiness};
    /// use std::os::fd::AsRawFd;
    /// # fn main() -> evnexus::Result<()> {
    /// let mut handle = None;
    /// let engine = Engine::with_hooks_fn(|h: EngineHandle| {
    ///     handle = Some(h.clone());
    ///     MyHooks(h)
    /// });
    /// let handle = handle.unwrap();
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let watch = engine.register_fd(a.as_raw_fd(), Interest::WRITABLE, |_| {})?;
    /// let (token, fd) = (watch.token(), a.as_raw_fd());
    /// // From any thread of the application's loop:
    /// let report = std::thread::spawn(move || handle.occurred_fd(token, fd, Readiness::WRITABLE));
    /// assert_eq!(report.join().unwrap()?, Occurred::Dispatched);
    /// # Ok(()) }
    /// ```
    #[inline(always)] // a stale report stays in the caller's loop (see `Core::occurred_fd`)
    pub fn occurred_fd(&self, token: Token, fd: RawFd, revents: Readiness) -> Result<Occurred> {
        match self.engine() {
            Some(engine) => engine.occurred_fd(token, fd, revents),
            None => Ok(Occurred::Stale(StaleReason::Generation)),
        }
    }

    /// [`Engine::occurred_timeout`] through the handle; once the engine has
    /// been dropped, stale as in [`EngineHandle::occurred_fd`].
    ///
    /// ```
    /// # use evnexus::{Engine, EngineHandle, Interest, OsEventHooks, Token};
    /// # use std::{io, os::fd::RawFd, time::Instant};
    /// /// The application's hooks: they keep the handle.
    /// struct MyHooks(EngineHandle);
    /// # impl OsEventHooks for MyHooks {
    /// #     type FdReg = ();
    /// #     type TimeoutReg = ();
    /// #     fn fd_register(&self, _: RawFd, _: Interest, _: Token) -> io::Result<()> { Ok(()) }
    /// #     fn fd_modify(&self, _: RawFd, _: &mut (), _: Interest) -> io::Result<()> { Ok(()) }
    /// #     fn fd_deregister(&self, _: RawFd, _: ()) {}
    /// #     fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> { Ok(()) }
    /// #     fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> { Ok(()) }
    /// #     fn timeout_deregister(&self, _: ()) {}
    /// # }
    /// use evnexus::{Occurred, StaleReason};
    /// use std::time::Duration;
    /// # fn main() -> evnexus::Result<()> {
    /// let mut handle = None;
    /// let engine = Engine::with_hooks_fn(|h: EngineHandle| {
    ///     handle = Some(h.clone());
    ///     MyHooks(h)
    /// });
    /// let handle = handle.unwrap();
    /// let token = engine.timer_after(Duration::ZERO, |_| println!("due"))?.into_token();
    /// assert_eq!(handle.occurred_timeout(token)?, Occurred::Dispatched);
    /// drop(engine);
    /// assert_eq!(handle.occurred_timeout(token)?, Occurred::Stale(StaleReason::Generation));
    /// # Ok(()) }
    /// ```
    #[inline(always)] // a stale report stays in the caller's loop (see `Core::occurred_fd`)
    pub fn occurred_timeout(&self, token: Token) -> Result<Occurred> {
        match self.engine() {
            Some(engine) => engine.occurred_timeout(token),
            None => Ok(Occurred::Stale(StaleReason::Generation)),
        }
    }
}

impl fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineHandle")
            .field("engine_live", &(self.shadow.strong_count() > 0))
            .finish()
    }
}

/// The engine, reached through an [`EngineHandle`]: dereferences to
/// [`Engine`]. While it exists, the engine's registrations stay live even
/// if the application drops its engine meanwhile; they end when the last
/// such reference is dropped.
///
/// ```
/// # use evnexus::{Engine, EngineHandle, Interest, OsEventHooks, Token};
/// # use std::{io, os::fd::RawFd, time::Instant};
/// /// The application's hooks: they keep the handle.
/// struct MyHooks(EngineHandle);
/// # impl OsEventHooks for MyHooks {
/// #     type FdReg = ();
/// #     type TimeoutReg = ();
/// #     fn fd_register(&self, _: RawFd, _: Interest, _: Token) -> io::Result<()> { Ok(()) }
/// #     fn fd_modify(&self, _: RawFd, _: &mut (), _: Interest) -> io::Result<()> { Ok(()) }
/// #     fn fd_deregister(&self, _: RawFd, _: ()) {}
/// #     fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> { Ok(()) }
/// #     fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> { Ok(()) }
/// #     fn timeout_deregister(&self, _: ()) {}
/// # }
/// use std::time::Duration;
/// # fn main() -> evnexus::Result<()> {
/// let mut handle = None;
/// let engine = Engine::with_hooks_fn(|h: EngineHandle| {
///     handle = Some(h.clone());
///     MyHooks(h)
/// });
/// let handle = handle.unwrap();
/// let timer = engine.timer_after(Duration::from_secs(60), |_| {})?;
/// let engine_ref = handle.engine().expect("the engine is alive");
/// drop(engine);
/// // The reference holds the registrations: they end when it goes.
/// assert!(timer.is_pending());
/// drop(engine_ref);
/// assert!(!timer.is_pending());
/// # Ok(()) }
/// ```
pub struct EngineRef {
    shadow: StdArc<Shadow>,
}

impl Deref for EngineRef {
    type Target = Engine;
    #[inline]
    fn deref(&self) -> &Engine {
        &self.shadow.0
    }
}

impl fmt::Debug for EngineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

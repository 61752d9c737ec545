//! Signals through signalfd: [`Engine::watch_signal`], on every backend.
//!
//! A signalfd is an fd like any other, so the watch is an
//! [owned fd watch](Engine::register_owned) of one: the built-in loops keep
//! it in their epoll set, the hooks and poll backends carry it as an
//! ordinary readable fd. Each readiness reads the signalfd until it is
//! empty and runs the callback once per signal read, with its `siginfo`.
//!
//! What the engine does with the signal mask and what the program must
//! do, and why a signal has one watch at a time: see
//! [`Engine::watch_signal`].

use crate::base::error::{Error, Result};
use crate::base::readiness::Interest;
use crate::base::token::Token;
use crate::engine::io_safety::OwnedFdWatch;
use crate::engine::Engine;
use std::fmt;
use std::io;
use std::mem::size_of_val;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, PoisonError};

/// Signals watched in this process: bit `n - 1` for signal `n` (Linux
/// numbers them 1 to 64).
static WATCHED: Mutex<u64> = Mutex::new(0);

/// Signals read from the signalfd per `read`.
const BATCH: usize = 8;

fn refused(kind: io::ErrorKind, message: String) -> Error {
    Error::Backend(io::Error::new(kind, message))
}

/// Refuses what no signalfd can receive: numbers outside 1 to
/// `SIGRTMAX()`, `SIGKILL` and `SIGSTOP` (they cannot be blocked), and the
/// real-time signals that the C library keeps for itself (below
/// `SIGRTMIN()`).
fn check_signal(signal: libc::c_int) -> Result<()> {
    let reserved = signal > 31 && signal < libc::SIGRTMIN();
    if signal < 1
        || signal > libc::SIGRTMAX()
        || signal == libc::SIGKILL
        || signal == libc::SIGSTOP
        || reserved
    {
        return Err(refused(
            io::ErrorKind::InvalidInput,
            format!("evnexus: signal {signal} cannot be blocked or watched"),
        ));
    }
    Ok(())
}

/// A signal set of `signals`, which [`check_signal`] accepted.
fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is a plain C bit array; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; each signal is in range, so
    // sigaddset cannot fail.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Blocks `signals` in the calling thread (`pthread_sigmask(SIG_BLOCK)`),
/// so that a signalfd receives them (see [`Engine::watch_signal`]). Call
/// it in the main thread before spawning threads: threads inherit the
/// mask, and a thread that does not block a signal may take it instead of
/// the watch.
///
/// Errors with [`Error::Backend`] of kind
/// [`InvalidInput`](std::io::ErrorKind::InvalidInput), blocking nothing,
/// if a signal cannot be blocked: outside 1 to `SIGRTMAX()`, `SIGKILL`,
/// `SIGSTOP`, or one the C library reserves (between 31 and `SIGRTMIN()`).
///
/// ```
/// evnexus::block_signals(&[libc::SIGTERM, libc::SIGHUP])?;
/// assert!(evnexus::block_signals(&[libc::SIGKILL]).is_err());
/// # Ok::<(), evnexus::Error>(())
/// ```
pub fn block_signals(signals: &[libc::c_int]) -> Result<()> {
    for &s in signals {
        check_signal(s)?;
    }
    let set = sigset(signals);
    // SAFETY: `set` is a valid sigset_t; a null old set is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(Error::Backend(io::Error::from_raw_os_error(r)));
    }
    Ok(())
}

/// Whether `signal` is blocked in the calling thread.
fn blocked_here(signal: libc::c_int) -> Result<bool> {
    // SAFETY: as in `sigset`; pthread_sigmask fills it.
    let mut current: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new set only reads the mask into `current`.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut current) };
    if r != 0 {
        return Err(Error::Backend(io::Error::from_raw_os_error(r)));
    }
    // SAFETY: `current` is a valid sigset_t, `signal` in range.
    Ok(unsafe { libc::sigismember(&current, signal) } == 1)
}

/// The process's claim on one signal; released when dropped.
struct Claim(libc::c_int);

impl Claim {
    fn take(signal: libc::c_int) -> Result<Claim> {
        let bit = 1u64 << (signal - 1);
        let mut watched = WATCHED.lock().unwrap_or_else(PoisonError::into_inner);
        if *watched & bit != 0 {
            return Err(refused(
                io::ErrorKind::AlreadyExists,
                format!("evnexus: signal {signal} is watched already in this process"),
            ));
        }
        *watched |= bit;
        Ok(Claim(signal))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let bit = 1u64 << (self.0 - 1);
        *WATCHED.lock().unwrap_or_else(PoisonError::into_inner) &= !bit;
    }
}

/// A signalfd and the claim on its signal. Fields drop in order: the
/// signalfd closes before the signal can be claimed again.
struct SignalFd {
    fd: OwnedFd,
    _claim: Claim,
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl SignalFd {
    fn new(claim: Claim) -> Result<SignalFd> {
        let set = sigset(&[claim.0]);
        // SAFETY: -1 asks for a new signalfd; `set` is a valid sigset_t.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Backend(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalFd { fd, _claim: claim })
    }

    /// Reads every pending signal, in batches, until the signalfd is
    /// empty; `each` runs once per signal.
    fn drain(&self, mut each: impl FnMut(&libc::signalfd_siginfo)) {
        // SAFETY: signalfd_siginfo is a plain C struct; all zeroes is valid.
        let mut batch: [libc::signalfd_siginfo; BATCH] = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `batch` is valid for writes of its whole size.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    batch.as_mut_ptr().cast(),
                    size_of_val(&batch),
                )
            };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // EAGAIN: empty. (No other error is possible on a signalfd
                // read with a buffer this size.)
                return;
            }
            // The kernel returns whole records only, at least one.
            let records = n as usize / size_of_val(&batch[0]);
            if records == 0 {
                return;
            }
            for info in &batch[..records] {
                each(info);
            }
        }
    }
}

/// What a signal watch's callback receives: one signal, with its `siginfo`.
///
/// ```
/// # fn main() -> evnexus::Result<()> {
/// evnexus::block_signals(&[libc::SIGUSR2])?;
/// let engine = evnexus::Engine::new()?;
/// let _watch = engine.watch_signal(libc::SIGUSR2, |ev| {
///     assert_eq!(ev.signal(), libc::SIGUSR2);
///     assert_eq!(ev.code(), libc::SI_QUEUE); // sent with sigqueue
///     assert_eq!(ev.value(), 42);
///     assert_eq!(ev.pid(), std::process::id());
///     assert_eq!(ev.siginfo().ssi_signo, libc::SIGUSR2 as u32);
///     ev.engine().stop();
/// })?;
/// let value = libc::sigval { sival_ptr: 42usize as *mut libc::c_void };
/// // SAFETY: sends SIGUSR2 with a value to this process, which blocks it.
/// unsafe { libc::sigqueue(libc::getpid(), libc::SIGUSR2, value) };
/// engine.run()?;
/// # Ok(()) }
/// ```
pub struct SignalEvent<'a> {
    engine: &'a Engine,
    token: Token,
    info: &'a libc::signalfd_siginfo,
}

impl<'a> SignalEvent<'a> {
    /// The engine, to register, deregister or stop from the callback.
    pub fn engine(&self) -> &'a Engine {
        self.engine
    }
    /// The watch's token.
    pub fn token(&self) -> Token {
        self.token
    }
    /// The signal's number (`ssi_signo`).
    pub fn signal(&self) -> libc::c_int {
        self.info.ssi_signo as libc::c_int
    }
    /// How it was sent (`ssi_code`): `SI_USER` for `kill`, `SI_QUEUE` for
    /// `sigqueue`, `SI_TKILL` for `tgkill`, `SI_KERNEL`, or a
    /// signal-specific code (`CLD_EXITED` for `SIGCHLD`, ...).
    pub fn code(&self) -> i32 {
        self.info.ssi_code
    }
    /// The sending process (`ssi_pid`; for `SIGCHLD`, the child).
    pub fn pid(&self) -> u32 {
        self.info.ssi_pid
    }
    /// The sender's real user id (`ssi_uid`).
    pub fn uid(&self) -> u32 {
        self.info.ssi_uid
    }
    /// The integer sent with `sigqueue` (`ssi_int`).
    pub fn value(&self) -> i32 {
        self.info.ssi_int
    }
    /// The exit status or signal of a `SIGCHLD` (`ssi_status`).
    pub fn status(&self) -> i32 {
        self.info.ssi_status
    }
    /// The whole record the kernel delivered.
    pub fn siginfo(&self) -> &'a libc::signalfd_siginfo {
        self.info
    }
}

impl fmt::Debug for SignalEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalEvent")
            .field("signal", &self.signal())
            .field("code", &self.code())
            .field("pid", &self.pid())
            .field("uid", &self.uid())
            .finish()
    }
}

/// The owning handle of a signal watch. Dropping it ends the watch; the
/// signal can be watched again once the watch has been torn down (when
/// `deregister` or the drop returns, outside any evnexus callback).
///
/// ```
/// # fn main() -> evnexus::Result<()> {
/// let engine = evnexus::Engine::new()?;
/// evnexus::block_signals(&[libc::SIGUSR2])?;
/// let watch = engine.watch_signal(libc::SIGUSR2, |_| {})?;
/// assert_eq!(watch.signal(), libc::SIGUSR2);
/// assert!(watch.deregister());
/// let _again = engine.watch_signal(libc::SIGUSR2, |_| {})?;
/// # Ok(()) }
/// ```
pub struct SignalWatch {
    watch: OwnedFdWatch<SignalFd>,
    signal: libc::c_int,
}

impl SignalWatch {
    /// The token of the underlying signalfd watch.
    pub fn token(&self) -> Token {
        self.watch.token()
    }
    /// The watched signal.
    pub fn signal(&self) -> libc::c_int {
        self.signal
    }
    /// Whether the watch is still registered.
    pub fn is_live(&self) -> bool {
        self.watch.is_live()
    }
    /// Ends the watch; `true` if this call ended it. Outside any evnexus
    /// callback, the signalfd is closed and the signal free to be watched
    /// again when this returns.
    pub fn deregister(self) -> bool {
        self.watch.deregister()
    }
}

impl fmt::Debug for SignalWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalWatch")
            .field("signal", &self.signal)
            .field("token", &self.token())
            .finish()
    }
}

impl Engine {
    /// Watches `signal` through a signalfd: `callback` runs once per signal
    /// received, with its `siginfo` ([`SignalEvent`]), on the thread that
    /// dispatches the signalfd's readiness. Works on every backend.
    ///
    /// **The program must block `signal` in every thread** before it can
    /// arrive, normally with [`block_signals`] in the main thread before
    /// any thread is spawned; the engine never changes a signal mask (see
    /// below). Each readiness reads every pending signal, so none is lost
    /// when several arrive during one run of the callback; standard signals
    /// that arrive while one of theirs is pending coalesce (the kernel keeps
    /// one), real-time signals queue.
    /// If the callback panics, signals read in the same batch after the
    /// panicking one are not delivered (the panic ends the watch).
    ///
    /// Errors with [`Error::Backend`], watching nothing:
    /// - [`InvalidInput`](std::io::ErrorKind::InvalidInput): `signal`
    ///   cannot be watched (as for [`block_signals`]), or is not blocked in
    ///   the calling thread;
    /// - [`AlreadyExists`](std::io::ErrorKind::AlreadyExists): the signal
    ///   is watched already in this process (one watch per signal: two
    ///   would compete for each signal);
    /// - the system's error if `signalfd` fails; and as
    ///   [`Engine::register_fd`].
    ///
    /// # The signal mask: what the engine does, what the program must do
    ///
    /// A signalfd receives a signal only while the signal is *blocked*; where
    /// it is not blocked, its handler or default action (for `SIGTERM`:
    /// terminating the process) runs instead. A process-directed signal (from
    /// `kill`, a shell, a supervisor) goes to any one thread that does not
    /// block it. So:
    ///
    /// - **The program blocks the signal in every thread**, which in practice
    ///   means in the main thread before it spawns any (threads inherit the
    ///   mask): [`block_signals`] does that for the calling thread. A thread
    ///   that does not block it may take the signal instead of the watch.
    /// - **The engine never changes a signal mask.** This method checks
    ///   that the signal is blocked in the *calling* thread and refuses the
    ///   watch otherwise: that catches the common mistake (not blocking at
    ///   all), though the engine cannot see other threads' masks. Blocking
    ///   it on the program's behalf would only cover the calling thread, and
    ///   would leave other threads to take the signal unnoticed.
    /// - **Children inherit the mask** across `fork` and `exec`.
    ///   `std::process::Command` resets it in the child; a program that forks
    ///   or spawns by other means should unblock the signals there.
    /// - **Standard signals coalesce:** two `SIGHUP`s sent before the watch
    ///   reads are one pending signal and one callback run. Real-time signals
    ///   (`SIGRTMIN()..=SIGRTMAX()`) queue: each one sent is one run.
    /// - **Thread-directed signals** (`raise`, `pthread_kill`, `tgkill`) are
    ///   pending for their target thread only, and a signalfd sees those of
    ///   the thread that polls or reads it: they reach the watch only when
    ///   they target the thread that dispatches it. Signals from `kill`, a
    ///   shell or a supervisor are process-directed and reach it from any
    ///   thread.
    ///
    /// # One watch per signal per process
    ///
    /// Two signalfds of one signal compete for it: whichever reads first
    /// dequeues it, and the other sees nothing. So a second watch of a signal
    /// that is watched already (by this engine or another one in the process)
    /// is refused ([`std::io::ErrorKind::AlreadyExists`]) until the first watch
    /// has been torn down. Signals that arrive while no watch exists stay
    /// pending (they are blocked) and go to the next watch of their signal.
    ///
    /// # Example
    ///
    /// ```
    /// # fn main() -> evnexus::Result<()> {
    /// use evnexus::{block_signals, Engine};
    /// block_signals(&[libc::SIGUSR1])?; // first, before any thread exists
    /// let engine = Engine::new()?;
    /// let _watch = engine.watch_signal(libc::SIGUSR1, |ev| {
    ///    assert_eq!(ev.signal(), libc::SIGUSR1);
    ///    println!("SIGUSR1 from pid {} (uid {})", ev.pid(), ev.uid());
    ///    ev.engine().stop();
    /// })?;
    /// // SAFETY: sends SIGUSR1 to this process, which blocks it.
    /// unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    /// engine.run()?; // until the callback stops it
    /// # Ok(()) }
    /// ```
    pub fn watch_signal<F>(&self, signal: libc::c_int, mut callback: F) -> Result<SignalWatch>
    where
        F: FnMut(&SignalEvent<'_>) + Send + 'static,
    {
        check_signal(signal)?;
        if !blocked_here(signal)? {
            return Err(refused(
                io::ErrorKind::InvalidInput,
                format!(
                    "evnexus: signal {signal} is not blocked in the calling thread; block it in \
                     every thread (evnexus::block_signals before spawning threads) to watch it"
                ),
            ));
        }
        let signalfd = SignalFd::new(Claim::take(signal)?)?;
        let watch = self.register_owned(signalfd, Interest::READABLE, move |ev, signalfd| {
            signalfd.drain(|info| {
                callback(&SignalEvent {
                    engine: ev.engine(),
                    token: ev.token(),
                    info,
                })
            });
        })?;
        Ok(SignalWatch { watch, signal })
    }
}

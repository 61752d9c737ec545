//! What the threads of one input share: the socket pairs they watch (whose
//! watched end can be replaced by a new file at the same number), the table
//! of registrations, the sequence clock that orders their operations, and
//! the tallies of what the reports returned.

use super::entries::{Entry, Kind, Record};
use super::hooks::Hooks;
use crate::common::lock;
use evnexus::StaleReason;
use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Instant;

/// Socket pairs per input.
pub(crate) const PAIRS: usize = 3;

thread_local! {
    /// The sequence number at which this thread began the `run_once` it is
    /// in, or 0 outside the loop: a callback run then was dispatched by
    /// the engine's own loop.
    static LOOP_SINCE: Cell<u64> = const { Cell::new(0) };
    /// Callback runs on this thread so far.
    static RUNS_HERE: Cell<u64> = const { Cell::new(0) };
    /// Callbacks this thread is inside now.
    static CALLBACK_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as driving the loop (since `seq`) until dropped.
pub(crate) struct InLoop;

impl InLoop {
    pub(crate) fn enter(seq: u64) -> InLoop {
        LOOP_SINCE.with(|c| c.set(seq));
        InLoop
    }
}

impl Drop for InLoop {
    fn drop(&mut self) {
        LOOP_SINCE.with(|c| c.set(0));
    }
}

/// Whether this thread is inside a `run_once` (so a callback here was
/// dispatched by the engine's loop, not by a report).
pub(crate) fn in_loop() -> bool {
    LOOP_SINCE.with(|c| c.get()) != 0
}

/// Marks this thread as running a callback until dropped (and counts the
/// run).
pub(crate) struct InCallback;

impl InCallback {
    pub(crate) fn enter() -> InCallback {
        RUNS_HERE.with(|c| c.set(c.get() + 1));
        CALLBACK_DEPTH.with(|c| c.set(c.get() + 1));
        InCallback
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        CALLBACK_DEPTH.with(|c| c.set(c.get() - 1));
    }
}

pub(crate) fn in_callback() -> bool {
    CALLBACK_DEPTH.with(|c| c.get()) > 0
}

pub(crate) fn runs_here() -> u64 {
    RUNS_HERE.with(|c| c.get())
}

/// The file behind a pair's watched number, and its peer.
pub(crate) struct PairFile {
    /// Write here to make the watched end readable.
    peer: OwnedFd,
    /// Bumped each time the watched number gets a new file.
    pub(crate) file: u64,
}

/// A socket pair whose watched end keeps its number for the whole input.
pub(crate) struct Pair {
    /// The watched number (whatever file is behind it now).
    watched: OwnedFd,
    /// Read-held by whoever needs the file to stay put (a registration or a
    /// modify of a watch on this pair, a write, a drain); write-held while
    /// the number gets a new file.
    state: RwLock<PairFile>,
}

fn nonblocking_pair() -> (OwnedFd, OwnedFd) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("O_NONBLOCK");
    b.set_nonblocking(true).expect("O_NONBLOCK");
    // SAFETY: `into_raw_fd` hands over sole ownership of each descriptor.
    unsafe {
        (
            OwnedFd::from_raw_fd(a.into_raw_fd()),
            OwnedFd::from_raw_fd(b.into_raw_fd()),
        )
    }
}

impl Pair {
    fn new() -> Pair {
        let (watched, peer) = nonblocking_pair();
        Pair {
            watched,
            state: RwLock::new(PairFile { peer, file: 0 }),
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.watched.as_raw_fd()
    }

    /// Holds the file behind the number in place.
    pub(crate) fn hold(&self) -> RwLockReadGuard<'_, PairFile> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// One byte to the peer: the watched end becomes readable.
    pub(crate) fn make_ready(&self) {
        let st = self.hold();
        // SAFETY: writes one byte from a live local to an fd we own (held
        // open by the read guard); a full buffer is EAGAIN, which is fine.
        unsafe { libc::write(st.peer.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    /// Reads everything pending on the watched end.
    pub(crate) fn drain(&self) {
        let _st = self.hold();
        drain_fd(self.fd());
    }

    /// Closes the file behind the watched number and puts a new socket
    /// there (`dup2` does both at once), with a new peer.
    pub(crate) fn reuse(&self) {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let (new, peer) = nonblocking_pair();
        // SAFETY: both are fds we own; dup2 closes the old file behind
        // `watched` and makes the number refer to `new`'s file. `watched`
        // keeps owning the number.
        let r = unsafe { libc::dup2(new.as_raw_fd(), self.fd()) };
        assert_eq!(r, self.fd(), "dup2: {}", io::Error::last_os_error());
        drop(new);
        st.peer = peer;
        st.file += 1;
    }

    /// Whether the watched end is readable now (`poll(fd, 0)`).
    pub(crate) fn is_readable(&self) -> bool {
        let _st = self.hold();
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }
}

/// Reads `fd` until it would block (it is non-blocking).
pub(crate) fn drain_fd(fd: RawFd) {
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: reads into a live local buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
    }
}

/// Counts of what the workers' own reports returned. Relaxed throughout:
/// pure counts, read only at quiet points, after every thread that added
/// to them was joined (the join orders their adds before the read).
#[derive(Default)]
pub(crate) struct ReportTally {
    /// By `StaleReason as usize`.
    pub(crate) stale: [AtomicU64; 4],
    pub(crate) deferred: AtomicU64,
}

impl ReportTally {
    pub(crate) fn stale(&self, reason: StaleReason) {
        let i = match reason {
            StaleReason::Generation => 0,
            StaleReason::FdMismatch => 1,
            StaleReason::OutOfRange => 2,
            StaleReason::WrongKind => 3,
        };
        // Relaxed: see the type's doc.
        self.stale[i].fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct World {
    pub(crate) builtin: bool,
    pub(crate) hooks: Option<Hooks>,
    pub(crate) pairs: Vec<Pair>,
    /// The registrations made (register returned `Ok`).
    pub(crate) entries: Mutex<Vec<Arc<Entry>>>,
    /// The record of every callback handed to the engine, made or not.
    pub(crate) records: Mutex<Vec<Arc<Record>>>,
    seq: AtomicU64,
    /// Every deadline is at or after this (taken after the engine was built,
    /// so the engine's clock carries each deadline exactly).
    pub(crate) t0: Instant,
    /// Registrations that reached the arena (made, or refused by the
    /// backend): `Stats::registered`.
    pub(crate) registered: AtomicU64,
    pub(crate) reports: ReportTally,
    /// Backend errors of register/modify that the hooks injected.
    pub(crate) injected_seen: AtomicU64,
    /// Modifies and resets that returned `Gone`: each may have met an
    /// injected failure in its hook while its registration ended (the
    /// engine then answers `Gone`; the refusal is moot).
    pub(crate) changes_gone: AtomicU64,
}

impl World {
    pub(crate) fn new(builtin: bool, hooks: Option<Hooks>) -> World {
        World {
            builtin,
            hooks,
            pairs: (0..PAIRS).map(|_| Pair::new()).collect(),
            entries: Mutex::new(Vec::new()),
            records: Mutex::new(Vec::new()),
            seq: AtomicU64::new(1),
            t0: Instant::now(),
            registered: AtomicU64::new(0),
            reports: ReportTally::default(),
            injected_seen: AtomicU64::new(0),
            changes_gone: AtomicU64::new(0),
        }
    }

    /// The next sequence number. SeqCst: the numbers follow one total order
    /// that agrees with real time across threads, so "ended at 5, report
    /// began at 7" means the end happened before the report began.
    pub(crate) fn tick(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    pub(crate) fn pair(&self, k: u8) -> (usize, &Pair) {
        let i = k as usize % self.pairs.len();
        (i, &self.pairs[i])
    }

    /// A record for a callback about to be handed to the engine.
    pub(crate) fn new_record(&self, kind: Kind) -> Arc<Record> {
        let rec = Arc::new(Record::new(kind));
        lock(&self.records).push(Arc::clone(&rec));
        rec
    }

    pub(crate) fn add(&self, entry: Arc<Entry>) {
        lock(&self.entries).push(entry);
    }

    /// The `which`-th entry (modulo) among those `filter` accepts.
    pub(crate) fn pick(&self, which: u8, filter: impl Fn(&Entry) -> bool) -> Option<Arc<Entry>> {
        let entries = lock(&self.entries);
        let ids: Vec<&Arc<Entry>> = entries.iter().filter(|e| filter(e)).collect();
        (!ids.is_empty()).then(|| Arc::clone(ids[which as usize % ids.len()]))
    }

    pub(crate) fn all(&self) -> Vec<Arc<Entry>> {
        lock(&self.entries).clone()
    }

    pub(crate) fn all_records(&self) -> Vec<Arc<Record>> {
        lock(&self.records).clone()
    }

    /// The entry holding `token`, if it is in the table yet.
    pub(crate) fn by_token(&self, token: u64) -> Option<Arc<Entry>> {
        lock(&self.entries)
            .iter()
            .find(|e| e.token == token)
            .cloned()
    }
}

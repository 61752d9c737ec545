//! I/O-safe registration (`Engine::register`, `Engine::register_owned`) on
//! every backend: hooks, io_uring and epoll. The owned fd is closed after,
//! and only after, its watch has ended and its kernel entry (on hooks: the
//! application's registration) is gone. "Closed" is checked three ways:
//! `fcntl(F_GETFD)` on the number (with the file's identity, since tests
//! run in parallel and another test may reuse the number at once), the
//! socket's peer reading end of file, and, at the very moment of the close,
//! whether the entry was still there.

mod common;
#[path = "common/drive.rs"]
mod drive;

use common::{each_backend, each_backend_owned, each_backend_with, pair, Rig};
use drive::turn_until;
use evnexus::{Error, Interest, Readiness};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(5);

/// Device and inode of the file open at `fd`, or `None` if none is.
fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: a zeroed stat is a valid value to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills `st`; any fd number is a valid argument.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// Whether `fd` is still open on the file `id` it was opened on:
/// `fcntl(F_GETFD)` succeeds on the number, and the number still names
/// that file (not one another test opened at the reused number).
fn still_open(fd: RawFd, id: (u64, u64)) -> bool {
    // SAFETY: F_GETFD only reads descriptor flags; any int is valid.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags != -1 && file_id(fd) == Some(id)
}

/// Whether the epoll set `epfd` holds an entry for fd number `fd`
/// (`/proc/self/fdinfo` lists one `tfd:` line per entry).
fn epoll_holds(epfd: RawFd, fd: RawFd) -> bool {
    let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{epfd}")) else {
        return false;
    };
    info.lines().any(|l| {
        l.strip_prefix("tfd:")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<RawFd>().ok())
            == Some(fd)
    })
}

/// Whether the backend of `rig` still holds an entry for `fd`: on hooks,
/// the application's registration; on the loops, the epoll set's entry.
type EntryCheck = Arc<dyn Fn(RawFd) -> bool + Send + Sync>;

fn entry_check(rig: &Rig) -> EntryCheck {
    match &rig.rec {
        Some(rec) => {
            let rec = Arc::clone(rec);
            Arc::new(move |fd| rec.fds.lock().unwrap().values().any(|&(f, _)| f == fd))
        }
        None => {
            let epfd = rig.engine.as_fd().as_raw_fd();
            Arc::new(move |fd| epoll_holds(epfd, fd))
        }
    }
}

/// A socket that records, as it is closed, whether its entry was still in
/// the backend (`Some(true)` would be the bug).
struct Probe {
    sock: UnixStream,
    entry: EntryCheck,
    closed_with_entry: Arc<Mutex<Option<bool>>>,
}

impl AsFd for Probe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // Runs before `sock` is closed (fields drop after this).
        let present = (self.entry)(self.sock.as_raw_fd());
        *self.closed_with_entry.lock().unwrap() = Some(present);
    }
}

/// The watched end of a fresh pair, wrapped in a probe; the peer; the
/// number and identity of the watched end; the probe's record.
struct Setup {
    probe: Probe,
    peer: UnixStream,
    fd: RawFd,
    id: (u64, u64),
    closed: Arc<Mutex<Option<bool>>>,
}

fn setup(rig: &Rig) -> Setup {
    let (sock, peer) = pair();
    let fd = sock.as_raw_fd();
    let id = file_id(fd).unwrap();
    let closed = Arc::new(Mutex::new(None));
    let probe = Probe {
        sock,
        entry: entry_check(rig),
        closed_with_entry: Arc::clone(&closed),
    };
    Setup {
        probe,
        peer,
        fd,
        id,
        closed,
    }
}

/// What the peer of the watched socket reads now: `Some(0)` is end of
/// file (the watched end is closed), `None` that nothing is there yet.
fn peer_reads(peer: &UnixStream) -> Option<usize> {
    match (&mut &*peer).read(&mut [0u8; 64]) {
        Ok(n) => Some(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("peer read: {e}"),
    }
}

/// A callback that reads what the owned socket has into `got`.
fn reader(got: &Arc<Mutex<Vec<u8>>>) -> impl FnMut(&evnexus::FdEvent<'_>, &Probe) + Send {
    let got = Arc::clone(got);
    move |_, probe| {
        let mut buf = [0u8; 64];
        if let Ok(n) = (&mut &probe.sock).read(&mut buf) {
            got.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    }
}

#[test]
fn owned_fd_stays_open_while_registered_and_closes_only_after_its_entry_is_gone() {
    each_backend(|rig| {
        let mut s = setup(rig);
        let got = Arc::new(Mutex::new(Vec::new()));
        let watch = rig
            .engine
            .register_owned(s.probe, Interest::READABLE, reader(&got))
            .unwrap();
        s.peer.write_all(b"ping").unwrap();
        turn_until(rig, "the owned socket's read", LIMIT, || {
            got.lock().unwrap().len() == 4
        });
        assert_eq!(
            &got.lock().unwrap()[..],
            b"ping",
            "the callback reads its own socket"
        );
        assert!(still_open(s.fd, s.id), "open while registered");
        assert!((entry_check(rig))(s.fd), "registered in the backend");
        assert_eq!(peer_reads(&s.peer), None, "no end of file while registered");
        assert_eq!(*s.closed.lock().unwrap(), None);

        assert!(watch.deregister());
        assert!(!still_open(s.fd, s.id), "closed once deregistered");
        assert_eq!(peer_reads(&s.peer), Some(0), "the peer sees end of file");
        assert_eq!(
            *s.closed.lock().unwrap(),
            Some(false),
            "closed only after its entry was removed"
        );
    });
}

#[test]
fn dropping_an_owned_watch_closes_its_fd_after_the_entry_is_gone() {
    each_backend(|rig| {
        let s = setup(rig);
        let watch = rig
            .engine
            .register_owned(s.probe, Interest::READABLE, |_, _| {})
            .unwrap();
        assert!(still_open(s.fd, s.id));
        drop(watch);
        assert!(!still_open(s.fd, s.id));
        assert_eq!(peer_reads(&s.peer), Some(0));
        assert_eq!(*s.closed.lock().unwrap(), Some(false));
    });
}

#[test]
fn into_inner_gives_the_fd_back_open_and_no_longer_registered() {
    each_backend(|rig| {
        let mut s = setup(rig);
        let watch = rig
            .engine
            .register_owned(s.probe, Interest::READABLE, |_, _| {})
            .unwrap();
        let token = watch.token();
        let probe = watch.into_inner().expect("outside any callback");
        assert!(still_open(s.fd, s.id), "returned open");
        assert!(!(entry_check(rig))(s.fd), "no longer registered");
        assert_eq!(*s.closed.lock().unwrap(), None);
        assert_eq!(peer_reads(&s.peer), None);
        // Its old token is stale; the fd can be registered again.
        let r = rig
            .engine
            .occurred_fd(token, s.fd, Readiness::READABLE)
            .unwrap();
        assert!(matches!(r, evnexus::Occurred::Stale(_)), "{r:?}");
        let got = Arc::new(Mutex::new(Vec::new()));
        let again = rig
            .engine
            .register_owned(probe, Interest::READABLE, reader(&got))
            .unwrap();
        s.peer.write_all(b"again").unwrap();
        turn_until(rig, "the re-registered read", LIMIT, || {
            got.lock().unwrap().len() == 5
        });
        drop(again);
        assert_eq!(*s.closed.lock().unwrap(), Some(false));
        assert_eq!(peer_reads(&s.peer), Some(0));
    });
}

#[test]
fn owned_watch_ended_by_its_own_callback_keeps_the_fd_until_the_handle_goes() {
    each_backend(|rig| {
        let mut s = setup(rig);
        let runs = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&runs);
        let watch = rig
            .engine
            .register_owned(s.probe, Interest::READABLE, move |ev, probe| {
                *counted.lock().unwrap() += 1;
                let _ = (&mut &probe.sock).read(&mut [0u8; 8]);
                assert!(ev.deregister());
            })
            .unwrap();
        s.peer.write_all(b"x").unwrap();
        turn_until(rig, "the self-deregistering run", LIMIT, || {
            *runs.lock().unwrap() == 1
        });
        assert!(!watch.is_live());
        assert!(!(entry_check(rig))(s.fd), "its entry was removed");
        assert!(still_open(s.fd, s.id), "the handle keeps the value");
        assert_eq!(peer_reads(&s.peer), None);
        drop(watch);
        assert!(!still_open(s.fd, s.id));
        assert_eq!(peer_reads(&s.peer), Some(0));
        assert_eq!(*s.closed.lock().unwrap(), Some(false));
    });
}

#[test]
fn owned_watch_whose_callback_panics_closes_its_fd_after_the_entry_is_gone() {
    each_backend(|rig| {
        let s = setup(rig);
        let watch = rig
            .engine
            .register_owned(s.probe, Interest::READABLE, |_, _| panic!("planted"))
            .unwrap();
        let r = rig
            .engine
            .occurred_fd(watch.token(), s.fd, Readiness::READABLE);
        assert!(matches!(r, Err(Error::CallbackPanicked(_))), "{r:?}");
        assert!(!watch.is_live());
        assert!(!(entry_check(rig))(s.fd));
        assert!(still_open(s.fd, s.id));
        drop(watch);
        assert!(!still_open(s.fd, s.id));
        assert_eq!(peer_reads(&s.peer), Some(0));
        assert_eq!(*s.closed.lock().unwrap(), Some(false));
    });
}

#[test]
fn dropping_the_engine_ends_owned_watches_and_their_fds_close_after_their_entries() {
    each_backend_owned(|rig| {
        let s = setup(&rig);
        let check = entry_check(&rig);
        let watch = rig
            .engine
            .register_owned(s.probe, Interest::READABLE, |_, _| {})
            .unwrap();
        let rec = rig.rec.clone();
        drop(rig.engine);
        assert!(!watch.is_live());
        // The handle keeps the engine's internals (the epoll set) alive.
        assert!(!check(s.fd), "the engine removed the entry");
        if let Some(rec) = rec {
            assert_eq!(rec.live_fds(), 0);
        }
        assert!(still_open(s.fd, s.id));
        drop(watch);
        assert!(!still_open(s.fd, s.id));
        assert_eq!(peer_reads(&s.peer), Some(0));
        assert_eq!(*s.closed.lock().unwrap(), Some(false));
    });
}

#[test]
fn failed_owned_registration_drops_the_value_and_leaves_nothing_registered() {
    // One registration fits; the owned watch is the second: Error::Full.
    each_backend_with(
        |b| b.max_registrations(1),
        |rig| {
            let _timer = rig
                .engine
                .timer_after(Duration::from_secs(3600), |_| {})
                .unwrap();
            let s = setup(rig);
            let r = rig
                .engine
                .register_owned(s.probe, Interest::READABLE, |_, _| {});
            assert!(matches!(r, Err(Error::Full { limit: 1 })), "{r:?}");
            assert!(!still_open(s.fd, s.id), "the value was dropped");
            assert_eq!(peer_reads(&s.peer), Some(0));
            assert_eq!(*s.closed.lock().unwrap(), Some(false));
        },
    );
}

#[test]
fn borrowed_watch_delivers_events_and_its_end_leaves_the_fd_open() {
    each_backend(|rig| {
        let (sock, mut peer) = pair();
        let fd = sock.as_raw_fd();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let watch = rig
            .engine
            .register(&sock, Interest::READABLE, move |ev| {
                log.lock().unwrap().push((ev.token(), ev.fd()));
            })
            .unwrap();
        peer.write_all(b"x").unwrap();
        turn_until(rig, "the borrowed watch's event", LIMIT, || {
            !seen.lock().unwrap().is_empty()
        });
        assert_eq!(seen.lock().unwrap()[0], (watch.token(), fd));
        // The program still reads its socket while the watch borrows it.
        assert_eq!((&mut &sock).read(&mut [0u8; 8]).unwrap(), 1);
        assert!(watch.is_live());
        assert!((entry_check(rig))(fd));
        assert!(watch.deregister());
        assert!(!(entry_check(rig))(fd), "the entry went with the watch");
        // The borrow is over: `sock` is the program's again, and open.
        let id = file_id(fd).unwrap();
        assert!(still_open(fd, id));
        drop(sock);
        assert_eq!(peer_reads(&peer), Some(0));
    });
}

#[test]
fn owned_arc_watch_shares_the_socket_and_its_fd_outlives_the_watch_while_shared() {
    each_backend(|rig| {
        let (sock, mut peer) = pair();
        let fd = sock.as_raw_fd();
        let id = file_id(fd).unwrap();
        let sock = Arc::new(sock);
        let got = Arc::new(Mutex::new(0usize));
        let counted = Arc::clone(&got);
        let watch = rig
            .engine
            .register_owned(Arc::clone(&sock), Interest::READABLE, move |_, s| {
                if let Ok(n) = (&mut &**s).read(&mut [0u8; 64]) {
                    *counted.lock().unwrap() += n;
                }
            })
            .unwrap();
        peer.write_all(b"abc").unwrap();
        turn_until(rig, "the shared socket's read", LIMIT, || {
            *got.lock().unwrap() == 3
        });
        // The program writes through its own clone.
        (&mut &*sock).write_all(b"pong").unwrap();
        assert!(watch.deregister());
        assert!(still_open(fd, id), "the program's clone keeps it open");
        let mut buf = [0u8; 4];
        peer.set_nonblocking(false).unwrap();
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        peer.set_nonblocking(true).unwrap();
        drop(sock);
        assert!(!still_open(fd, id));
        assert_eq!(peer_reads(&peer), Some(0));
    });
}

#[test]
fn owned_watch_from_inside_a_callback_is_given_back_once_its_run_is_over() {
    // into_inner from a callback does not wait; it returns the value when
    // the watch's callback is not running (here: another watch's callback).
    each_backend(|rig| {
        let s = setup(rig);
        let owned = rig
            .engine
            .register_owned(s.probe, Interest::READABLE, |_, _| {})
            .unwrap();
        let cell = Arc::new(Mutex::new(Some(owned)));
        let back = Arc::new(Mutex::new(None));
        let (cell2, back2) = (Arc::clone(&cell), Arc::clone(&back));
        let timer = rig
            .engine
            .timer_after(Duration::ZERO, move |_| {
                let owned = cell2.lock().unwrap().take().unwrap();
                *back2.lock().unwrap() = Some(owned.into_inner().is_some());
            })
            .unwrap();
        turn_until(rig, "the timer", LIMIT, || back.lock().unwrap().is_some());
        assert_eq!(*back.lock().unwrap(), Some(true));
        drop(timer);
        // The value was dropped at the end of the timer's callback.
        assert!(!still_open(s.fd, s.id));
        assert_eq!(*s.closed.lock().unwrap(), Some(false));
    });
}

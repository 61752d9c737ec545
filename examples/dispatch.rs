//! `dispatch`: a small, deterministic driver for the engine's event path,
//! for the scripts in `perf/` (flame graphs, counters, system calls per
//! event).
//!
//! It registers `--fds N` read watches (level-triggered; edge-triggered
//! with `--edge`) and dispatches events until `--events N` callbacks have
//! run, then prints the count, the wall time, ns per event and
//! `engine.stats().dispatched`. Two shapes:
//!
//! - **always-ready** (default): N eventfds whose counter is set once and
//!   never read, so every fd is readable on every wait; the callback does
//!   nothing but count. This is the engine's own cost per event.
//! - **busy** (`--busy`): N socketpairs with one byte in flight each; the
//!   callback reads what is there and writes one byte back from the peer
//!   end, so the fd is readable again on the next wait (two system calls
//!   per event that are the callback's, not the engine's). With `--edge`
//!   the watches are edge-triggered (`Interest::EDGE`): the callback's
//!   read drains the byte and its write makes the next edge.
//!
//! Backends: `uring` and `epoll` drive the built-in loop with
//! `Engine::run_once`; `hooks` is a trivial application loop of this
//! program (`OsEventHooks` keeps a list of registrations; the loop runs
//! `poll()` over it and reports each ready fd with `occurred_fd`); `poll`
//! is the engine's poll-loop backend (`Engine::poll_once`).
//!
//! Run: `cargo run --release --example dispatch -- --backend uring --fds 1024`.

use evnexus::{
    BackendKind, Engine, FdWatch, Interest, Occurred, OsEventHooks, PollSet, Readiness, Token,
};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/cli.rs"]
mod cli;

const USAGE: &str = "\
usage: dispatch [--backend uring|epoll|hooks|poll] [--fds N] [--busy [--edge]] [--events N]

Registers N read watches (level-triggered unless --edge) and dispatches
events until at least `--events` callbacks have run; prints events, wall
time, ns/event and engine.stats().dispatched, then one `result ...` line
of key=value pairs for scripts. Exits 1 if fewer events were dispatched
than asked.

options:
  --backend B   uring: the built-in loop on io_uring (Engine::run_once);
                epoll: the built-in loop on epoll (Engine::run_once);
                hooks: this program's poll() loop through OsEventHooks,
                       reporting with occurred_fd;
                poll:  the engine's poll-loop backend (Engine::poll_once)
                                                                [uring]
  --fds N       watched fds                                     [1]
  --busy        socketpairs kept busy: the callback reads the byte in
                flight and writes one back (default: always-ready
                eventfds and a no-op callback)
  --edge        edge-triggered watches (Interest::EDGE); needs --busy,
                since an always-ready eventfd makes one edge only
  --events N    callbacks to run (a batch is never cut short, so a few
                more may run)                                   [1000000]
  -h, --help    print this help

exit status: 0 done; 1 fewer events dispatched than asked, or an engine
error; 2 bad usage.";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Uring,
    Epoll,
    Hooks,
    Poll,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Uring => "uring",
            Mode::Epoll => "epoll",
            Mode::Hooks => "hooks",
            Mode::Poll => "poll",
        }
    }
}

struct Config {
    mode: Mode,
    fds: usize,
    busy: bool,
    edge: bool,
    events: u64,
}

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config {
        mode: Mode::Uring,
        fds: 1,
        busy: false,
        edge: false,
        events: 1_000_000,
    };
    let mut flags = cli::Flags::new(USAGE);
    while let Some((flag, inline)) = flags.next_flag() {
        match flag.as_str() {
            "--backend" => {
                cfg.mode = match flags.value("--backend", inline)?.as_str() {
                    "uring" => Mode::Uring,
                    "epoll" => Mode::Epoll,
                    "hooks" => Mode::Hooks,
                    "poll" => Mode::Poll,
                    other => return Err(format!("unknown backend {other:?}")),
                }
            }
            "--fds" => {
                cfg.fds = cli::number(&flags.value("--fds", inline)?)? as usize;
                if cfg.fds == 0 {
                    return Err("--fds must be at least 1".into());
                }
            }
            "--events" => cfg.events = cli::number(&flags.value("--events", inline)?)?,
            "--busy" => cfg.busy = true,
            "--edge" => cfg.edge = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if cfg.edge && !cfg.busy {
        return Err("--edge needs --busy: an always-ready eventfd makes one edge only".into());
    }
    Ok(cfg)
}

fn sys(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// One watched fd and whatever keeps it ready.
struct Source {
    /// The fd the watch is on.
    watched: OwnedFd,
    /// Busy shape: the socketpair's other end, written by the callback.
    peer: Option<OwnedFd>,
}

fn make_sources(n: usize, busy: bool) -> io::Result<Vec<Source>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if busy {
            let mut sv = [0 as libc::c_int; 2];
            // SAFETY: `sv` has room for the two descriptors.
            sys(unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                    sv.as_mut_ptr(),
                )
            })?;
            // SAFETY: both descriptors were just created and are owned here.
            let (a, b) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
            // SAFETY: writing one byte from a valid buffer.
            sys(unsafe { libc::write(b.as_raw_fd(), b"x".as_ptr().cast(), 1) } as libc::c_int)?;
            out.push(Source {
                watched: a,
                peer: Some(b),
            });
        } else {
            // Counter 1 and never read: readable forever.
            // SAFETY: plain eventfd creation.
            let fd = sys(unsafe { libc::eventfd(1, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
            // SAFETY: just created and owned here.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            out.push(Source {
                watched: fd,
                peer: None,
            });
        }
    }
    Ok(out)
}

/// The callback's work in the busy shape: read what is in flight, send one
/// byte back so that the fd stays readable.
#[inline]
fn bounce(fd: RawFd, peer: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reading into a local buffer of the given length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n > 0 {
        // SAFETY: writing one byte from a valid buffer.
        unsafe { libc::write(peer, b"x".as_ptr().cast(), 1) };
    }
}

// ----- the hooks backend: a trivial application loop ------------------------

/// What the application's loop watches: (fd, events, token) per
/// registration, and a version bumped on every change so that the loop
/// rebuilds its poll set only when needed.
#[derive(Default)]
struct AppLoop {
    regs: Mutex<Vec<(RawFd, libc::c_short, Token)>>,
    version: AtomicU64,
}

struct Hooks(Arc<AppLoop>);

impl OsEventHooks for Hooks {
    type FdReg = ();
    type TimeoutReg = ();
    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<()> {
        self.0
            .regs
            .lock()
            .unwrap()
            .push((fd, interest.as_poll_events(), token));
        self.0.version.fetch_add(1, Ordering::Release);
        Ok(())
    }
    fn fd_modify(&self, fd: RawFd, _: &mut (), interest: Interest) -> io::Result<()> {
        for r in self.0.regs.lock().unwrap().iter_mut().filter(|r| r.0 == fd) {
            r.1 = interest.as_poll_events();
        }
        self.0.version.fetch_add(1, Ordering::Release);
        Ok(())
    }
    fn fd_deregister(&self, fd: RawFd, _: ()) {
        self.0.regs.lock().unwrap().retain(|r| r.0 != fd);
        self.0.version.fetch_add(1, Ordering::Release);
    }
    fn timeout_register(&self, _: Instant, _: Token) -> io::Result<()> {
        Err(io::Error::other("dispatch example: no timers"))
    }
    fn timeout_modify(&self, _: &mut (), _: Instant) -> io::Result<()> {
        Ok(())
    }
    fn timeout_deregister(&self, _: ()) {}
}

// ----- driving -------------------------------------------------------------

struct Outcome {
    /// Callbacks run, as the loop counted them.
    events: u64,
    /// Loop iterations (waits).
    waits: u64,
    wall: Duration,
}

/// Gives up when this long passes without a single dispatch.
const STALL: Duration = Duration::from_secs(5);

fn drive(engine: &Engine, cfg: &Config, app: Option<&AppLoop>) -> Result<Outcome, String> {
    let mut events = 0u64;
    let mut waits = 0u64;
    let mut last_progress = Instant::now();
    let mut set = PollSet::new();
    // hooks: the loop's poll set and the token of each entry.
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut tokens: Vec<Token> = Vec::new();
    let mut seen_version = u64::MAX;
    let start = Instant::now();
    while events < cfg.events {
        let n = match cfg.mode {
            Mode::Uring | Mode::Epoll => engine
                .run_once(Some(Duration::from_secs(1)))
                .map_err(|e| format!("run_once: {e}"))?
                as u64,
            Mode::Poll => engine
                .poll_once(&mut set, Some(Duration::from_secs(1)))
                .map_err(|e| format!("poll_once: {e}"))? as u64,
            Mode::Hooks => {
                let app = app.expect("hooks mode has an application loop");
                let v = app.version.load(Ordering::Acquire);
                if v != seen_version {
                    seen_version = v;
                    let regs = app.regs.lock().unwrap();
                    pfds.clear();
                    tokens.clear();
                    for &(fd, ev, token) in regs.iter() {
                        pfds.push(libc::pollfd {
                            fd,
                            events: ev,
                            revents: 0,
                        });
                        tokens.push(token);
                    }
                }
                // SAFETY: `pfds` is a valid array of its length.
                let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 1000) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(format!("poll: {e}"));
                    }
                }
                let mut n = 0u64;
                for (p, &token) in pfds.iter().zip(&tokens) {
                    if p.revents != 0 {
                        match engine.occurred_fd(
                            token,
                            p.fd,
                            Readiness::from_poll_revents(p.revents),
                        ) {
                            Ok(Occurred::Dispatched) => n += 1,
                            Ok(_) => {}
                            Err(e) => return Err(format!("occurred_fd: {e}")),
                        }
                    }
                }
                n
            }
        };
        waits += 1;
        events += n;
        if n > 0 {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL {
            break;
        }
    }
    Ok(Outcome {
        events,
        waits,
        wall: start.elapsed(),
    })
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn run(cfg: &Config) -> Result<bool, String> {
    let app = Arc::new(AppLoop::default());
    let engine = match cfg.mode {
        Mode::Uring => Engine::builder().backend(BackendKind::Uring).build(),
        Mode::Epoll => Engine::builder().backend(BackendKind::Epoll).build(),
        Mode::Poll => Engine::builder().backend(BackendKind::Poll).build(),
        Mode::Hooks => Ok(Engine::with_hooks(Hooks(app.clone()))),
    }
    .map_err(|e| format!("building the {} engine: {e}", cfg.mode.name()))?;

    let sources = make_sources(cfg.fds, cfg.busy).map_err(|e| format!("creating fds: {e}"))?;
    let interest = if cfg.edge {
        Interest::READABLE | Interest::EDGE
    } else {
        Interest::READABLE
    };
    let mut watches: Vec<FdWatch> = Vec::with_capacity(sources.len());
    for s in &sources {
        let fd = s.watched.as_raw_fd();
        let peer = s.peer.as_ref().map(|p| p.as_raw_fd());
        let w = match peer {
            Some(peer) => engine.register_fd(fd, interest, move |ev| bounce(ev.fd(), peer)),
            None => engine.register_fd(fd, interest, |_| {}),
        }
        .map_err(|e| format!("register_fd: {e}"))?;
        watches.push(w);
    }

    let shape = if cfg.busy {
        format!(
            "{} busy socketpairs, {} (read + write back in the callback)",
            cfg.fds,
            if cfg.edge {
                "edge-triggered"
            } else {
                "level-triggered"
            }
        )
    } else {
        format!("{} always-ready eventfds (no-op callback)", cfg.fds)
    };
    let how = match cfg.mode {
        Mode::Uring | Mode::Epoll => "Engine::run_once",
        Mode::Poll => "Engine::poll_once",
        Mode::Hooks => "the application's poll() loop + occurred_fd",
    };
    println!(
        "dispatch: {} backend ({how}), {shape}, {} events asked",
        cfg.mode.name(),
        group(cfg.events)
    );

    let out = drive(&engine, cfg, Some(&app))?;
    let stats = engine.stats();
    drop(watches);
    drop(sources);

    let ns = out.wall.as_nanos() as f64;
    let per = if out.events > 0 {
        ns / out.events as f64
    } else {
        f64::NAN
    };
    println!("  events               {}", group(out.events));
    println!(
        "  waits                {}   ({:.1} events per wait)",
        group(out.waits),
        out.events as f64 / out.waits.max(1) as f64
    );
    println!("  wall                 {:.3} s", out.wall.as_secs_f64());
    println!("  ns/event             {per:.1}");
    println!("  stats().dispatched   {}", group(stats.dispatched));
    println!(
        "result backend={} shape={} fds={} asked={} events={} waits={} wall_ns={} ns_per_event={per:.1} dispatched={}",
        cfg.mode.name(),
        match (cfg.busy, cfg.edge) {
            (true, true) => "busy-edge",
            (true, false) => "busy",
            _ => "ready",
        },
        cfg.fds,
        cfg.events,
        out.events,
        out.waits,
        out.wall.as_nanos(),
        stats.dispatched,
    );
    let ok = out.events >= cfg.events && stats.dispatched >= cfg.events;
    if !ok {
        eprintln!(
            "dispatch: FAILED: {} events asked, {} run by the loop, {} dispatched by the engine",
            cfg.events, out.events, stats.dispatched
        );
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dispatch: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&cfg) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("dispatch: {e}");
            ExitCode::from(1)
        }
    }
}

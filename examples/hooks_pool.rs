//! `hooks_pool`: a toolstack-style application loop that carries the
//! engine's registrations through [`OsEventHooks`], with a pool of threads
//! that deliver its reports (libvirt's event loop driving libxl).
//!
//! - The **hooks** keep the registrations in the application's own table
//!   and wake its loop thread whenever the table changes. They are built
//!   by the engine ([`Engine::with_hooks_fn`]) with an [`EngineHandle`],
//!   which the application's side keeps: its threads report through it,
//!   without a reference to the engine.
//! - The **loop thread** `poll()`s the table's fds, and hands each ready fd
//!   (and each due timeout) to the pool as a report. An fd whose report is
//!   with the pool is left out of `poll()` until the report has been
//!   delivered, so a level-triggered fd is not reported over and over.
//! - The **delivery threads** take what the queue holds as a batch, and
//!   report it through the handle ([`EngineHandle::engine`], once per
//!   batch), whenever they get to it: a report for a registration that
//!   has ended meanwhile is rejected by the engine as stale.
//!
//! The work: `domains` channels (socket pairs); the engine owns one end of
//! each ([`Engine::register_owned`]), a feeder thread writes `messages`
//! messages into the other ends, and each domain has one fire-and-forget
//! timer. It ends when every byte written has been read.
//!
//! Run: `cargo run --release --example hooks_pool -- [domains] [messages] [threads]`.

use evnexus::{
    Engine, EngineHandle, Interest, Occurred, OsEventHooks, OwnedFdWatch, Readiness, Token,
};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const MESSAGE: &[u8; 16] = b"domain heartbeat";

/// The application's table of what the engine asked it to watch.
#[derive(Default)]
struct Table {
    fds: HashMap<Token, (RawFd, Interest)>,
    timeouts: HashMap<Token, Instant>,
    /// fds whose report is with the pool.
    in_flight: HashSet<Token>,
}

/// The application's loop: its table, the pipe that wakes it, and the
/// handle of the engine it serves.
struct AppLoop {
    table: Mutex<Table>,
    wake_rx: UnixStream,
    wake_tx: UnixStream,
    stop: AtomicBool,
    engine: EngineHandle,
}

impl AppLoop {
    /// An engine whose hooks are this application's loop, and the loop.
    fn with_engine() -> io::Result<(Engine, Arc<AppLoop>)> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let mut app = None;
        let engine = Engine::with_hooks_fn(|handle| {
            let a = Arc::new(AppLoop {
                table: Mutex::default(),
                wake_rx,
                wake_tx,
                stop: AtomicBool::new(false),
                engine: handle,
            });
            app = Some(Arc::clone(&a));
            Hooks(a)
        });
        let app = app.expect("with_hooks_fn calls its closure");
        Ok((engine, app))
    }
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Wakes the loop thread (a full pipe means it is woken already).
    fn wake(&self) {
        let _ = (&self.wake_tx).write(&[1]);
    }
}

/// The hooks: the engine's registrations go into the application's table.
struct Hooks(Arc<AppLoop>);

impl OsEventHooks for Hooks {
    type FdReg = Token;
    type TimeoutReg = Token;

    fn fd_register(&self, fd: RawFd, interest: Interest, token: Token) -> io::Result<Token> {
        self.0.table().fds.insert(token, (fd, interest));
        self.0.wake();
        Ok(token)
    }
    fn fd_modify(&self, fd: RawFd, token: &mut Token, interest: Interest) -> io::Result<()> {
        self.0.table().fds.insert(*token, (fd, interest));
        self.0.wake();
        Ok(())
    }
    fn fd_deregister(&self, _: RawFd, token: Token) {
        let mut table = self.0.table();
        table.fds.remove(&token);
        table.in_flight.remove(&token);
        drop(table);
        self.0.wake();
    }
    fn timeout_register(&self, deadline: Instant, token: Token) -> io::Result<Token> {
        self.0.table().timeouts.insert(token, deadline);
        self.0.wake();
        Ok(token)
    }
    fn timeout_modify(&self, token: &mut Token, deadline: Instant) -> io::Result<()> {
        self.0.table().timeouts.insert(*token, deadline);
        self.0.wake();
        Ok(())
    }
    fn timeout_deregister(&self, token: Token) {
        self.0.table().timeouts.remove(&token);
        self.0.wake();
    }
}

/// What the loop thread hands to the pool.
enum Report {
    Fd(Token, RawFd, Readiness),
    Timeout(Token),
}

/// The application's loop thread: poll, report, repeat, until stopped.
fn run_loop(app: &AppLoop, reports: &mpsc::Sender<Report>) -> io::Result<()> {
    while !app.stop.load(Ordering::SeqCst) {
        let (mut pfds, tokens, next) = {
            let table = app.table();
            let live = table
                .fds
                .iter()
                .filter(|(t, _)| !table.in_flight.contains(*t));
            let tokens: Vec<Token> = live.clone().map(|(t, _)| *t).collect();
            let mut pfds = vec![libc::pollfd {
                fd: app.wake_rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            pfds.extend(live.map(|(_, &(fd, interest))| libc::pollfd {
                fd,
                events: interest.as_poll_events(),
                revents: 0,
            }));
            (pfds, tokens, table.timeouts.values().min().copied())
        };
        let wait = next.map(|d| d.saturating_duration_since(Instant::now()));
        // SAFETY: `pfds` is a valid, exclusively borrowed array of pollfds.
        let n = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                evnexus::poll_timeout_ms(wait),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        while (&app.wake_rx).read(&mut [0u8; 64]).is_ok() {}
        let mut table = app.table();
        for (pfd, &token) in pfds[1..].iter().zip(&tokens) {
            if pfd.revents != 0 && table.fds.contains_key(&token) {
                table.in_flight.insert(token);
                let readiness = Readiness::from_poll_revents(pfd.revents);
                let _ = reports.send(Report::Fd(token, pfd.fd, readiness));
            }
        }
        let now = Instant::now();
        let due: Vec<Token> = table
            .timeouts
            .iter()
            .filter(|(_, &d)| d <= now)
            .map(|(&t, _)| t)
            .collect();
        for token in due {
            // An occurred timeout is over for the application.
            table.timeouts.remove(&token);
            let _ = reports.send(Report::Timeout(token));
        }
    }
    Ok(())
}

/// How the pool's reports went, counted by the delivery threads.
#[derive(Default)]
struct Tally {
    dispatched: AtomicU64,
    deferred: AtomicU64,
    stale: AtomicU64,
}

/// A delivery thread: takes batches of reports from the shared queue until
/// it closes, and hands each batch to the engine through the handle.
fn deliver(app: &AppLoop, queue: &Mutex<mpsc::Receiver<Report>>, tally: &Tally) {
    let mut batch = Vec::new();
    loop {
        {
            let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            match queue.recv() {
                Ok(first) => batch.push(first),
                Err(_) => return,
            }
            batch.extend(queue.try_iter().take(63));
        }
        // One reference for the batch. `None`: the engine is gone, and
        // every registration with it.
        let Some(engine) = app.engine.engine() else {
            return;
        };
        for report in batch.drain(..) {
            let outcome = match report {
                Report::Fd(token, fd, readiness) => {
                    let outcome = engine.occurred_fd(token, fd, readiness);
                    app.table().in_flight.remove(&token);
                    app.wake();
                    outcome
                }
                Report::Timeout(token) => engine.occurred_timeout(token),
            };
            // Relaxed: counts, read after the threads are joined.
            let counter = match outcome {
                Ok(Occurred::Dispatched) => &tally.dispatched,
                Ok(Occurred::Deferred) => &tally.deferred,
                Ok(Occurred::Stale(_) | Occurred::Suppressed) => &tally.stale,
                Err(e) => {
                    eprintln!("hooks_pool: a callback failed: {e}");
                    &tally.stale
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Summary {
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub timers_fired: u64,
    pub dispatched: u64,
    pub deferred: u64,
    pub stale: u64,
}

/// Runs `domains` channels of `messages` messages each through an
/// application loop with `threads` delivery threads; stops when every byte
/// has been read or `limit` has passed.
pub fn run(
    domains: usize,
    messages: usize,
    threads: usize,
    limit: Duration,
) -> io::Result<Summary> {
    let (engine, app) = AppLoop::with_engine()?;
    let read = Arc::new(AtomicU64::new(0));
    let fired = Arc::new(AtomicU64::new(0));
    let mut guests = Vec::new();
    let mut watches: Vec<OwnedFdWatch<UnixStream>> = Vec::new();
    for d in 0..domains {
        let (toolstack_end, guest_end) = UnixStream::pair()?;
        toolstack_end.set_nonblocking(true)?;
        let read = Arc::clone(&read);
        let watch = engine
            .register_owned(toolstack_end, Interest::READABLE, move |_, mut s| {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    // Relaxed: a count, compared once the work is done.
                    read.fetch_add(n as u64, Ordering::Relaxed);
                }
            })
            .map_err(io::Error::other)?;
        watches.push(watch);
        guests.push(guest_end);
        let fired = Arc::clone(&fired);
        engine
            .timer_after_detached(Duration::from_millis(d as u64), move |_| {
                // Relaxed: a count, read after the threads are joined.
                fired.fetch_add(1, Ordering::Relaxed);
            })
            .map_err(io::Error::other)?;
    }
    let total = (domains * messages * MESSAGE.len()) as u64;
    let (tx, rx) = mpsc::channel();
    let queue = Mutex::new(rx);
    let tally = Tally::default();
    let (finished, written) = thread::scope(|s| -> io::Result<(bool, u64)> {
        let looper = s.spawn({
            let app = &app;
            // The loop thread holds the only sender: the queue closes, and
            // the delivery threads stop, when it ends.
            move || run_loop(app, &tx)
        });
        for _ in 0..threads {
            s.spawn(|| deliver(&app, &queue, &tally));
        }
        let feeder = s.spawn(move || -> io::Result<u64> {
            let mut written = 0;
            for _ in 0..messages {
                for g in &mut guests {
                    g.write_all(MESSAGE)?;
                    written += MESSAGE.len() as u64;
                }
            }
            Ok(written)
        });
        let end = Instant::now() + limit;
        // Relaxed: the counters publish nothing but their own values.
        let done = || {
            read.load(Ordering::Relaxed) == total && fired.load(Ordering::Relaxed) == domains as u64
        };
        while !done() && Instant::now() < end {
            thread::sleep(Duration::from_millis(1));
        }
        let finished = done();
        app.stop.store(true, Ordering::SeqCst);
        app.wake();
        let looped = looper.join().expect("the loop thread panicked");
        // Ends the watches and closes the engine's ends: a feeder still
        // writing (after a timeout) fails instead of blocking.
        drop(watches);
        let fed = feeder.join().expect("the feeder panicked");
        looped?;
        Ok((finished, if finished { fed? } else { 0 }))
    })?;
    if !finished {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("not every byte was read within {limit:?}"),
        ));
    }
    // Relaxed: every thread that counted has been joined.
    Ok(Summary {
        bytes_written: written,
        bytes_read: read.load(Ordering::Relaxed),
        timers_fired: fired.load(Ordering::Relaxed),
        dispatched: tally.dispatched.load(Ordering::Relaxed),
        deferred: tally.deferred.load(Ordering::Relaxed),
        stale: tally.stale.load(Ordering::Relaxed),
    })
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let domains = args.next().flatten().unwrap_or(16);
    let messages = args.next().flatten().unwrap_or(1000);
    let threads = args.next().flatten().unwrap_or(4).max(1);
    match run(domains, messages, threads, Duration::from_secs(60)) {
        Ok(s) => {
            println!(
                "{domains} domains x {messages} messages through {threads} delivery threads: \
                 {} / {} bytes read, {} / {domains} timers fired; reports: {} dispatched, \
                 {} folded into a run in progress, {} stale",
                s.bytes_read, s.bytes_written, s.timers_fired, s.dispatched, s.deferred, s.stale
            );
            if s.bytes_read == s.bytes_written && s.timers_fired == domains as u64 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("hooks_pool: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `evnexus`: the load simulation.
//!
//! A simulated hypervisor toolstack: N "domains", each a socketpair channel
//! (its end owned by the engine while watched: [`Engine::register_owned`]),
//! a heartbeat timer and a keepalive (a periodic timer:
//! [`Engine::timer_every_at`]), registered with an [`Engine`]. `--backend`
//! says who carries the registrations:
//!
//! - **uring** (default) and **epoll**: the engine's own built-in loop,
//!   driven by a **loop thread** in [`Engine::run`] until [`Engine::stop`].
//!   Every other domain's watch is edge-triggered (a multishot poll on the
//!   ring, `EPOLLET` on epoll), the rest level-triggered, so that the
//!   ring's own operations are exercised too (`--ring-entries` shrinks it);
//! - **hooks**: *this program's own* event loop, through [`OsEventHooks`]
//!   (the libxl-in-libvirt situation). The **application loop** runs
//!   `ppoll()` over the fds its hooks were given (plus an eventfd to wake
//!   it) with a timeout from the earliest registered deadline. Each ready
//!   fd and each due timeout becomes a delivery item; the batch is shuffled
//!   and spread over the delivery threads, some items are held back (late
//!   delivery), some are delivered twice, and bad reports are mixed in.
//!
//! The other threads:
//!
//! - **delivery threads** (`--threads`) call `occurred_fd` /
//!   `occurred_timeout` and record what became of each report. With hooks
//!   they carry the genuine events. With a built-in loop the loop carries
//!   those, and an **injector thread** feeds the delivery threads a stream
//!   of reports that race the loop: replays of dead tokens, forged tokens,
//!   live fd tokens with another fd, live tokens of the wrong kind (all
//!   must be rejected), and duplicate reports of live fd watches with the
//!   right fd (legitimate: they run the callback on the delivery thread, or
//!   are folded into a rerun of the loop's run, or find the watch ended
//!   meanwhile);
//! - a **traffic thread** writes small messages to random domains at a
//!   steady rate (`--rate`); the fd callbacks drain their channel;
//! - a **churn thread** deregisters and re-registers watches on the same fd
//!   (same slot, new generation: the classic stale race), replaces whole
//!   channels (the fd number is closed and reused), changes interests,
//!   cancels, re-creates and resets heartbeat timers (and leaves some of
//!   the timers it arms or resets alone until they fire: sentinels, which
//!   show a lost timer); heartbeat callbacks re-arm themselves from inside
//!   the callback. It also cancels and replaces keepalives, racing their
//!   runs; some keepalives stop themselves from their callback;
//! - the **main thread** turns a control loop of its own ([`run::ControlLoop`]:
//!   a second engine with a watch of SIGTERM, blocked here before any
//!   thread starts): a SIGTERM ends the load phase early, and the run goes
//!   on to drain, tear down, check and report as usual.
//!
//! Every check is real, i.e. it can fail: a callback that runs after its
//! registration's `deregister`/`cancel` returned, or that sees another
//! registration's token, fd or deadline, or that runs concurrently with
//! itself; a token handed out twice; a timer that fires twice, fires
//! although `cancel` said it would not, or (built-in loop, any timer;
//! hooks, a timer never reset) fires before its deadline; a keepalive run
//! off its schedule (drift), early, out of order, or after its cancel
//! returned; a channel's end not given back open by its watch; a bad report that
//! is dispatched; a byte written but never read, a live watch's genuine
//! report rejected, or a timer that never fires (lost events); the
//! engine's statistics disagreeing with what the threads saw. The last line is `misdeliveries: N`; the exit status is
//! 0 only if every check passed.
//!
//! Where things are: [`cli`] (options), [`domains`] with their [`channels`]
//! (fd watches), [`heartbeats`] (one-shot timers) and [`keepalive`]
//! (periodic timers), the feeders ([`app_loop`] for
//! hooks; [`engine_loop`] and [`injector`] for the built-in loops),
//! [`delivery`], the load threads ([`traffic`], [`churn`]), what is checked
//! ([`check`], [`shared`]), the run's phases ([`run`]), the engine's counts
//! against what the threads saw ([`accounting`]), the summary ([`report`]),
//! and memory ([`rss`]); [`rng`] and [`hist`] are small tools.

mod accounting;
mod app_loop;
mod channels;
mod check;
mod churn;
mod cli;
mod delivery;
mod domains;
mod engine_loop;
mod heartbeats;
mod hist;
mod injector;
mod items;
mod keepalive;
mod report;
mod rng;
mod rss;
mod run;
mod shared;
mod traffic;

use std::io;
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard};

/// Raises the soft fd limit so that `domains` channels fit.
fn raise_fd_limit(domains: usize) -> Result<(), String> {
    // Two fds per channel, a spare channel during a channel swap, the
    // eventfd, stdio and some slack.
    let needed = (2 * domains + 64) as libc::rlim_t;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()));
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max < needed {
        return Err(format!(
            "--domains {domains} needs about {needed} file descriptors, the hard limit is {}",
            lim.rlim_max
        ));
    }
    lim.rlim_cur = needed;
    // SAFETY: setrlimit reads one valid `rlimit`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!("setrlimit: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// Locks `m`; a panicked holder's data is still good for counting.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn main() -> ExitCode {
    let cfg = match cli::parse_args(std::env::args_os().skip(1).collect()) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("evnexus: {msg}\n(try --help)");
            return ExitCode::from(2);
        }
    };
    if let Err(msg) = raise_fd_limit(cfg.domains) {
        eprintln!("evnexus: {msg}");
        return ExitCode::from(2);
    }
    // SIGTERM ends the load phase early, through a signal watch (see
    // `run::ControlLoop`): blocked here, before any thread exists, so that
    // every thread inherits the mask and none takes the signal instead.
    if let Err(e) = evnexus::block_signals(&[libc::SIGTERM]) {
        eprintln!("evnexus: blocking SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    match run::run(cfg) {
        Ok(report) => {
            let ok = report::print_report(&report);
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("evnexus: {e}");
            ExitCode::FAILURE
        }
    }
}

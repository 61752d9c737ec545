//! Signal watches (`Engine::watch_signal`) with real signals sent to the
//! process, on every backend: hooks, io_uring, epoll and the poll loop.
//!
//! A process-directed signal goes to any thread that does not block it, so
//! every thread of this test process must block the signals it sends. The
//! libtest harness starts threads of its own before any test runs, so this
//! file has its own small harness (`harness = false` in Cargo.toml): `main`
//! blocks every signal the tests use before anything else, then runs the
//! tests one after another on the main thread. Each test uses its own
//! signals, and checks that none is left pending when it ends.
//!
//! `main` also runs the `daemon` example when asked to (a child process of
//! this binary; see `daemon_example_stops_cleanly_on_sigterm`).

mod common;
#[allow(dead_code)]
#[path = "../examples/daemon.rs"]
mod daemon;
#[path = "common/drive.rs"]
mod drive;

use common::{on_backends, Rig};
use drive::{try_turn, turn, turn_until};
use evnexus::{block_signals, BackendKind, Engine, Error};
use std::io::{self, BufRead, BufReader};
use std::panic::catch_unwind;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(5);

/// Every backend a signalfd can be carried by.
const ALL: [BackendKind; 4] = [
    BackendKind::Hooks,
    BackendKind::Uring,
    BackendKind::Epoll,
    BackendKind::Poll,
];

/// Real-time signal `n` of the tests (each test its own).
fn rt(n: i32) -> i32 {
    libc::SIGRTMIN() + n
}

/// Every signal a test sends: blocked by `main` before anything else.
fn test_signals() -> Vec<i32> {
    let mut s: Vec<i32> = (1..=8).map(rt).collect();
    s.push(libc::SIGUSR1);
    s
}

/// Sends `signal` to this process (process-directed, as `kill` does).
fn kill_self(signal: i32) {
    // SAFETY: kill takes plain integers; every thread blocks `signal`.
    assert_eq!(unsafe { libc::kill(libc::getpid(), signal) }, 0);
}

/// Sends `signal` with `value` to this process (`sigqueue`).
fn queue_self(signal: i32, value: i32) {
    let sv = libc::sigval {
        sival_ptr: value as usize as *mut libc::c_void,
    };
    // SAFETY: sigqueue takes plain values; every thread blocks `signal`.
    assert_eq!(unsafe { libc::sigqueue(libc::getpid(), signal, sv) }, 0);
}

/// Whether `signal` is pending for this process or thread.
fn pending(signal: i32) -> bool {
    // SAFETY: a zeroed sigset_t is valid to fill; sigpending fills it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; sigismember reads the filled set.
    unsafe {
        assert_eq!(libc::sigpending(&mut set), 0);
        libc::sigismember(&set, signal) == 1
    }
}

/// What a watch's callback saw: (signal, code, pid, uid, value).
type Seen = Arc<Mutex<Vec<(i32, i32, u32, u32, i32)>>>;

fn recorder(seen: &Seen) -> impl FnMut(&evnexus::SignalEvent<'_>) + Send + 'static {
    let seen = Arc::clone(seen);
    move |ev| {
        seen.lock()
            .unwrap()
            .push((ev.signal(), ev.code(), ev.pid(), ev.uid(), ev.value()))
    }
}

fn my_pid() -> u32 {
    std::process::id()
}

fn my_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

fn on_every_backend(test: impl Fn(&Rig)) {
    on_backends(&ALL, |b| b, |rig| test(&rig));
}

fn signal_is_delivered_once_with_its_siginfo() {
    let sig = rt(1);
    on_every_backend(|rig| {
        let seen = Seen::default();
        let watch = rig.engine.watch_signal(sig, recorder(&seen)).unwrap();
        assert_eq!(watch.signal(), sig);
        kill_self(sig);
        turn_until(rig, "the signal", LIMIT, || {
            !seen.lock().unwrap().is_empty()
        });
        for _ in 0..3 {
            turn(rig, Duration::from_millis(5));
        }
        assert_eq!(
            *seen.lock().unwrap(),
            [(sig, libc::SI_USER, my_pid(), my_uid(), 0)]
        );
        assert!(!pending(sig));
    });
}

fn each_signal_goes_to_its_own_watch() {
    let (a, b) = (rt(2), rt(3));
    on_every_backend(|rig| {
        let (seen_a, seen_b) = (Seen::default(), Seen::default());
        let _wa = rig.engine.watch_signal(a, recorder(&seen_a)).unwrap();
        let _wb = rig.engine.watch_signal(b, recorder(&seen_b)).unwrap();
        queue_self(a, 20);
        queue_self(b, 30);
        queue_self(a, 21);
        turn_until(rig, "three signals", LIMIT, || {
            seen_a.lock().unwrap().len() + seen_b.lock().unwrap().len() == 3
        });
        let values = |s: &Seen| -> Vec<(i32, i32, i32)> {
            s.lock()
                .unwrap()
                .iter()
                .map(|&(sig, code, _, _, v)| (sig, code, v))
                .collect()
        };
        assert_eq!(
            values(&seen_a),
            [(a, libc::SI_QUEUE, 20), (a, libc::SI_QUEUE, 21)]
        );
        assert_eq!(values(&seen_b), [(b, libc::SI_QUEUE, 30)]);
        assert!(!pending(a) && !pending(b));
    });
}

fn signals_arriving_during_a_callback_are_delivered_by_that_same_dispatch() {
    // The callback, on the first signal, sends two more: both arrive while
    // it runs. Reading until the signalfd is empty delivers them in the
    // same dispatch of the fd; one read per dispatch would take three.
    let sig = rt(4);
    on_every_backend(|rig| {
        let values = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&values);
        let _w = rig
            .engine
            .watch_signal(sig, move |ev| {
                log.lock().unwrap().push(ev.value());
                if ev.value() == 1 {
                    queue_self(sig, 2);
                    queue_self(sig, 3);
                }
            })
            .unwrap();
        queue_self(sig, 1);
        let before = rig.engine.stats().dispatched;
        turn_until(rig, "the first signal", LIMIT, || {
            !values.lock().unwrap().is_empty()
        });
        assert_eq!(*values.lock().unwrap(), [1, 2, 3], "none lost, in order");
        assert_eq!(
            rig.engine.stats().dispatched - before,
            1,
            "one dispatch of the signalfd delivered all three"
        );
        assert!(!pending(sig));
    });
}

fn standard_signals_sent_before_the_watch_reads_coalesce_into_one() {
    on_every_backend(|rig| {
        let seen = Seen::default();
        let _w = rig
            .engine
            .watch_signal(libc::SIGUSR1, recorder(&seen))
            .unwrap();
        kill_self(libc::SIGUSR1);
        kill_self(libc::SIGUSR1);
        turn_until(rig, "SIGUSR1", LIMIT, || !seen.lock().unwrap().is_empty());
        for _ in 0..3 {
            turn(rig, Duration::from_millis(5));
        }
        assert_eq!(seen.lock().unwrap().len(), 1, "the kernel keeps one");
        assert!(!pending(libc::SIGUSR1));
    });
}

fn second_watch_of_a_signal_is_refused_until_the_first_is_gone() {
    let sig = rt(5);
    on_every_backend(|rig| {
        let other = Engine::builder()
            .backend(BackendKind::Epoll)
            .build()
            .unwrap();
        let first = rig.engine.watch_signal(sig, |_| {}).unwrap();
        for engine in [&rig.engine, &other] {
            match engine.watch_signal(sig, |_| {}) {
                Err(Error::Backend(e)) => assert_eq!(e.kind(), io::ErrorKind::AlreadyExists),
                r => panic!("a second watch of one signal: {r:?}"),
            }
        }
        let fds_before = open_fds();
        assert!(first.deregister());
        assert_eq!(open_fds(), fds_before - 1, "the signalfd was closed");
        // Free again: a signal sent meanwhile waits for the next watch.
        kill_self(sig);
        let seen = Seen::default();
        let _again = other.watch_signal(sig, recorder(&seen)).unwrap();
        while seen.lock().unwrap().is_empty() {
            other.run_once(Some(LIMIT)).unwrap();
        }
        assert_eq!(seen.lock().unwrap()[0].0, sig);
    });
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn watch_of_a_signal_not_blocked_in_the_calling_thread_is_refused() {
    let sig = rt(6);
    on_every_backend(|rig| {
        std::thread::scope(|s| {
            s.spawn(|| {
                // This thread alone unblocks `sig` (which nobody sends).
                // SAFETY: a zeroed sigset_t is valid; the calls fill it.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, sig);
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                }
                match rig.engine.watch_signal(sig, |_| {}) {
                    Err(Error::Backend(e)) => {
                        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                        assert!(e.to_string().contains("not blocked"), "{e}");
                    }
                    r => panic!("a watch of an unblocked signal: {r:?}"),
                }
            });
        });
        // The refusal claimed nothing: the signal can be watched here.
        rig.engine.watch_signal(sig, |_| {}).unwrap();
    });
}

fn signals_that_cannot_be_watched_are_errors_not_panics() {
    let engine = Engine::builder()
        .backend(BackendKind::Epoll)
        .build()
        .unwrap();
    let reserved = 32; // kept by the C library below SIGRTMIN()
    for sig in [
        0,
        -1,
        65,
        1000,
        i32::MIN,
        libc::SIGKILL,
        libc::SIGSTOP,
        reserved,
    ] {
        for r in [
            engine.watch_signal(sig, |_| {}).map(drop),
            block_signals(&[sig]),
        ] {
            match r {
                Err(Error::Backend(e)) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "signal {sig}")
                }
                r => panic!("signal {sig}: {r:?}"),
            }
        }
    }
}

fn a_callback_that_panics_ends_the_watch_and_frees_its_signal() {
    let sig = rt(7);
    on_every_backend(|rig| {
        let w = rig.engine.watch_signal(sig, |_| panic!("planted")).unwrap();
        kill_self(sig);
        let end = Instant::now() + LIMIT;
        while w.is_live() {
            assert!(Instant::now() < end, "the signal never came");
            if let Err(e) = try_turn(rig, Duration::from_millis(20)) {
                assert!(matches!(e, Error::CallbackPanicked(_)), "{e}");
            }
        }
        drop(w);
        rig.engine.watch_signal(sig, |_| {}).unwrap();
        assert!(!pending(sig));
    });
}

/// The environment variable that makes this binary run an example.
const RUN_EXAMPLE: &str = "EVNEXUS_TEST_RUN_EXAMPLE";

fn daemon_example_stops_cleanly_on_sigterm() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(RUN_EXAMPLE, "daemon")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = || lines.next().expect("the daemon ended early").unwrap();
    assert!(next_line().starts_with("ready: pid"));
    // SAFETY: kill takes plain integers; `pid` is our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert_eq!(
        next_line(),
        format!("SIGHUP from pid {}: reloading", my_pid())
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(
        next_line(),
        format!("SIGTERM from pid {} (uid {}): stopping", my_pid(), my_uid())
    );
    assert!(next_line().starts_with("stopped cleanly after"));
    let end = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "the daemon exited with {status}");
}

/// A test: its name and its function.
type Test = (&'static str, fn());

const TESTS: &[Test] = &[
    (
        "signal_is_delivered_once_with_its_siginfo",
        signal_is_delivered_once_with_its_siginfo,
    ),
    (
        "each_signal_goes_to_its_own_watch",
        each_signal_goes_to_its_own_watch,
    ),
    (
        "signals_arriving_during_a_callback_are_delivered_by_that_same_dispatch",
        signals_arriving_during_a_callback_are_delivered_by_that_same_dispatch,
    ),
    (
        "standard_signals_sent_before_the_watch_reads_coalesce_into_one",
        standard_signals_sent_before_the_watch_reads_coalesce_into_one,
    ),
    (
        "second_watch_of_a_signal_is_refused_until_the_first_is_gone",
        second_watch_of_a_signal_is_refused_until_the_first_is_gone,
    ),
    (
        "watch_of_a_signal_not_blocked_in_the_calling_thread_is_refused",
        watch_of_a_signal_not_blocked_in_the_calling_thread_is_refused,
    ),
    (
        "signals_that_cannot_be_watched_are_errors_not_panics",
        signals_that_cannot_be_watched_are_errors_not_panics,
    ),
    (
        "a_callback_that_panics_ends_the_watch_and_frees_its_signal",
        a_callback_that_panics_ends_the_watch_and_frees_its_signal,
    ),
    (
        "daemon_example_stops_cleanly_on_sigterm",
        daemon_example_stops_cleanly_on_sigterm,
    ),
];

/// The tests to run, from libtest's command line as far as this harness
/// needs it: `--list` (prints the names; `None`: nothing to run),
/// `--exact`, `--skip NAME`, and name filters; other flags are accepted
/// and ignored.
fn selected(args: &[String]) -> Option<Vec<Test>> {
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let (mut exact, mut list) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => list = true,
            "--exact" => exact = true,
            "--skip" => skips.extend(it.next().cloned()),
            "--test-threads" | "--color" | "--format" | "--logfile" | "-Z" => {
                it.next();
            }
            flag if flag.starts_with('-') => {}
            name => filters.push(name.to_owned()),
        }
    }
    let matches = |name: &str, f: &String| {
        if exact {
            name == f
        } else {
            name.contains(f.as_str())
        }
    };
    let chosen: Vec<_> = TESTS
        .iter()
        .copied()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|s| name.contains(s.as_str())))
        .collect();
    if list {
        for (name, _) in &chosen {
            println!("{name}: test");
        }
        return None;
    }
    Some(chosen)
}

fn main() -> ExitCode {
    if let Ok(example) = std::env::var(RUN_EXAMPLE) {
        assert_eq!(example, "daemon", "no such example here");
        return daemon::main();
    }
    // Before anything else, and before any thread exists.
    block_signals(&test_signals()).expect("blocking the test signals");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(tests) = selected(&args) else {
        return ExitCode::SUCCESS;
    };
    println!("\nrunning {} tests", tests.len());
    let mut failed = Vec::new();
    for (name, test) in &tests {
        let outcome = catch_unwind(test);
        println!(
            "test {name} ... {}",
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        tests.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        for name in &failed {
            println!("    {name}");
        }
        ExitCode::from(101)
    }
}

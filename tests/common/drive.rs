//! Driving a rig's loop for real events: the engine's own loop, or (on the
//! hooks backend) the test playing the application's loop. Included with
//! `#[path]` by the tests that need it, beside `common`.

use crate::common::Rig;
use evnexus::{BackendKind, PollSet, Readiness};
use std::time::{Duration, Instant};

/// One turn of whatever loop carries `rig`'s registrations, waiting at
/// most `timeout` for something to happen; returns how many callbacks ran.
///
/// - Built-in loops: `run_once`.
/// - Poll loop: `poll_once`.
/// - Hooks: the application's part, done here: `poll()` over the fds the
///   hooks were given, `occurred_fd` for each ready one, `occurred_timeout`
///   for each timeout that is due (and is then over for the application).
pub fn turn(rig: &Rig, timeout: Duration) -> usize {
    try_turn(rig, timeout).unwrap()
}

/// [`turn`], returning the error of a report or loop turn (a callback
/// that panicked) instead of panicking.
pub fn try_turn(rig: &Rig, timeout: Duration) -> evnexus::Result<usize> {
    match rig.kind {
        BackendKind::Uring | BackendKind::Epoll => rig.engine.run_once(Some(timeout)),
        BackendKind::Poll => rig.engine.poll_once(&mut PollSet::new(), Some(timeout)),
        BackendKind::Hooks => hooks_turn(rig, timeout),
        other => panic!("no way to drive the {other:?} backend"),
    }
}

fn hooks_turn(rig: &Rig, timeout: Duration) -> evnexus::Result<usize> {
    let rec = rig.rec.as_ref().expect("a hooks rig has a recorder");
    let fds: Vec<_> = rec
        .fds
        .lock()
        .unwrap()
        .iter()
        .map(|(&token, &(fd, interest))| (token, fd, interest))
        .collect();
    let next_deadline = rec.timeouts.lock().unwrap().values().min().copied();
    let now = Instant::now();
    let wait = match next_deadline {
        Some(d) => timeout.min(d.saturating_duration_since(now)),
        None => timeout,
    };
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(_, fd, interest)| libc::pollfd {
            fd,
            events: interest.as_poll_events(),
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a valid, exclusively borrowed array of pollfds.
    let n = unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            evnexus::poll_timeout_ms(Some(wait)),
        )
    };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    let mut ran = 0;
    let mut first_error = None;
    let mut count = |r: evnexus::Result<evnexus::Occurred>| match r {
        Ok(evnexus::Occurred::Dispatched) => ran += 1,
        Ok(_) => {}
        Err(e) => {
            first_error.get_or_insert(e);
        }
    };
    for (pfd, &(token, fd, _)) in pfds.iter().zip(&fds) {
        if pfd.revents != 0 {
            let r = Readiness::from_poll_revents(pfd.revents);
            count(rig.engine.occurred_fd(token, fd, r));
        }
    }
    let now = Instant::now();
    let due: Vec<_> = {
        let mut timeouts = rec.timeouts.lock().unwrap();
        let due: Vec<_> = timeouts
            .iter()
            .filter(|(_, &d)| d <= now)
            .map(|(&t, _)| t)
            .collect();
        let mut occurred = rec.occurred.lock().unwrap();
        for t in &due {
            timeouts.remove(t);
            occurred.insert(*t);
        }
        due
    };
    for token in due {
        count(rig.engine.occurred_timeout(token));
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ran),
    }
}

/// Turns `rig`'s loop until `done()` or `limit` has passed; panics with
/// `what` on the latter.
pub fn turn_until(rig: &Rig, what: &str, limit: Duration, done: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < end,
            "on the {:?} backend: {what} did not happen within {limit:?}",
            rig.kind
        );
        turn(rig, Duration::from_millis(20));
    }
}

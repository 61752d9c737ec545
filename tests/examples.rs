//! The examples' logic, run as tests: each example file is compiled here
//! as a module (its `main` unused), and its work function is called with
//! small parameters and checked. (`daemon`, which needs a process of its
//! own for its signal mask, is run from `tests/signals.rs`.)

#[allow(dead_code)]
#[path = "../examples/heartbeat.rs"]
mod heartbeat;
#[allow(dead_code)]
#[path = "../examples/hooks_pool.rs"]
mod hooks_pool;
#[allow(dead_code)]
#[path = "../examples/supervise.rs"]
mod supervise;

use evnexus::{BackendKind, Engine};
use std::time::Duration;

#[test]
fn hooks_pool_example_delivers_every_byte_and_timer_through_its_delivery_threads() {
    let s = hooks_pool::run(8, 500, 4, Duration::from_secs(30)).unwrap();
    assert_eq!(s.bytes_written, 8 * 500 * 16);
    assert_eq!(s.bytes_read, s.bytes_written, "{s:?}");
    assert_eq!(s.timers_fired, 8, "{s:?}");
    assert!(s.dispatched >= 8, "{s:?}");
}

#[test]
fn supervise_example_reports_each_exit_status_and_restarts_failures() {
    let engine = Engine::new().unwrap();
    let outcomes =
        supervise::supervise(&engine, &supervise::demo_specs(), Duration::from_secs(30)).unwrap();
    let got: Vec<(&str, u32, String)> = outcomes
        .iter()
        .map(|o| (o.name, o.runs, supervise::describe(&o.status)))
        .collect();
    assert_eq!(
        got,
        [
            ("ok", 1, "exited with code 0".to_owned()),
            ("flaky", 3, "exited with code 3".to_owned()),
            ("killed", 2, "killed by signal 9".to_owned()),
            ("slow", 1, "exited with code 0".to_owned()),
        ]
    );
}

#[test]
fn heartbeat_example_beats_on_schedule_without_drift_on_both_loops() {
    for kind in [BackendKind::Uring, BackendKind::Epoll] {
        let engine = Engine::builder().backend(kind).build().unwrap();
        let period = Duration::from_millis(2);
        let (start, beats) = heartbeat::heartbeat(&engine, period, 100).unwrap();
        // Every period beat, or was skipped and said so.
        let mut next = 0;
        for beat in &beats {
            assert_eq!(beat.index, next + beat.missed, "on {kind:?}");
            next = beat.index + 1;
            let n = beat.index as u32 + 1;
            assert_eq!(
                beat.deadline,
                start + period * n,
                "beat {n} drifted on {kind:?}"
            );
            assert!(beat.ran_at >= beat.deadline, "beat {n} early on {kind:?}");
        }
        assert_eq!(next, 100, "on {kind:?}");
    }
}

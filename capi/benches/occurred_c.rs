//! The cost of the C ABI on the event path: `evnexus_occurred_fd` called
//! through `libevnexus.so` as a C program calls it (an indirect call into
//! the shared library, resolved here with `dlopen`/`dlsym`), beside the
//! Rust call it wraps, `Engine::occurred_fd`, in the same run.
//!
//! Group `capi`; ids `<impl>/<op>/1t` with `<impl>` `evnexus` (the Rust
//! call) and `c-abi` (the C call), so `perf/report.py` sets them side by
//! side: its ratio `c-abi / evnexus` is the C path's cost relative to Rust
//! (1.10 or less: within 10%). `<op>`: `fd_live` (a readable socket pair
//! end, its watch live, a no-op callback: a C function for the C engine, a
//! Rust closure for the Rust one) and `fd_stale` (the watch deregistered).
//! Both engines are poll-loop engines (no backend work on a report), one
//! thread.

#[path = "../../benches/support/mod.rs"]
mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evnexus::{BackendKind, Engine, Interest, Occurred, Readiness, Token};
use std::ffi::{c_char, c_int, c_short, c_void, CString};
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use support::{readable_pair, timed};

/// `EVNEXUS_BACKEND_POLL` and `EVNEXUS_DISPATCHED` / `EVNEXUS_STALE` of
/// `evnexus.h`.
const BACKEND_POLL: c_int = 3;
const DISPATCHED: c_int = 0;
const STALE: c_int = 3;

type FdFn = unsafe extern "C" fn(*mut c_void, u64, c_int, c_short, *mut c_void);

/// The functions of `libevnexus.so` the bench calls.
struct CApi {
    new: unsafe extern "C" fn(*mut *mut c_void, c_int) -> c_int,
    free: unsafe extern "C" fn(*mut c_void),
    register_fd: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        c_short,
        u32,
        Option<FdFn>,
        *mut c_void,
        Option<unsafe extern "C" fn(*mut c_void)>,
        *mut u64,
    ) -> c_int,
    deregister: unsafe extern "C" fn(*mut c_void, u64) -> c_int,
    occurred_fd: unsafe extern "C" fn(*mut c_void, u64, c_int, c_short) -> c_int,
}

/// Builds `libevnexus.so` in this bench's profile (cargo builds a
/// `cdylib`-only library for no bench of its own package) and returns it.
fn build_library() -> PathBuf {
    let exe = std::env::current_exe().expect("bench executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--lib", "-p", "evnexus-capi", "--target-dir"])
        .arg(dir.parent().expect("target dir"))
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.ends_with("release") {
        cargo.arg("--release");
    }
    assert!(
        cargo.status().expect("run cargo").success(),
        "cargo build of libevnexus"
    );
    dir.join("libevnexus.so")
}

fn symbol<T: Copy>(lib: *mut c_void, name: &str) -> T {
    let cname = CString::new(name).unwrap();
    // SAFETY: `lib` is a handle from dlopen; `cname` is NUL-terminated.
    let ptr = unsafe { libc::dlsym(lib, cname.as_ptr()) };
    assert!(!ptr.is_null(), "{name} not found in libevnexus.so");
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: `T` is the function pointer type of `name` as declared in
    // evnexus.h, the same size as the pointer dlsym returned.
    unsafe { std::mem::transmute_copy(&ptr) }
}

impl CApi {
    fn load() -> CApi {
        let path = CString::new(build_library().into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; the library stays loaded for the
        // process's life (never dlclosed).
        let lib = unsafe { libc::dlopen(path.as_ptr() as *const c_char, libc::RTLD_NOW) };
        assert!(!lib.is_null(), "dlopen libevnexus.so");
        CApi {
            new: symbol(lib, "evnexus_new"),
            free: symbol(lib, "evnexus_free"),
            register_fd: symbol(lib, "evnexus_register_fd"),
            deregister: symbol(lib, "evnexus_deregister"),
            occurred_fd: symbol(lib, "evnexus_occurred_fd"),
        }
    }
}

unsafe extern "C" fn noop(_: *mut c_void, _: u64, _: c_int, _: c_short, _: *mut c_void) {}

fn capi(c: &mut Criterion) {
    let api = CApi::load();
    let (live_pair, stale_pair) = (readable_pair(), readable_pair());
    let (live_fd, stale_fd) = (live_pair.0.as_raw_fd(), stale_pair.0.as_raw_fd());

    // The C engine: one live watch, one deregistered.
    let mut ev = std::ptr::null_mut();
    let (mut c_live, mut c_stale) = (0u64, 0u64);
    // SAFETY: the C API as documented in evnexus.h: valid out-pointers,
    // open fds, a callback valid for the engine's life.
    unsafe {
        assert_eq!((api.new)(&mut ev, BACKEND_POLL), 0);
        let events = libc::POLLIN;
        assert_eq!(
            (api.register_fd)(ev, live_fd, events, 0, Some(noop), ev, None, &mut c_live),
            0
        );
        assert_eq!(
            (api.register_fd)(ev, stale_fd, events, 0, Some(noop), ev, None, &mut c_stale),
            0
        );
        assert_eq!((api.deregister)(ev, c_stale), 0);
        assert_eq!((api.occurred_fd)(ev, c_live, live_fd, events), DISPATCHED);
        assert_eq!((api.occurred_fd)(ev, c_stale, stale_fd, events), STALE);
    }

    // The Rust engine, the same way.
    let engine = Engine::builder()
        .backend(BackendKind::Poll)
        .build()
        .expect("poll engine");
    let live = engine
        .register_fd(live_fd, Interest::READABLE, |_| {})
        .expect("register");
    let stale = engine
        .register_fd(stale_fd, Interest::READABLE, |_| {})
        .expect("register");
    let (r_live, r_stale) = (live.token(), stale.token());
    assert!(stale.deregister());
    let report = |token: Token, fd| engine.occurred_fd(token, fd, Readiness::READABLE);
    assert_eq!(report(r_live, live_fd).unwrap(), Occurred::Dispatched);
    assert!(matches!(
        report(r_stale, stale_fd).unwrap(),
        Occurred::Stale(_)
    ));

    let barrier = Barrier::new(1);
    let mut group = c.benchmark_group("capi");
    for (op, r_token, c_token, fd) in [
        ("fd_live/1t", r_live, c_live, live_fd),
        ("fd_stale/1t", r_stale, c_stale, stale_fd),
    ] {
        group.bench_function(BenchmarkId::new("evnexus", op), |b| {
            b.iter_custom(|iters| {
                timed(&barrier, iters, |_| {
                    let r = engine.occurred_fd(black_box(r_token), fd, Readiness::READABLE);
                    black_box(matches!(r, Ok(Occurred::Dispatched)));
                })
            })
        });
        group.bench_function(BenchmarkId::new("c-abi", op), |b| {
            b.iter_custom(|iters| {
                timed(&barrier, iters, |_| {
                    // SAFETY: `ev` is live until `free` below.
                    let r = unsafe { (api.occurred_fd)(ev, black_box(c_token), fd, libc::POLLIN) };
                    black_box(r == DISPATCHED);
                })
            })
        });
    }
    group.finish();
    drop(live);
    // SAFETY: the last call on `ev`.
    unsafe { (api.free)(ev) };
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = capi
}
criterion_main!(benches);

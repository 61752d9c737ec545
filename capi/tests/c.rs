//! The C tests (`tests/c/*.c`) and the C examples (`examples/*.c`),
//! compiled with the system's `cc` against `include/evnexus.h` and linked
//! with the static library `libevnexus.a` that this package builds, then
//! run; a C test fails by aborting (`CHECK` in `tests/c/check.h`).
//!
//! `EVNEXUS_C_SANITIZE=1` compiles them with
//! `-fsanitize=address,undefined` (the Rust library itself is not
//! instrumented); `.ci/run` runs them both ways.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `target/<profile>`, where cargo puts `libevnexus.a`: this test binary
/// lives in `target/<profile>/deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Builds `libevnexus.a` (and `libevnexus.so`) in this test's profile:
/// cargo does not build a library that is only a `staticlib`/`cdylib` for
/// the integration tests of its own package.
fn build_library() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = profile_dir();
            let target = dir.parent().unwrap();
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .args(["build", "--lib", "-p", "evnexus-capi", "--target-dir"])
                .arg(target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => {}
                Some("release") => {
                    cargo.arg("--release");
                }
                Some(other) => {
                    cargo.args(["--profile", other]);
                }
                None => panic!("no profile directory"),
            }
            let status = cargo.status().expect("run cargo build");
            assert!(status.success(), "cargo build of libevnexus failed");
            dir.join("libevnexus.a")
        })
        .clone()
}

fn sanitize() -> bool {
    std::env::var_os("EVNEXUS_C_SANITIZE").is_some_and(|v| v != "0")
}

/// Compiles `source` (relative to this package) into an executable and
/// returns its path.
fn compile(source: &str, extra: &[&str]) -> PathBuf {
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = build_library();
    let stem = Path::new(source).file_stem().unwrap().to_str().unwrap();
    let suffix = if sanitize() { "-san" } else { "" };
    let out_dir = profile_dir().join("c-tests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(format!("{stem}{suffix}"));
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args([
        "-std=gnu11",
        "-O1",
        "-g",
        "-pthread",
        "-Wall",
        "-Wextra",
        "-Werror",
    ])
    .arg("-I")
    .arg(pkg.join("include"))
    .arg(pkg.join(source));
    if sanitize() {
        cc.args(["-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
            .arg("-fno-omit-frame-pointer");
    }
    cc.args(extra)
        .arg(&lib)
        .args(["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl"])
        .arg("-o")
        .arg(&exe);
    let output = cc.output().expect("run cc");
    assert!(
        output.status.success(),
        "cc {source} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// Runs `exe` with `args`, fails the test if it fails or takes more than
/// `limit`, and returns its standard output.
fn run(exe: &Path, args: &[&str], limit: Duration) -> String {
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args(args)
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the C test");
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{} ran past {limit:?}\n{}{}",
                exe.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{stdout}");
    stdout
}

fn c_test(name: &str) -> String {
    let exe = compile(&format!("tests/c/{name}.c"), &[]);
    run(&exe, &[], Duration::from_secs(120))
}

#[test]
fn fd_deregistration_race_rejects_the_stale_array_and_fires_the_new_watch_next_cycle() {
    c_test("fdderegrace");
}

#[test]
fn timeouts_deregistering_each_other_leave_nothing_registered() {
    c_test("timedereg");
}

#[test]
fn application_loop_in_c_with_late_duplicated_forged_reports_under_churn() {
    let out = c_test("apploop");
    assert!(out.contains("misdeliveries: 0"));
}

#[test]
fn forged_and_stale_tokens_from_several_threads_are_rejected_and_counted() {
    let out = c_test("tokens");
    assert!(out.contains("all counted"));
}

/// `pkg-config --cflags --libs glib-2.0`, split. Without GLib's headers
/// the GLib tests say so loudly and pass, unless `EVNEXUS_REQUIRE_GLIB=1`
/// (set by `.ci/run`, which installs them), where they fail.
fn glib_flags() -> Option<Vec<String>> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "glib-2.0"])
        .output();
    match out {
        Ok(out) if out.status.success() => Some(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        ),
        _ => {
            let required = std::env::var_os("EVNEXUS_REQUIRE_GLIB").is_some_and(|v| v != "0");
            assert!(
                !required,
                "EVNEXUS_REQUIRE_GLIB is set but pkg-config finds no glib-2.0 \
                 (apt-get install libglib2.0-dev pkg-config)"
            );
            eprintln!(
                "SKIPPED: GLib nesting test and example: pkg-config finds no glib-2.0 \
                 (apt-get install libglib2.0-dev pkg-config; .ci/run does)"
            );
            None
        }
    }
}

#[test]
fn builtin_loop_nested_in_a_running_glib_main_loop_dispatches_fds_and_timers() {
    let Some(glib) = glib_flags() else { return };
    let glib: Vec<&str> = glib.iter().map(String::as_str).collect();
    let exe = compile("tests/c/glib_nest.c", &glib);
    let out = run(&exe, &[], Duration::from_secs(60));
    assert!(out.contains("glib_nest (epoll): fd events and 4 timers"));
}

/// The examples are the documentation a C programmer reads: they build
/// and run.
#[test]
fn c_examples_build_and_run() {
    for example in ["quickstart", "hooks_loop", "poll_loop"] {
        let exe = compile(&format!("examples/{example}.c"), &[]);
        run(&exe, &[], Duration::from_secs(60));
    }
    if let Some(glib) = glib_flags() {
        let glib: Vec<&str> = glib.iter().map(String::as_str).collect();
        let exe = compile("examples/glib_nest.c", &glib);
        let out = run(&exe, &[], Duration::from_secs(60));
        assert!(out.contains("done: 1 ping(s) through GLib"));
    }
}

/// The names of the functions this crate exports (`pub extern "C" fn`).
fn exported_in_source() -> std::collections::BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for piece in text.split("pub extern \"C\" fn ").skip(1) {
            names.insert(
                piece
                    .chars()
                    .take_while(|c| *c == '_' || c.is_alphanumeric())
                    .collect(),
            );
        }
    }
    names
}

#[test]
fn shared_library_exports_the_c_api_and_nothing_else_under_its_soname() {
    let so = build_library().with_file_name("libevnexus.so");
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .expect("run nm");
    assert!(nm.status.success());
    let exported: std::collections::BTreeSet<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    assert_eq!(
        exported,
        exported_in_source(),
        "nm -D --defined-only {}",
        so.display()
    );
    assert!(exported.iter().all(|name| name.starts_with("evnexus_")));

    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/evnexus.h"))
            .unwrap();
    let declarations: Vec<&str> = header
        .lines()
        .filter(|line| !line.starts_with([' ', '/', '#']) && line.contains('('))
        .collect();
    for name in &exported {
        let call = format!("{name}(");
        assert!(
            declarations.iter().any(|line| line.contains(&call)),
            "{name} is not declared in evnexus.h"
        );
    }

    let dynamic = Command::new("readelf")
        .arg("-d")
        .arg(&so)
        .output()
        .expect("run readelf");
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        dynamic.contains("Library soname: [libevnexus.so.0]"),
        "{dynamic}"
    );
}

/// The README's C quick start is `examples/quickstart.c`, which the test
/// above builds and runs.
#[test]
fn readme_quick_start_is_the_example_that_runs() {
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(pkg.join("../README.md")).unwrap();
    let example = std::fs::read_to_string(pkg.join("examples/quickstart.c")).unwrap();
    assert!(
        readme.contains(&format!("```c\n{example}```\n")),
        "README.md's quick start differs from capi/examples/quickstart.c"
    );
}

/// `evnexus.h` compiles alone as strict C99 and as C++ (its `extern "C"`
/// guards).
#[test]
fn header_compiles_as_strict_c99_and_as_cxx() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = profile_dir().join("c-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("header_only.c");
    std::fs::write(
        &source,
        "#include <evnexus.h>\nint main(void) { return 0; }\n",
    )
    .unwrap();
    for (compiler, lang) in [
        ("cc", ["-x", "c", "-std=c99"]),
        ("c++", ["-x", "c++", "-std=c++11"]),
    ] {
        let out = Command::new(compiler)
            .args(lang)
            .args([
                "-Wall",
                "-Wextra",
                "-pedantic",
                "-Werror",
                "-fsyntax-only",
                "-I",
            ])
            .arg(&include)
            .arg(&source)
            .output()
            .expect("run the compiler");
        assert!(
            out.status.success(),
            "{compiler} {lang:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn bad_input_through_the_c_abi_is_an_error_code_and_failed_calls_free_once() {
    let out = c_test("args");
    assert!(out.contains("bad input is an error code"));
}

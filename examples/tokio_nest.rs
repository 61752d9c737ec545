//! evnexus nested in a tokio runtime: tokio watches the engine's fd through
//! `AsyncFd` and sleeps at most `Engine::next_timeout()`; the engine is
//! turned with `run_once(Some(Duration::ZERO))`, which never blocks.
//!
//! Run: `cargo run --release --example tokio_nest`. A socket pair carries a
//! few messages from a tokio task to an evnexus watch, and an evnexus timer
//! ends the program.

use evnexus::{Engine, Interest};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::new()?;
    let (mut reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    let _watch = engine.register_fd(reader.as_raw_fd(), Interest::READABLE, move |_| {
        let mut buf = [0u8; 64];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            println!(
                "evnexus watch read {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    })?;
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let _timer = engine.timer_after(Duration::from_millis(100), move |_| {
        println!("evnexus timer fired: done");
        d.store(true, Ordering::SeqCst);
    })?;

    // A tokio task writes to the socket the engine watches.
    let writer = tokio::net::UnixStream::from_std({
        writer.set_nonblocking(true)?;
        writer
    })?;
    tokio::spawn(async move {
        for i in 0..3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = writer.writable().await;
            let _ = writer.try_write(format!("message {i}").as_bytes());
        }
    });

    // The nesting: tokio sleeps on the engine's fd and next timeout.
    // SAFETY: the engine's fd is open, and names the same file, for the
    // engine's whole life (its `AsFd` promise); the AsyncFd owns the engine.
    let host = unsafe { AsyncFd::register_with_interest(engine, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    while !done.load(Ordering::SeqCst) {
        let sleep = host
            .get_ref()
            .next_timeout()
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            guard = host.readable() => {
                let mut guard = guard?;
                // tokio's readiness is edge-triggered: turn the engine
                // until a turn dispatches nothing, then clear.
                while host.get_ref().run_once(Some(Duration::ZERO))? > 0 {}
                guard.clear_ready();
            }
            _ = tokio::time::sleep(sleep) => {
                host.get_ref().run_once(Some(Duration::ZERO))?;
            }
        }
    }
    Ok(())
}

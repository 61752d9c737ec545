//! The input grammar of `engine_concurrent`: what `arbitrary` decodes a
//! fuzzer input into. The order of every enum's variants and every struct's
//! fields is the input format (see `fuzz/gen_concurrent_seeds.py`): append,
//! never reorder.

use arbitrary::Arbitrary;

/// One fuzzer input: how the engine and its threads are set up, then the
/// rounds. In a round every worker thread runs its steps at once; between
/// rounds everything is quiet and checked.
#[derive(Arbitrary, Debug)]
pub struct Input {
    pub config: Config,
    pub rounds: Vec<Round>,
}

#[derive(Arbitrary, Debug)]
pub struct Config {
    pub backend: BackendChoice,
    /// Worker threads: 2 + `threads % 2`.
    pub threads: u8,
    /// Built-in loops: who drives the loop while the workers run.
    pub driver: LoopDriver,
    /// At the end: drop the engine while handles are still alive (else end
    /// the handles first).
    pub drop_engine_first: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// `Engine::with_hooks`: the target's recording loop; events come only
    /// from the workers' reports.
    Hooks,
    /// The built-in loop on epoll.
    Epoll,
    /// The built-in loop on io_uring (epoll where the kernel refuses it).
    Uring,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopDriver {
    /// No loop thread: workers drive the loop with `RunOnce` steps.
    Steps,
    /// A loop thread sleeps in `run_once(None)` until woken.
    Sleeping,
    /// A loop thread spins on `run_once(Some(Duration::ZERO))`.
    Spinning,
}

#[derive(Arbitrary, Debug)]
pub struct Round {
    pub steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
pub struct Step {
    /// The worker that runs it (modulo the worker count).
    pub thread: u8,
    pub op: Op,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Watch the listening end of socket pair `pair`.
    RegisterFd {
        pair: u8,
        interest: InterestChoice,
    },
    /// Register a watch on an fd number that is not open.
    RegisterBadFd,
    RegisterTimer {
        delay: Delay,
    },
    ModifyFd {
        which: u8,
        interest: InterestChoice,
    },
    ResetTimer {
        which: u8,
        delay: Delay,
    },
    /// End a registration from outside any callback: `deregister`/`cancel`,
    /// or dropping the handle.
    End {
        which: u8,
        by_drop: bool,
    },
    /// `occurred_fd` / `occurred_timeout` from this worker.
    Report {
        target: Target,
        revents: u16,
    },
    /// What a registration's callback does on its next run.
    Arm {
        which: u8,
        actions: Vec<Action>,
    },
    /// Write a byte to the peer of pair `pair`: its watched end is readable.
    Ready {
        pair: u8,
    },
    /// Read everything pending on the watched end of pair `pair`.
    Drain {
        pair: u8,
    },
    /// Close the watched end of pair `pair` and open a new file at the same
    /// number (`dup2`), whatever still watches the old one.
    ReuseFd {
        pair: u8,
    },
    /// Built-in loops: `run_once(Some(Duration::ZERO))` on this worker.
    RunOnce,
    /// Burn `n * 64` spin-loop iterations: shifts the interleaving.
    Spin {
        n: u8,
    },
    /// Hooks: the next register or modify hook sleeps `us * 8` microseconds
    /// while the engine holds the registration's control bit.
    SlowNextHook {
        us: u8,
    },
    /// Hooks: the next register or modify hook fails.
    FailNextHook,
    /// `Engine::deregister(token)` from outside any callback: no handle
    /// needed, so it can race a modify or reset of the same registration.
    EndByToken {
        which: u8,
    },
    /// This worker's next registration or modify stops `us * 8`
    /// microseconds at a pause point while it holds the registration's
    /// control bit: before its backend call, or after it (the moment a
    /// concurrent loop meets the registration "under control").
    PauseNext {
        after: bool,
        us: u8,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterestChoice {
    Readable,
    Writable,
    Both,
    None,
    /// Readable, edge-triggered (built-in loops only).
    ReadableEdge,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// Due at once: `timer_after(Duration::ZERO)`.
    Zero,
    /// `1 + k % 4` milliseconds.
    Ms(u8),
    /// An hour: never due within a run.
    Far,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Target {
    /// An fd watch (live or ended), with its fd or with another.
    Fd { which: u8, right_fd: bool },
    /// A timer (pending or ended).
    Timer { which: u8 },
    /// Any registration's token, reported as the other kind.
    WrongKind { which: u8 },
    /// A token no registration can hold (`how % 3`: generation 0, an index
    /// past the arena, or a registration's index with a generation far
    /// ahead), as an fd event (`how < 128`) or a timeout.
    Forged { which: u8, how: u8 },
}

/// One thing a callback does from inside its run.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Action {
    /// `ev.deregister()` (fd watches; timers skip it).
    Deregister,
    /// `ev.modify(interest)` (fd watches; timers skip it).
    Modify(InterestChoice),
    /// Report its own token again, on its own fd.
    ReportSelf(u16),
    /// Register a new timer from inside the callback.
    RegisterTimer(Delay),
    /// Sleep `us * 8` microseconds: a window for the other threads.
    Sleep(u8),
    /// Read everything pending on its fd.
    Drain,
    /// Panic (ends the run, and the registration).
    Panic,
    /// `Engine::deregister` of another registration's token, from inside
    /// this callback (it does not wait).
    EndOther(u8),
}

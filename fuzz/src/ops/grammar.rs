//! The input grammar of `engine_ops`: what `arbitrary` decodes a fuzzer
//! input into. The order of every enum's variants and every struct's fields
//! is the input format (see `fuzz/gen_seeds.py`): append, never reorder.

use arbitrary::Arbitrary;

#[derive(Arbitrary, Debug)]
pub struct Input {
    pub config: Config,
    pub ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
pub struct Config {
    pub first_gen: FirstGen,
    /// `Builder::max_registrations`, when set.
    pub limit: Option<u8>,
    /// At the end: drop the engine while handles are still alive (else drop
    /// the handles first).
    pub drop_engine_first: bool,
    /// `Builder::recheck_fds(true)`: each fd event is re-checked with
    /// `poll(fd, 0)` against the watch's interest, which makes the interest
    /// the engine holds observable. Only the target's own socket pairs are
    /// registered then (their readiness does not change by itself).
    pub recheck: bool,
}

#[derive(Arbitrary, Debug)]
pub enum FirstGen {
    /// `Engine::with_hooks` (or the builder without `first_generation`).
    Default,
    /// `Generation::MAX - (k % 4)`: slots retire after a few reuses.
    NearMax(u8),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    RegisterFd {
        fd: FdChoice,
        interest: u16,
    },
    RegisterTimer {
        delay_ms: u16,
    },
    ModifyFd {
        which: u8,
        interest: u16,
    },
    ResetTimer {
        which: u8,
        delay_ms: u16,
    },
    DeregisterFd {
        which: u8,
        by_drop: bool,
    },
    CancelTimer {
        which: u8,
        by_drop: bool,
    },
    OccurredFd {
        token: TokenChoice,
        fd: FdSel,
        revents: u16,
    },
    OccurredTimeout {
        token: TokenChoice,
    },
    /// What a live registration's callback does on its next run.
    Arm {
        which: u8,
        actions: Vec<Action>,
    },
    /// What the next registration's callback does on its first run (which
    /// may come from inside its register hook).
    ArmNew {
        actions: Vec<Action>,
    },
    /// The next fallible hook call (register, modify) returns an error, or
    /// panics.
    FailNextHook {
        panic: bool,
    },
    /// The next deregister hook panics (after doing its work).
    PanicNextDeregisterHook,
    /// The next register hook reports its token before returning (an event
    /// "may be reported as soon as this hook has been entered").
    ReportInNextRegisterHook {
        revents: u16,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum FdChoice {
    /// One of the open pipe ends.
    Pipe(u8),
    Negative(i32),
    /// A closed or never-opened fd number.
    Unopened(u8),
    Any(i32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum TokenChoice {
    LiveFd(u8),
    LiveTimer(u8),
    /// Any token ever handed out (live, ended, failed registration).
    History(u8),
    Forged(Forge),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Forge {
    Raw(u64),
    Slot {
        index: u16,
        gen: GenChoice,
    },
    /// A token from history with index and generation nudged.
    Near {
        which: u8,
        dindex: i8,
        dgen: i8,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum GenChoice {
    Zero,
    First,
    Configured(u8),
    Max(u8),
    Any(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum FdSel {
    /// The registration's own fd.
    Right,
    Pipe(u8),
    Any(i32),
}

/// One thing a callback does from inside its run.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Action {
    /// `ev.deregister()` (fd watches only; timers skip it).
    Deregister,
    /// Report its own token again: `occurred_fd` (with its fd or another)
    /// or `occurred_timeout`.
    Report {
        as_timeout: bool,
        wrong_fd: bool,
        revents: u16,
    },
    /// `ev.modify(interest)` (fd watches only).
    Modify { interest: u16 },
    /// Panic (ends the run).
    Panic,
}

//! The reference model: what the engine should do with each op, down to
//! the exact `StaleReason`, hook call, callback run and statistic. It
//! mirrors `Engine::resolve`, `Slot::begin_fd` and `Slot::begin_timer`, and
//! the arena's geometry (`src/token.rs`, `src/arena.rs`).

use super::callbacks::{ActionResult, CbState, Run, RunKind};
use super::fds::{fds, poll_now};
use super::grammar::{Action, Config, FdSel, Forge, GenChoice, TokenChoice};
use super::hooks::HookCall;
use super::results::{other_fd, ErrRepr, Res};
use crate::common::{interest_of, DELIBERATE};
use evnexus::{
    Engine, FdWatch, Generation, Interest, Occurred, StaleReason, Timer, Token, MAX_SLOTS,
};
use std::collections::{HashMap, HashSet};
use std::os::fd::RawFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Token layout, mirrored from src/token.rs.
const INDEX_BITS: u32 = 24;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const _: () = assert!(Token::INDEX_BITS == INDEX_BITS);
/// Arena geometry, mirrored from src/arena.rs: page k holds 32 << k slots,
/// allocated when an index in it is first claimed. An index whose page
/// does not exist resolves to nothing (`StaleReason::OutOfRange`).
const FIRST_PAGE_SHIFT: u32 = 5;

pub(crate) fn token_index(t: u64) -> u32 {
    (t & INDEX_MASK) as u32
}

pub(crate) fn token_gen(t: u64) -> u64 {
    t >> INDEX_BITS
}

fn make_token(index: u64, gen: u64) -> u64 {
    ((gen & Generation::MAX.get()) << INDEX_BITS) | (index & INDEX_MASK)
}

fn page_of(index: u32) -> u32 {
    let shifted = index as u64 + (1 << FIRST_PAGE_SHIFT);
    63 - shifted.leading_zeros() - FIRST_PAGE_SHIFT
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Fd { fd: RawFd, interest: Interest },
    Timer { deadline: Instant },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegState {
    Live,
    /// Ended, slot not yet torn down (only inside an op).
    Dead,
    /// Torn down (or never made it).
    Gone,
}

pub(crate) enum Handle {
    Fd(FdWatch),
    Timer(Timer),
}

pub(crate) struct Reg {
    pub(crate) token: u64,
    pub(crate) kind: Kind,
    pub(crate) state: RegState,
    pub(crate) fired: bool,
    pub(crate) handle: Option<Handle>,
    pub(crate) cb: Arc<Mutex<CbState>>,
    pub(crate) dropped: Arc<AtomicBool>,
    /// Mirror of `cb.next`.
    pub(crate) next: Vec<Action>,
    pub(crate) expect_runs: Vec<Run>,
}

impl Reg {
    pub(crate) fn fd(&self) -> RawFd {
        match self.kind {
            Kind::Fd { fd, .. } => fd,
            Kind::Timer { .. } => panic!("model: fd of a timer"),
        }
    }
    pub(crate) fn is_timer(&self) -> bool {
        matches!(self.kind, Kind::Timer { .. })
    }
}

#[derive(Default, Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) struct MStats {
    pub(crate) dispatched: u64,
    pub(crate) reruns: u64,
    pub(crate) stale_generation: u64,
    pub(crate) stale_fd_mismatch: u64,
    pub(crate) stale_out_of_range: u64,
    pub(crate) stale_wrong_kind: u64,
    pub(crate) recheck_suppressed: u64,
    pub(crate) panicked: u64,
    pub(crate) registered: u64,
    pub(crate) deregistered: u64,
    pub(crate) retired: u64,
}

impl MStats {
    pub(crate) fn of(engine: &Engine) -> MStats {
        let s = engine.stats();
        MStats {
            dispatched: s.dispatched,
            reruns: s.reruns,
            stale_generation: s.stale.generation,
            stale_fd_mismatch: s.stale.fd_mismatch,
            stale_out_of_range: s.stale.out_of_range,
            stale_wrong_kind: s.stale.wrong_kind,
            recheck_suppressed: s.recheck_suppressed,
            panicked: s.panicked,
            registered: s.registered,
            deregistered: s.deregistered,
            retired: s.retired_slots,
        }
    }
    pub(crate) fn stale(&mut self, reason: StaleReason) {
        match reason {
            StaleReason::Generation => self.stale_generation += 1,
            StaleReason::FdMismatch => self.stale_fd_mismatch += 1,
            StaleReason::OutOfRange => self.stale_out_of_range += 1,
            StaleReason::WrongKind => self.stale_wrong_kind += 1,
        }
    }
}

/// What the engine resolves a token to.
pub(crate) enum View {
    OutOfRange,
    /// The slot exists but does not hold this token's registration.
    NotHeld,
    Held {
        reg: usize,
        dead: bool,
        busy: bool,
    },
}

/// What an `occurred_*` call should do.
pub(crate) enum Expect {
    Stale(StaleReason),
    Deferred,
    Dispatch(usize),
}

pub(crate) struct Model {
    pub(crate) engine: usize,
    pub(crate) limit: usize,
    pub(crate) first_gen: u64,
    /// Fresh indices handed out: `0..claimed`.
    pub(crate) claimed: u32,
    pub(crate) last_gen: HashMap<u32, u64>,
    /// Index -> registration whose slot it is (until torn down).
    pub(crate) slot_of: HashMap<u32, usize>,
    pub(crate) retired: u64,
    pub(crate) issued: HashSet<u64>,
    pub(crate) regs: Vec<Reg>,
    pub(crate) stats: MStats,
    /// Mirror of the hooks' flags.
    pub(crate) fail_next: Option<bool>,
    pub(crate) panic_next_deregister: bool,
    pub(crate) report_next: Option<u16>,
    pub(crate) recheck: bool,
    /// Actions for the callback of the next registration.
    pub(crate) arm_new: Vec<Action>,
    /// The registration whose callback runs now (inside an op).
    pub(crate) busy: Option<usize>,
    pub(crate) expect_hooks: Vec<HookCall>,
    pub(crate) callbacks_made: usize,
    pub(crate) runs: usize,
    /// Registrations whose runs are to be compared after this op.
    pub(crate) touched: Vec<usize>,
    pub(crate) t0: Instant,
}

impl Model {
    /// The model of a fresh engine at address `engine`, built from `config`
    /// with fresh slots at generation `first` (`None`: the default).
    pub(crate) fn new(engine: usize, config: &Config, first: Option<Generation>) -> Model {
        Model {
            engine,
            limit: config
                .limit
                .map_or(MAX_SLOTS, |l| (l as usize).clamp(1, MAX_SLOTS)),
            first_gen: first.unwrap_or(Generation::FIRST).get(),
            claimed: 0,
            last_gen: HashMap::new(),
            slot_of: HashMap::new(),
            retired: 0,
            issued: HashSet::new(),
            regs: Vec::new(),
            stats: MStats::default(),
            fail_next: None,
            panic_next_deregister: false,
            report_next: None,
            recheck: config.recheck,
            arm_new: Vec::new(),
            busy: None,
            expect_hooks: Vec::new(),
            callbacks_made: 0,
            runs: 0,
            touched: Vec::new(),
            t0: Instant::now(),
        }
    }

    pub(crate) fn live_slots(&self) -> usize {
        self.slot_of.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.live_slots() as u64 + self.retired >= self.limit as u64
    }

    pub(crate) fn page_exists(&self, index: u32) -> bool {
        self.claimed > 0 && page_of(index) <= page_of(self.claimed - 1)
    }

    pub(crate) fn view(&self, t: u64) -> View {
        let index = token_index(t);
        if token_gen(t) == 0 || index as usize >= self.limit || !self.page_exists(index) {
            return View::OutOfRange;
        }
        match self.slot_of.get(&index) {
            Some(&r) if self.regs[r].token == t => View::Held {
                reg: r,
                dead: self.regs[r].state == RegState::Dead,
                busy: self.busy == Some(r),
            },
            _ => View::NotHeld,
        }
    }

    /// `occurred_fd`: `Engine::resolve`, then `Slot::begin_fd`'s order of
    /// checks (holds, kind, fd, dead, busy); a wrong fd on a registration
    /// that has ended (but whose callback still runs) is `Generation`.
    pub(crate) fn expect_fd(&self, t: u64, fd: RawFd) -> Expect {
        match self.view(t) {
            View::OutOfRange => Expect::Stale(StaleReason::OutOfRange),
            View::NotHeld => Expect::Stale(StaleReason::Generation),
            View::Held { reg, dead, busy } => {
                let r = &self.regs[reg];
                if r.is_timer() {
                    Expect::Stale(StaleReason::WrongKind)
                } else if r.fd() != fd && !dead {
                    Expect::Stale(StaleReason::FdMismatch)
                } else if dead {
                    Expect::Stale(StaleReason::Generation)
                } else if busy {
                    Expect::Deferred
                } else {
                    Expect::Dispatch(reg)
                }
            }
        }
    }

    /// `occurred_timeout`: `Slot::begin_timer`'s order (holds, kind, dead).
    pub(crate) fn expect_timeout(&self, t: u64) -> Expect {
        match self.view(t) {
            View::OutOfRange => Expect::Stale(StaleReason::OutOfRange),
            View::NotHeld => Expect::Stale(StaleReason::Generation),
            View::Held { reg, dead, busy } => {
                if !self.regs[reg].is_timer() {
                    Expect::Stale(StaleReason::WrongKind)
                } else if dead {
                    Expect::Stale(StaleReason::Generation)
                } else {
                    assert!(!busy, "model: a busy timer is always dead in hooks mode");
                    Expect::Dispatch(reg)
                }
            }
        }
    }

    /// A registration got token `t` from the arena: check it is a token
    /// never handed out, from a free or fresh slot, with the right
    /// generation, and record it.
    pub(crate) fn on_new_token(&mut self, t: u64, reg: usize) {
        let index = token_index(t);
        let gen = token_gen(t);
        assert!(
            (index as usize) < self.limit,
            "token {t:#x}: index beyond the limit"
        );
        assert!(self.issued.insert(t), "token {t:#x} handed out twice");
        let free_released = self.claimed as u64 - self.live_slots() as u64 - self.retired;
        match self.last_gen.get(&index) {
            Some(&last) => {
                assert!(
                    !self.slot_of.contains_key(&index),
                    "token {t:#x}: slot in use"
                );
                assert_ne!(
                    last,
                    Generation::MAX.get(),
                    "token {t:#x}: a retired slot was reused"
                );
                assert_eq!(
                    gen,
                    last + 1,
                    "token {t:#x}: generation is not the next one"
                );
            }
            None => {
                assert_eq!(
                    index, self.claimed,
                    "token {t:#x}: fresh slots are claimed in order"
                );
                assert_eq!(
                    free_released, 0,
                    "token {t:#x}: fresh slot claimed while a released one was free"
                );
                assert_eq!(gen, self.first_gen, "token {t:#x}: fresh slot generation");
                self.claimed += 1;
            }
        }
        self.last_gen.insert(index, gen);
        self.slot_of.insert(index, reg);
        self.stats.registered += 1;
    }

    /// The next register/modify hook call consumes the injected failure:
    /// what the engine then returns.
    pub(crate) fn take_fail(&mut self) -> Option<ErrRepr> {
        self.fail_next.take().map(|panic| {
            if panic {
                ErrRepr::HookPanicked
            } else {
                ErrRepr::Injected
            }
        })
    }

    /// Expected hook calls when the engine disposes of the application's
    /// value of an ended registration. A deregister hook that panics has
    /// done its work first, and the engine ignores the panic.
    pub(crate) fn dispose(&mut self, r: usize) {
        let reg = &self.regs[r];
        let token = reg.token;
        match reg.kind {
            Kind::Fd { fd, .. } => self.expect_hooks.push(HookCall::FdDeregister { token, fd }),
            Kind::Timer { .. } if !reg.fired => self
                .expect_hooks
                .push(HookCall::TimeoutDeregister { token }),
            Kind::Timer { .. } => {
                // A fired timer's value is just dropped: no hook call.
                self.expect_hooks.push(HookCall::Dropped { token });
                return;
            }
        }
        self.panic_next_deregister = false;
        self.expect_hooks.push(HookCall::Dropped { token });
    }

    pub(crate) fn tear_down(&mut self, r: usize) {
        let token = self.regs[r].token;
        self.regs[r].state = RegState::Gone;
        assert_eq!(self.slot_of.remove(&token_index(token)), Some(r));
        self.stats.deregistered += 1;
        if token_gen(token) == Generation::MAX.get() {
            self.retired += 1;
            self.stats.retired += 1;
        }
        self.touched.push(r);
    }

    /// The registration ends from inside its own dispatch; with `ctrl_held`
    /// (inside its register hook) the registrant disposes of it later.
    pub(crate) fn end_in_dispatch(&mut self, r: usize, ctrl_held: bool) {
        self.regs[r].state = RegState::Dead;
        if !ctrl_held {
            self.dispose(r);
        }
    }

    /// One `occurred_fd` that owns the dispatch of fd watch `r`.
    pub(crate) fn dispatch_fd(
        &mut self,
        r: usize,
        revents: u16,
        in_register_hook: bool,
    ) -> Res<Occurred> {
        self.busy = Some(r);
        self.touched.push(r);
        let token = self.regs[r].token;
        let fd = self.regs[r].fd();
        let mut readiness = revents;
        let mut outcome = Ok(Occurred::Suppressed);
        loop {
            if self.recheck {
                let Kind::Fd { interest, .. } = self.regs[r].kind else {
                    unreachable!()
                };
                match poll_now(fd, interest) {
                    Some(now) => readiness = now,
                    None => {
                        // Nothing of the interest holds: no run, no rerun.
                        self.stats.recheck_suppressed += 1;
                        break;
                    }
                }
            }
            let actions = std::mem::take(&mut self.regs[r].next);
            let mut results = Vec::new();
            let mut pending: Option<u16> = None;
            let mut panicked = false;
            for action in actions {
                let live = self.regs[r].state == RegState::Live;
                let result = match action {
                    Action::Deregister => {
                        if live {
                            self.end_in_dispatch(r, in_register_hook);
                        }
                        ActionResult::Deregistered(live)
                    }
                    Action::Report {
                        as_timeout,
                        wrong_fd,
                        revents,
                    } => {
                        let e = if as_timeout {
                            self.expect_timeout(token)
                        } else {
                            let arg = if wrong_fd { other_fd(fd) } else { fd };
                            self.expect_fd(token, arg)
                        };
                        ActionResult::Reported(match e {
                            Expect::Stale(reason) => {
                                self.stats.stale(reason);
                                Ok(Occurred::Stale(reason))
                            }
                            Expect::Deferred => {
                                self.stats.reruns += 1;
                                pending = Some(pending.unwrap_or(0) | revents);
                                Ok(Occurred::Deferred)
                            }
                            Expect::Dispatch(_) => panic!("model: dispatch while busy"),
                        })
                    }
                    Action::Modify { interest } => {
                        let interest = interest_of(interest);
                        ActionResult::Modified(if in_register_hook {
                            Err(ErrRepr::Reentrant)
                        } else if !live {
                            Err(ErrRepr::Gone)
                        } else {
                            let fail = self.take_fail();
                            self.expect_hooks.push(HookCall::FdModify {
                                token,
                                fd,
                                interest,
                                ok: fail.is_none(),
                            });
                            match fail {
                                None => {
                                    self.regs[r].kind = Kind::Fd { fd, interest };
                                    Ok(())
                                }
                                Some(e) => Err(e),
                            }
                        })
                    }
                    Action::Panic => {
                        panicked = true;
                        break;
                    }
                };
                results.push(result);
            }
            self.regs[r].expect_runs.push(Run {
                token,
                engine: self.engine,
                what: RunKind::Fd { fd, readiness },
                results,
            });
            self.runs += 1;
            self.stats.dispatched += 1;
            if outcome.is_ok() {
                outcome = Ok(Occurred::Dispatched);
            }
            if panicked {
                self.stats.panicked += 1;
                if self.regs[r].state == RegState::Live {
                    self.end_in_dispatch(r, in_register_hook);
                }
                outcome = Err(ErrRepr::Panicked(token, DELIBERATE.into()));
            }
            match pending {
                Some(p) if self.regs[r].state == RegState::Live => readiness = p,
                _ => break,
            }
        }
        self.busy = None;
        if self.regs[r].state == RegState::Dead && !in_register_hook {
            self.tear_down(r);
        }
        outcome
    }

    /// One `occurred_timeout` that owns (fires) timer `r`.
    pub(crate) fn dispatch_timer(&mut self, r: usize, in_register_hook: bool) -> Res<Occurred> {
        self.busy = Some(r);
        self.touched.push(r);
        self.regs[r].state = RegState::Dead;
        self.regs[r].fired = true;
        let token = self.regs[r].token;
        let Kind::Timer { deadline } = self.regs[r].kind else {
            panic!("model: timer dispatch of an fd watch")
        };
        let actions = std::mem::take(&mut self.regs[r].next);
        let mut results = Vec::new();
        let mut panicked = false;
        for action in actions {
            let result = match action {
                Action::Deregister | Action::Modify { .. } => ActionResult::Skipped,
                Action::Report { as_timeout, .. } => {
                    let e = if as_timeout {
                        self.expect_timeout(token)
                    } else {
                        self.expect_fd(token, fds().open[0])
                    };
                    let Expect::Stale(reason) = e else {
                        panic!("model: a firing timer reported again must be stale")
                    };
                    self.stats.stale(reason);
                    ActionResult::Reported(Ok(Occurred::Stale(reason)))
                }
                Action::Panic => {
                    panicked = true;
                    break;
                }
            };
            results.push(result);
        }
        self.regs[r].expect_runs.push(Run {
            token,
            engine: self.engine,
            what: RunKind::Timer { deadline },
            results,
        });
        self.runs += 1;
        self.stats.dispatched += 1;
        self.busy = None;
        let outcome = if panicked {
            self.stats.panicked += 1;
            Err(ErrRepr::Panicked(token, DELIBERATE.into()))
        } else {
            Ok(Occurred::Dispatched)
        };
        if !in_register_hook {
            // The last one out drops the callback, then the hook value.
            self.dispose(r);
            self.tear_down(r);
        }
        outcome
    }

    pub(crate) fn occurred_fd(&mut self, t: u64, fd: RawFd, revents: u16) -> Res<Occurred> {
        match self.expect_fd(t, fd) {
            Expect::Stale(reason) => {
                self.stats.stale(reason);
                Ok(Occurred::Stale(reason))
            }
            Expect::Dispatch(r) => self.dispatch_fd(r, revents, false),
            Expect::Deferred => panic!("model: deferred outside any callback"),
        }
    }

    pub(crate) fn occurred_timeout(&mut self, t: u64) -> Res<Occurred> {
        match self.expect_timeout(t) {
            Expect::Stale(reason) => {
                self.stats.stale(reason);
                Ok(Occurred::Stale(reason))
            }
            Expect::Dispatch(r) => self.dispatch_timer(r, false),
            Expect::Deferred => panic!("model: deferred timer"),
        }
    }

    /// After a register hook ran for registration `r` (whose token the
    /// hook saw): the in-hook report, the hook's own call, and how the
    /// registration completes. Returns what `register_*`/`timer_at` should
    /// return.
    pub(crate) fn after_register_hook(&mut self, r: usize) -> Res<()> {
        let token = self.regs[r].token;
        if let Some(revents) = self.report_next.take() {
            let result = if self.regs[r].is_timer() {
                match self.expect_timeout(token) {
                    Expect::Dispatch(d) => self.dispatch_timer(d, true),
                    _ => panic!("model: a registering timer is dispatchable"),
                }
            } else {
                match self.expect_fd(token, self.regs[r].fd()) {
                    Expect::Dispatch(d) => self.dispatch_fd(d, revents, true),
                    _ => panic!("model: a registering watch is dispatchable"),
                }
            };
            self.expect_hooks
                .push(HookCall::ReportedInHook { token, result });
        }
        let fail = self.take_fail();
        let ok = fail.is_none();
        self.expect_hooks.push(match self.regs[r].kind {
            Kind::Fd { fd, interest } => HookCall::FdRegister {
                token,
                fd,
                interest,
                ok,
            },
            Kind::Timer { deadline } => HookCall::TimeoutRegister {
                token,
                deadline,
                ok,
            },
        });
        if let Some(e) = fail {
            // No value was made, so none is disposed of; the slot goes.
            if self.regs[r].state == RegState::Live {
                self.regs[r].state = RegState::Dead;
            }
            self.tear_down(r);
            return Err(e);
        }
        if self.regs[r].state == RegState::Dead {
            // Ended (or fired) inside the hook: the registrant, holding
            // CTRL, disposes of the value and tears down.
            self.dispose(r);
            self.tear_down(r);
        }
        Ok(())
    }

    /// Deregister / cancel from outside any callback; `true` if it ended
    /// the registration.
    pub(crate) fn deregister(&mut self, r: usize) -> bool {
        if self.regs[r].state != RegState::Live {
            return false;
        }
        self.regs[r].state = RegState::Dead;
        self.dispose(r);
        self.tear_down(r);
        true
    }

    pub(crate) fn pick(&self, which: u8, filter: impl Fn(&Reg) -> bool) -> Option<usize> {
        let ids: Vec<usize> = (0..self.regs.len())
            .filter(|&i| filter(&self.regs[i]))
            .collect();
        (!ids.is_empty()).then(|| ids[which as usize % ids.len()])
    }

    pub(crate) fn gen_of(&self, g: GenChoice) -> u64 {
        match g {
            GenChoice::Zero => 0,
            GenChoice::First => self.first_gen,
            GenChoice::Configured(k) => {
                (self.first_gen + (k % 8) as u64).min(Generation::MAX.get())
            }
            GenChoice::Max(k) => Generation::MAX.get() - (k % 8) as u64,
            GenChoice::Any(x) => x & Generation::MAX.get(),
        }
    }

    pub(crate) fn token_of(&self, choice: TokenChoice) -> u64 {
        let history = |which: u8| self.pick(which, |_| true).map_or(0, |r| self.regs[r].token);
        match choice {
            TokenChoice::LiveFd(w) => self
                .pick(w, |r| r.state == RegState::Live && !r.is_timer())
                .map_or_else(|| history(w), |r| self.regs[r].token),
            TokenChoice::LiveTimer(w) => self
                .pick(w, |r| r.state == RegState::Live && r.is_timer())
                .map_or_else(|| history(w), |r| self.regs[r].token),
            TokenChoice::History(w) => history(w),
            TokenChoice::Forged(Forge::Raw(x)) => x,
            TokenChoice::Forged(Forge::Slot { index, gen }) => {
                make_token(index as u64, self.gen_of(gen))
            }
            TokenChoice::Forged(Forge::Near {
                which,
                dindex,
                dgen,
            }) => {
                let base = history(which);
                make_token(
                    (token_index(base) as i64 + dindex as i64) as u64,
                    (token_gen(base) as i64 + dgen as i64) as u64,
                )
            }
        }
    }

    pub(crate) fn fd_for(&self, sel: FdSel, t: u64) -> RawFd {
        let fds = fds();
        match sel {
            FdSel::Right => self
                .regs
                .iter()
                .find(|r| r.token == t && !r.is_timer())
                .map_or(fds.open[0], |r| r.fd()),
            FdSel::Pipe(k) => fds.open[k as usize % fds.open.len()],
            FdSel::Any(fd) => fd,
        }
    }
}

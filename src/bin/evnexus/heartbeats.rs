//! The domains' heartbeats: one-shot timers that re-arm themselves from
//! inside their callback, what each fire checks, and the cancel that
//! checks its outcome against what the callback did.

use crate::check::{Check, DropMark};
use crate::domains::DomainStats;
use crate::items::{Kind, DEAD_HISTORY};
use crate::lock;
use crate::rng::Rng;
use crate::shared::{callback_entered, Shared, TIMER_RUNS};
use evnexus::{Engine, Timer, TimerEvent, Token};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One heartbeat timer as the program sees it.
pub(crate) struct TimerReg {
    pub(crate) token: AtomicU64,
    /// Deadline, ns after `Shared::base`.
    pub(crate) deadline: AtomicU64,
    /// The deadline a `reset_at` in progress moves to (0: none): until it
    /// returns, the timer may fire at either.
    pub(crate) pending_deadline: AtomicU64,
    pub(crate) resets: AtomicU32,
    pub(crate) fired: AtomicU32,
    /// Set before `cancel` is called.
    pub(crate) cancel_started: AtomicBool,
    pub(crate) cancelled: AtomicBool,
    /// A genuine report of this timer was rejected before any cancel began.
    pub(crate) lost_report: AtomicBool,
    /// A sentinel: the churn thread neither resets it nor cancels it until
    /// it has fired or is [`LOST_AFTER`] overdue, so that a timer the
    /// engine loses is seen as lost (the churn thread otherwise cancels
    /// each heartbeat within about 100 ms, and a timer cancelled before it
    /// fired is lost only if it was that long overdue).
    pub(crate) sentinel: AtomicBool,
    pub(crate) dropped: Arc<AtomicBool>,
}

/// How long past its deadline a timer that never fired counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(2);

/// A live heartbeat with what its cancel checks.
pub(crate) struct TimerHandle {
    pub(crate) timer: Timer,
    pub(crate) reg: Arc<TimerReg>,
}

/// A domain's heartbeat: the handle of its current timer (taken by
/// whoever cancels or replaces it) and the domain's counts.
pub(crate) struct Heart {
    pub(crate) slot: Mutex<Option<TimerHandle>>,
    pub(crate) stats: Arc<DomainStats>,
}

impl Heart {
    /// Whether the current timer is a sentinel (see `TimerReg::sentinel`).
    pub(crate) fn is_sentinel(&self) -> bool {
        let slot = lock(&self.slot);
        slot.as_ref()
            .is_some_and(|h| h.reg.sentinel.load(Ordering::SeqCst))
    }

    /// Whether the churn thread must leave the heartbeat alone for now:
    /// its timer is a sentinel that has not fired and is not yet
    /// [`LOST_AFTER`] overdue.
    pub(crate) fn guarded(&self, shared: &Shared) -> bool {
        let slot = lock(&self.slot);
        slot.as_ref().is_some_and(|h| {
            let reg = &h.reg;
            reg.sentinel.load(Ordering::SeqCst)
                && reg.fired.load(Ordering::SeqCst) == 0
                && Instant::now() < shared.at(reg.deadline.load(Ordering::SeqCst)) + LOST_AFTER
        })
    }
}

/// 5-50 ms: most heartbeats fire before the churn thread gets to them.
pub(crate) fn heartbeat_delay(rng: &mut Rng) -> Duration {
    Duration::from_micros(5_000 + rng.below(45_000))
}

/// Arms a heartbeat `delay` from now, its callback checking each fire and
/// re-arming (see [`heartbeat_fired`]).
pub(crate) fn arm_heartbeat(
    engine: &Engine,
    heart: &Arc<Heart>,
    shared: &Arc<Shared>,
    delay: Duration,
) -> evnexus::Result<TimerHandle> {
    let deadline = Instant::now() + delay;
    let reg = Arc::new(TimerReg {
        token: AtomicU64::new(0),
        deadline: AtomicU64::new(shared.since_base(deadline)),
        pending_deadline: AtomicU64::new(0),
        resets: AtomicU32::new(0),
        fired: AtomicU32::new(0),
        cancel_started: AtomicBool::new(false),
        cancelled: AtomicBool::new(false),
        lost_report: AtomicBool::new(false),
        sentinel: AtomicBool::new(false),
        dropped: Arc::new(AtomicBool::new(false)),
    });
    let callback = {
        let reg = Arc::clone(&reg);
        let heart = Arc::clone(heart);
        let shared = Arc::clone(shared);
        let mark = DropMark(Arc::clone(&reg.dropped));
        move |ev: &TimerEvent<'_>| {
            let _mark = mark;
            heartbeat_fired(ev, &reg, &heart, &shared);
        }
    };
    let timer = engine.timer_at(deadline, callback)?;
    shared.registrations.fetch_add(1, Ordering::SeqCst);
    // Relaxed: read once every thread that arms timers has been joined.
    shared.timers_armed.fetch_add(1, Ordering::Relaxed);
    if !shared.bind_token(&reg.token, timer.token().as_u64()) {
        shared.checks.fail(Check::WrongIdentity, || {
            format!(
                "timer_at returned {} but the callback saw another",
                timer.token()
            )
        });
    }
    {
        let mut regs = lock(&shared.timer_regs);
        regs.insert(timer.token().as_u64(), Arc::clone(&reg));
        // It may have fired already (on the loop thread, or on a delivery
        // thread with hooks) and missed its removal: the callback counts
        // the fire before it takes this lock to remove the entry, so
        // either it finds the entry or this sees the count.
        if reg.fired.load(Ordering::SeqCst) != 0 {
            regs.remove(&timer.token().as_u64());
        }
    }
    Ok(TimerHandle { timer, reg })
}

/// Takes a timer that has fired or been cancelled out of
/// `Shared::timer_regs` (if the entry is still its own).
fn forget_timer(shared: &Shared, token: u64, reg: &Arc<TimerReg>) {
    let mut regs = lock(&shared.timer_regs);
    if regs.get(&token).is_some_and(|r| Arc::ptr_eq(r, reg)) {
        regs.remove(&token);
    }
}

/// A heartbeat's callback: checks the fire (once, not cancelled, its own
/// token and deadline, not early), counts the beat, re-arms.
fn heartbeat_fired(
    ev: &TimerEvent<'_>,
    reg: &Arc<TimerReg>,
    heart: &Arc<Heart>,
    shared: &Arc<Shared>,
) {
    let now = callback_entered();
    TIMER_RUNS.with(|c| c.set(c.get() + 1));
    let checks = &shared.checks;
    let token = ev.token();
    // Fired: the token is dead from now on.
    shared.bury(token.as_u64(), Kind::Timeout, -1);
    if reg.fired.fetch_add(1, Ordering::SeqCst) != 0 {
        checks.fail(Check::TimerTwice, || {
            format!("timer {token} callback ran twice")
        });
    }
    forget_timer(shared, token.as_u64(), reg);
    if reg.cancelled.load(Ordering::SeqCst) {
        checks.fail(Check::CancelOutcome, || {
            format!("timer {token} fired after cancel() returned true")
        });
    }
    if !shared.bind_token(&reg.token, token.as_u64()) {
        checks.fail(Check::WrongIdentity, || {
            format!(
                "callback of timer {} got token {token}",
                Token::from_u64(reg.token.load(Ordering::SeqCst))
            )
        });
    }
    if !lock(&shared.fired).record(token.as_u64()) {
        checks.fail(Check::TimerTwice, || format!("token {token} fired twice"));
    }
    if shared.builtin {
        // The built-in loop fires a timer only once its current deadline
        // has passed, even while a reset races the fire (the fire claims
        // the timer first, so the deadline it reads is the current one):
        // the event's deadline is the registered one or the one a reset in
        // progress moves to, and it has passed. The pending one is read
        // first: the churn thread stores the registered one before it
        // clears the pending one.
        let known = [
            reg.pending_deadline.load(Ordering::SeqCst),
            reg.deadline.load(Ordering::SeqCst),
        ];
        if !known
            .iter()
            .any(|&d| d != 0 && shared.at(d) == ev.deadline())
        {
            checks.fail(Check::WrongIdentity, || {
                format!("timer {token}: event deadline is neither the registered one nor a reset's")
            });
        }
        if now < ev.deadline() {
            checks.fail(Check::FiredEarly, || {
                format!("timer {token} ran {:?} early", ev.deadline() - now)
            });
        }
    } else if reg.resets.load(Ordering::SeqCst) == 0 {
        // Only a timer never reset has a deadline that cannot race with
        // the loop's report of an earlier one (the hooks contract allows
        // that).
        let deadline = shared.at(reg.deadline.load(Ordering::SeqCst));
        if ev.deadline() != deadline {
            checks.fail(Check::WrongIdentity, || {
                format!("timer {token}: event deadline differs from the registered one")
            });
        }
        if now < deadline {
            checks.fail(Check::FiredEarly, || {
                format!("timer {token} ran {:?} early", deadline - now)
            });
        }
    } else if now < ev.deadline() {
        shared.early_after_reset.fetch_add(1, Ordering::SeqCst);
    }
    heart.stats.beats.fetch_add(1, Ordering::SeqCst);
    if shared.stopping.load(Ordering::SeqCst) {
        return;
    }
    // Re-arm from inside the callback, through the event's engine.
    let mut rng = Rng::new();
    let next = match arm_heartbeat(ev.engine(), heart, shared, heartbeat_delay(&mut rng)) {
        Ok(next) => next,
        Err(e) => {
            checks.fail(Check::Unexpected, || format!("re-arming a heartbeat: {e}"));
            return;
        }
    };
    let mut slot = lock(&heart.slot);
    if slot.as_ref().is_some_and(|h| Arc::ptr_eq(&h.reg, reg)) {
        let own = slot.replace(next);
        drop(slot);
        // Our own, fired handle: dropping it inside the callback does not
        // wait and has no effect.
        drop(own);
    } else {
        // The churn thread took our handle and is cancelling it.
        drop(slot);
        shared.orphans.push(next);
    }
}

/// Cancels a heartbeat from outside any callback and checks the outcome
/// against what the callback did. Returns `true` for a lost timer event:
/// the timer never fired although a genuine report of it was rejected
/// before the cancel began, or although it was more than [`LOST_AFTER`]
/// overdue.
pub(crate) fn retire_timer(h: TimerHandle, shared: &Shared) -> bool {
    let TimerHandle { timer, reg } = h;
    let token = timer.token();
    reg.cancel_started.store(true, Ordering::SeqCst);
    let cancelled = timer.cancel();
    forget_timer(shared, token.as_u64(), &reg);
    let checks = &shared.checks;
    let mut lost = false;
    if cancelled {
        reg.cancelled.store(true, Ordering::SeqCst);
        shared.timers_cancelled.fetch_add(1, Ordering::SeqCst);
        shared.bury(token.as_u64(), Kind::Timeout, -1);
        if reg.fired.load(Ordering::SeqCst) != 0 {
            checks.fail(Check::CancelOutcome, || {
                format!("cancel() of {token} returned true but the callback ran")
            });
        }
        let deadline = shared.at(reg.deadline.load(Ordering::SeqCst));
        lost = reg.lost_report.load(Ordering::SeqCst)
            || Instant::now().saturating_duration_since(deadline) > LOST_AFTER;
    } else if reg.fired.load(Ordering::SeqCst) != 1 {
        checks.fail(Check::CancelOutcome, || {
            format!(
                "cancel() of {token} returned false but the callback ran {} times",
                reg.fired.load(Ordering::SeqCst)
            )
        });
    }
    if !reg.dropped.load(Ordering::SeqCst) {
        checks.fail(Check::NotQuiesced, || {
            format!("callback of timer {token} not dropped after cancel returned")
        });
    }
    lost
}

/// Fired timers kept in [`FiredWindow`]: twice the dead-token history.
const FIRED_WINDOW: usize = 2 * DEAD_HISTORY;

/// The tokens of the last [`FIRED_WINDOW`] timer fires, to catch a token
/// that fires again.
///
/// The window is enough: a token fires a second time only if (1) its
/// registration's callback runs twice, which `TimerReg::fired` counts per
/// registration with no history; (2) a second registration was handed the
/// same token, which [`crate::check::TokenLedger`] catches at any distance;
/// or (3) a report of the fired token is dispatched. The only reports of a
/// fired token this program makes are the hooks loop's genuine, duplicated
/// and late reports (in flight for at most the 20 ms hold plus the queue)
/// and replays from the dead-token lists, which keep the last
/// `DEAD_HISTORY` ended tokens of any kind. Each fire buries its token
/// within the same callback or delivery, so a fired token still in a dead
/// list is among the last `DEAD_HISTORY` fires, plus the few that the
/// delivery threads had in hand; twice that covers it.
#[derive(Default)]
pub(crate) struct FiredWindow {
    tokens: HashSet<u64>,
    order: VecDeque<u64>,
    /// Fires whose token was not in the window.
    distinct: u64,
}

impl FiredWindow {
    /// Records a fire of `token`; `false` if it is in the window already.
    pub(crate) fn record(&mut self, token: u64) -> bool {
        if !self.tokens.insert(token) {
            return false;
        }
        self.distinct += 1;
        if self.order.len() == FIRED_WINDOW {
            if let Some(oldest) = self.order.pop_front() {
                self.tokens.remove(&oldest);
            }
        }
        self.order.push_back(token);
        true
    }
    /// Fires recorded with a token not in the window (all of them, when
    /// no token fired twice).
    pub(crate) fn distinct(&self) -> u64 {
        self.distinct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fired_window_flags_a_token_fired_twice_within_it() {
        let mut w = FiredWindow::default();
        assert!(w.record(7));
        assert!(w.record(8));
        assert!(!w.record(7));
        assert_eq!(w.distinct(), 2);
    }

    #[test]
    fn fired_window_forgets_the_oldest_and_stays_bounded() {
        let mut w = FiredWindow::default();
        for t in 1..=(FIRED_WINDOW as u64 + 1) {
            assert!(w.record(t));
        }
        assert_eq!(w.tokens.len(), FIRED_WINDOW);
        assert_eq!(w.order.len(), FIRED_WINDOW);
        // Token 1 fell out of the window; the newest are still in it.
        assert!(w.record(1));
        assert!(!w.record(FIRED_WINDOW as u64 + 1));
    }
}

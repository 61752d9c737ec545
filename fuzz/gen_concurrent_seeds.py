#!/usr/bin/env python3
"""Writes the seed corpus of the `engine_concurrent` fuzz target
(fuzz/seeds/engine_concurrent/).

Each seed is one scenario, encoded the way `arbitrary` 1.x decodes the
target's `Input` (see gen_seeds.py for the rules; the helpers are shared).
The encoding must follow the order of the enums' variants and the structs'
fields in src/concurrent/grammar.rs; if those change, the seeds still decode
(any bytes do), just into other scenarios: rerun this script.

    python3 fuzz/gen_concurrent_seeds.py
"""

import os

from gen_seeds import boolean, tag, u8, u16, vec

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "engine_concurrent")

# --- Config -------------------------------------------------------------------

HOOKS, EPOLL, URING = range(3)
STEPS, SLEEPING, SPINNING = range(3)


def config(backend, workers=2, driver=STEPS, drop_engine_first=False):
    return tag(backend, 3) + u8(workers - 2) + tag(driver, 3) + boolean(drop_engine_first)


# --- choices ------------------------------------------------------------------

READABLE, WRITABLE, BOTH, NONE, READABLE_EDGE = range(5)


def interest(i):
    return tag(i, 5)


def zero():
    return tag(0, 3)


def ms(k):
    return tag(1, 3) + u8(k)


def far():
    return tag(2, 3)


def t_fd(which, right_fd=True):
    return tag(0, 4) + u8(which) + boolean(right_fd)


def t_timer(which):
    return tag(1, 4) + u8(which)


def t_wrong_kind(which):
    return tag(2, 4) + u8(which)


def t_forged(which, how):
    return tag(3, 4) + u8(which) + u8(how)


# Action: Deregister, Modify, ReportSelf, RegisterTimer, Sleep, Drain, Panic,
# EndOther
N_ACTIONS = 8


def a_deregister():
    return tag(0, N_ACTIONS)


def a_modify(i):
    return tag(1, N_ACTIONS) + interest(i)


def a_report(revents=1):
    return tag(2, N_ACTIONS) + u16(revents)


def a_timer(delay):
    return tag(3, N_ACTIONS) + delay


def a_sleep(us):
    return tag(4, N_ACTIONS) + u8(us)


def a_drain():
    return tag(5, N_ACTIONS)


def a_panic():
    return tag(6, N_ACTIONS)


def a_end_other(which):
    return tag(7, N_ACTIONS) + u8(which)


# --- ops (variant order of `Op`) --------------------------------------------------

N_OPS = 17


def register_fd(pair, i=READABLE):
    return tag(0, N_OPS) + u8(pair) + interest(i)


def register_bad_fd():
    return tag(1, N_OPS)


def register_timer(delay):
    return tag(2, N_OPS) + delay


def modify_fd(which, i):
    return tag(3, N_OPS) + u8(which) + interest(i)


def reset_timer(which, delay):
    return tag(4, N_OPS) + u8(which) + delay


def end(which, by_drop=False):
    return tag(5, N_OPS) + u8(which) + boolean(by_drop)


def report(target, revents=1):
    return tag(6, N_OPS) + target + u16(revents)


def arm(which, actions):
    return tag(7, N_OPS) + u8(which) + vec(actions)


def ready(pair):
    return tag(8, N_OPS) + u8(pair)


def drain(pair):
    return tag(9, N_OPS) + u8(pair)


def reuse_fd(pair):
    return tag(10, N_OPS) + u8(pair)


def run_once():
    return tag(11, N_OPS)


def spin(n):
    return tag(12, N_OPS) + u8(n)


def slow_next_hook(us):
    return tag(13, N_OPS) + u8(us)


def fail_next_hook():
    return tag(14, N_OPS)


def end_by_token(which):
    return tag(15, N_OPS) + u8(which)


def pause_next(after, us):
    return tag(16, N_OPS) + boolean(after) + u8(us)


def step(thread, op):
    return u8(thread) + op


def round_(*steps):
    # A Round is one field, `steps`, a Vec decoded with keep-going bytes.
    return vec(list(steps))


def seed(cfg, rounds):
    # `rounds` is the last field: decoded with take_rest, one keep-going
    # byte per element; running out of bytes ends it.
    return cfg + b"".join(b"\x01" + r for r in rounds)


SEEDS = {
    # Timers registered and reset from two workers while a loop thread
    # spins (io_uring) or sleeps (epoll): every due timer must fire.
    "timers_from_workers_uring": seed(
        config(URING, driver=SPINNING),
        [
            round_(
                step(0, register_timer(zero())),
                step(1, register_timer(far())),
                step(0, register_timer(ms(0))),
                step(1, reset_timer(0, zero())),
                step(0, register_timer(zero())),
                step(1, spin(20)),
                step(1, register_timer(zero())),
            ),
            round_(
                step(0, reset_timer(1, zero())),
                step(1, end(2)),
                step(0, register_timer(zero())),
                step(1, report(t_timer(0))),
            ),
        ],
    ),
    "timers_from_workers_epoll": seed(
        config(EPOLL, workers=3, driver=SLEEPING),
        [
            round_(
                step(0, register_timer(zero())),
                step(1, register_timer(ms(1))),
                step(2, register_timer(far())),
                step(2, reset_timer(0, zero())),
                step(0, register_timer(zero())),
                step(1, reset_timer(1, far())),
            ),
            round_(
                step(0, reset_timer(0, ms(0))),
                step(1, end(1, by_drop=True)),
                step(2, register_timer(zero())),
            ),
        ],
    ),
    # An fd number closed and given a new file while still watched; the new
    # file registered; then the old watch modified and deregistered: the new
    # watch must still run when its fd is readable.
    "fd_reuse_epoll": seed(
        config(EPOLL),
        [
            round_(step(0, register_fd(0))),
            round_(step(0, reuse_fd(0)), step(0, register_fd(0))),
            round_(step(0, end(0)), step(1, ready(0))),
        ],
    ),
    "fd_reuse_uring": seed(
        config(URING, driver=SLEEPING),
        [
            round_(step(0, register_fd(0))),
            round_(step(0, reuse_fd(0)), step(0, register_fd(0))),
            round_(step(0, modify_fd(0, READABLE)), step(1, ready(0))),
            round_(step(1, end(0)), step(0, ready(0))),
        ],
    ),
    # Deregistration from inside a callback while a slowed modify on
    # another thread holds the registration (hooks), then the same on epoll.
    "self_deregister_vs_modify": seed(
        config(HOOKS),
        [
            round_(step(0, register_fd(0)), step(0, arm(0, [a_deregister(), a_report()]))),
            round_(
                step(0, slow_next_hook(200)),
                step(0, modify_fd(0, BOTH)),
                step(1, spin(30)),
                step(1, report(t_fd(0))),
                step(1, report(t_fd(0))),
            ),
            round_(step(0, register_fd(1)), step(1, report(t_fd(1)))),
        ],
    ),
    "self_deregister_vs_modify_epoll": seed(
        config(EPOLL, driver=SPINNING),
        [
            round_(step(0, register_fd(0)), step(0, arm(0, [a_sleep(100), a_deregister()]))),
            round_(
                step(1, ready(0)),
                step(0, modify_fd(0, BOTH)),
                step(0, modify_fd(0, READABLE)),
            ),
        ],
    ),
    # Reports of one watch from two threads while its callback sleeps:
    # reruns, never concurrent runs; forged and wrong-kind tokens.
    "reports_and_forgeries": seed(
        config(HOOKS, workers=3),
        [
            round_(
                step(0, register_fd(0)),
                step(0, register_timer(far())),
                step(0, arm(0, [a_sleep(50), a_report(4), a_modify(BOTH)])),
            ),
            round_(
                step(0, report(t_fd(0))),
                step(1, report(t_fd(0), 4)),
                step(2, report(t_fd(0, right_fd=False))),
                step(1, report(t_wrong_kind(0))),
                step(2, report(t_wrong_kind(1))),
                step(0, report(t_forged(0, 0))),
                step(1, report(t_forged(0, 1))),
                step(2, report(t_forged(0, 2 + 128))),
                step(2, report(t_timer(0))),
                step(1, report(t_timer(0))),
            ),
        ],
    ),
    # Panics, failed hooks, bad fds, and dropping the engine first.
    "failures": seed(
        config(HOOKS, drop_engine_first=True),
        [
            round_(
                step(0, register_bad_fd()),
                step(0, fail_next_hook()),
                step(0, register_fd(0)),
                step(1, register_fd(1)),
                step(1, register_timer(zero())),
                step(0, register_fd(2, READABLE_EDGE)),
            ),
            round_(
                step(0, arm(0, [a_panic()])),
                step(1, arm(1, [a_timer(zero()), a_panic()])),
                step(0, report(t_fd(0))),
                step(1, report(t_timer(0))),
                step(0, fail_next_hook()),
                step(1, modify_fd(0, WRITABLE)),
            ),
        ],
    ),
    # The smallest input that lost a timer before the fix of issue #7 (1 in
    # 20 replays): one worker registers a timer due at once while the loop
    # thread spins.
    "timer_zero_from_worker": seed(
        config(URING, driver=SPINNING),
        [round_(step(0, register_timer(zero())))],
    ),
    # A registration paused under its control bit, after its backend call,
    # while the loop thread spins: the loop meets the timer "under control".
    "paused_timer_registration": seed(
        config(URING, driver=SPINNING),
        [
            round_(
                step(0, pause_next(True, 250)),
                step(0, register_timer(zero())),
                step(1, register_timer(far())),
                step(1, pause_next(True, 250)),
                step(1, reset_timer(1, zero())),
            ),
        ],
    ),
    # Engine::deregister by token from outside racing a paused modify of
    # the same watch, and two callbacks that end each other.
    "token_end_vs_modify": seed(
        config(EPOLL, driver=SPINNING),
        [
            round_(step(0, register_fd(0)), step(0, register_fd(1)), step(0, register_timer(far()))),
            round_(
                step(0, pause_next(False, 200)),
                step(0, modify_fd(0, BOTH)),
                step(1, spin(20)),
                step(1, end_by_token(0)),
                step(1, end_by_token(2)),
                step(0, end_by_token(0)),
            ),
        ],
    ),
    "callbacks_end_each_other": seed(
        config(HOOKS, workers=3),
        [
            round_(
                step(0, register_fd(0)),
                step(0, register_fd(1)),
                step(0, register_timer(far())),
                step(0, arm(0, [a_sleep(30), a_end_other(1), a_end_other(2)])),
                step(0, arm(1, [a_sleep(30), a_end_other(0)])),
            ),
            round_(
                step(0, report(t_fd(0))),
                step(1, report(t_fd(1))),
                step(2, end_by_token(0)),
                step(2, report(t_timer(0))),
            ),
        ],
    ),
    # Cancel racing the loop's fire, edge watches, workers driving the loop.
    "cancel_vs_fire_edges": seed(
        config(URING, workers=3),
        [
            round_(
                step(0, register_timer(zero())),
                step(1, register_fd(1, READABLE_EDGE)),
                step(2, ready(1)),
                step(1, run_once()),
                step(0, end(0)),
                step(2, run_once()),
                step(0, register_timer(ms(0))),
                step(1, modify_fd(0, READABLE)),
                step(2, arm(1, [a_drain(), a_modify(READABLE_EDGE)])),
            ),
            round_(step(0, run_once()), step(1, ready(1)), step(2, run_once())),
        ],
    ),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {OUT}")


if __name__ == "__main__":
    main()

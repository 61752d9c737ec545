#!/usr/bin/env python3
"""Writes the seed corpus of the `engine_ops` fuzz target (fuzz/seeds/engine_ops/).

Each seed is one scenario, encoded the way `arbitrary` 1.x decodes the
target's `Input` (little-endian integers; an enum tag is a u32 whose
`(tag * variants) >> 32` is the variant; a `Vec` is a keep-going byte before
each element, then a 0 byte). The encoding must follow the order of the
enums' variants in src/ops/grammar.rs; if those change, the seeds
still decode (any bytes do), just into other scenarios: rerun this script.

    python3 fuzz/gen_seeds.py
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "engine_ops")


def u8(x):
    return struct.pack("<B", x & 0xFF)


def i8(x):
    return struct.pack("<b", x)


def u16(x):
    return struct.pack("<H", x & 0xFFFF)


def i32(x):
    return struct.pack("<i", x)


def u64(x):
    return struct.pack("<Q", x & (2**64 - 1))


def boolean(x):
    return u8(1 if x else 0)


def tag(i, n):
    """The u32 that `arbitrary`'s derive maps to variant i of n."""
    return struct.pack("<I", ((2 * i + 1) << 32) // (2 * n))


def vec(items):
    return b"".join(b"\x01" + it for it in items) + b"\x00"


# --- Config -----------------------------------------------------------------

def config(first_gen=None, limit=None, drop_engine_first=False, recheck=False):
    # FirstGen: Default, NearMax(u8), Any(u64)
    if first_gen is None:
        fg = tag(0, 3)
    elif first_gen[0] == "near_max":
        fg = tag(1, 3) + u8(first_gen[1])
    else:
        fg = tag(2, 3) + u64(first_gen[1])
    lim = boolean(False) if limit is None else boolean(True) + u8(limit)
    return fg + lim + boolean(drop_engine_first) + boolean(recheck)


# --- choices ------------------------------------------------------------------

def fd_pipe(k):
    return tag(0, 4) + u8(k)


def fd_negative(n):
    return tag(1, 4) + i32(n)


def fd_unopened(k):
    return tag(2, 4) + u8(k)


def fd_any(fd):
    return tag(3, 4) + i32(fd)


def tok_live_fd(w):
    return tag(0, 4) + u8(w)


def tok_live_timer(w):
    return tag(1, 4) + u8(w)


def tok_history(w):
    return tag(2, 4) + u8(w)


def tok_raw(x):
    return tag(3, 4) + tag(0, 3) + u64(x)


def tok_slot(index, gen):
    return tag(3, 4) + tag(1, 3) + u16(index) + gen


def tok_near(which, dindex, dgen):
    return tag(3, 4) + tag(2, 3) + u8(which) + i8(dindex) + i8(dgen)


def gen_zero():
    return tag(0, 5)


def gen_first():
    return tag(1, 5)


def gen_configured(k):
    return tag(2, 5) + u8(k)


def gen_max(k):
    return tag(3, 5) + u8(k)


def gen_any(x):
    return tag(4, 5) + u64(x)


def sel_right():
    return tag(0, 3)


def sel_pipe(k):
    return tag(1, 3) + u8(k)


def sel_any(fd):
    return tag(2, 3) + i32(fd)


# Action: Deregister, Report{as_timeout, wrong_fd, revents}, Modify{interest}, Panic
def a_deregister():
    return tag(0, 4)


def a_report(revents=1, as_timeout=False, wrong_fd=False):
    return tag(1, 4) + boolean(as_timeout) + boolean(wrong_fd) + u16(revents)


def a_modify(interest):
    return tag(2, 4) + u16(interest)


def a_panic():
    return tag(3, 4)


# --- ops (variant order of `Op`) -------------------------------------------------

N_OPS = 13
POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP = 0x1, 0x2, 0x4, 0x8, 0x10


def register_fd(fd, interest=POLLIN):
    return tag(0, N_OPS) + fd + u16(interest)


def register_timer(delay_ms=10):
    return tag(1, N_OPS) + u16(delay_ms)


def modify_fd(which, interest):
    return tag(2, N_OPS) + u8(which) + u16(interest)


def reset_timer(which, delay_ms):
    return tag(3, N_OPS) + u8(which) + u16(delay_ms)


def deregister_fd(which, by_drop=False):
    return tag(4, N_OPS) + u8(which) + boolean(by_drop)


def cancel_timer(which, by_drop=False):
    return tag(5, N_OPS) + u8(which) + boolean(by_drop)


def occurred_fd(token, fd=None, revents=POLLIN):
    return tag(6, N_OPS) + token + (fd if fd is not None else sel_right()) + u16(revents)


def occurred_timeout(token):
    return tag(7, N_OPS) + token


def arm(which, actions):
    return tag(8, N_OPS) + u8(which) + vec(actions)


def arm_new(actions):
    return tag(9, N_OPS) + vec(actions)


def fail_next_hook(panic=False):
    return tag(10, N_OPS) + boolean(panic)


def panic_next_deregister_hook():
    return tag(11, N_OPS)


def report_in_next_register_hook(revents=POLLIN):
    return tag(12, N_OPS) + u16(revents)


def seed(cfg, ops):
    # `ops` is the last field: decoded with take_rest, still one keep-going
    # byte per element; running out of bytes ends it.
    return cfg + b"".join(b"\x01" + op for op in ops)


SEEDS = {
    # Live, wrong-fd, wrong-kind, dead and forged tokens on both kinds.
    "tokens": seed(
        config(),
        [
            register_fd(fd_pipe(0)),
            register_fd(fd_pipe(1), POLLIN | POLLOUT),
            register_timer(5),
            occurred_fd(tok_live_fd(0)),
            occurred_fd(tok_live_fd(1), sel_pipe(2), POLLOUT),
            occurred_fd(tok_live_fd(0), sel_any(-1)),
            occurred_fd(tok_live_timer(0)),
            occurred_timeout(tok_live_fd(0)),
            occurred_fd(tok_raw(0)),
            occurred_timeout(tok_slot(5000, gen_first())),
            occurred_fd(tok_slot(3, gen_first())),
            occurred_fd(tok_near(0, 0, 1)),
            occurred_fd(tok_near(1, 1, 0)),
            occurred_timeout(tok_slot(0, gen_zero())),
            modify_fd(0, POLLOUT),
            reset_timer(0, 50),
            deregister_fd(0),
            occurred_fd(tok_history(0)),
            occurred_timeout(tok_live_timer(0)),
            occurred_timeout(tok_history(2)),
            cancel_timer(0),
            register_fd(fd_pipe(3)),
            occurred_fd(tok_history(0)),
            occurred_fd(tok_live_fd(0)),
        ],
    ),
    # A panicking fd callback and a panicking timer callback.
    "panics": seed(
        config(),
        [
            register_fd(fd_pipe(0)),
            register_timer(1),
            arm(0, [a_panic()]),
            occurred_fd(tok_live_fd(0)),
            occurred_fd(tok_history(0)),
            arm(1, [a_report(as_timeout=True), a_report(), a_panic()]),
            occurred_timeout(tok_live_timer(0)),
            occurred_timeout(tok_history(1)),
            deregister_fd(0),
            cancel_timer(0),
        ],
    ),
    # Re-entrant calls from inside a callback: reruns, modify, deregister.
    "reentrant": seed(
        config(),
        [
            register_fd(fd_pipe(0)),
            arm(0, [a_report(POLLOUT), a_report(POLLIN, wrong_fd=True), a_modify(POLLOUT)]),
            occurred_fd(tok_live_fd(0)),
            arm(0, [a_report(POLLHUP), a_deregister(), a_report(POLLIN), a_modify(POLLIN)]),
            occurred_fd(tok_live_fd(0), revents=POLLERR),
            occurred_fd(tok_history(0)),
            deregister_fd(0),
            register_fd(fd_pipe(1)),
            fail_next_hook(),
            arm(0, [a_modify(POLLOUT), a_report(as_timeout=True), a_deregister(), a_panic()]),
            occurred_fd(tok_live_fd(0)),
        ],
    ),
    # Hook failures: register (both kinds), modify, reset; as errors and as
    # panics; panicking deregister hooks.
    "hook_failures": seed(
        config(),
        [
            fail_next_hook(panic=True),
            register_fd(fd_pipe(0)),
            register_timer(3),
            fail_next_hook(panic=True),
            modify_fd(0, POLLOUT),
            panic_next_deregister_hook(),
            deregister_fd(0),
            panic_next_deregister_hook(),
            cancel_timer(0),
            fail_next_hook(),
            register_fd(fd_pipe(0)),
            fail_next_hook(),
            register_timer(3),
            register_fd(fd_pipe(1)),
            register_timer(3),
            fail_next_hook(),
            modify_fd(0, POLLOUT),
            fail_next_hook(),
            reset_timer(0, 7),
            occurred_fd(tok_history(0)),
            occurred_timeout(tok_history(1)),
            occurred_fd(tok_live_fd(0)),
            occurred_timeout(tok_live_timer(0)),
        ],
    ),
    # The register hook reports its token before returning.
    "in_hook": seed(
        config(),
        [
            report_in_next_register_hook(POLLIN),
            register_fd(fd_pipe(0)),
            arm_new([a_report(POLLOUT), a_modify(POLLOUT), a_deregister()]),
            report_in_next_register_hook(POLLIN),
            register_fd(fd_pipe(1)),
            arm_new([a_panic()]),
            report_in_next_register_hook(POLLIN),
            register_fd(fd_pipe(2)),
            arm_new([a_deregister()]),
            report_in_next_register_hook(POLLIN),
            fail_next_hook(),
            register_fd(fd_pipe(3)),
            arm_new([a_report(as_timeout=True), a_panic()]),
            report_in_next_register_hook(),
            register_timer(2),
            report_in_next_register_hook(),
            fail_next_hook(),
            register_timer(2),
            occurred_fd(tok_history(1)),
            occurred_timeout(tok_history(4)),
        ],
    ),
    # Slots retired at Generation::MAX, a small limit, Error::Full.
    "retire_full": seed(
        config(first_gen=("near_max", 1), limit=2),
        [
            register_fd(fd_pipe(0)),
            register_timer(1),
            register_fd(fd_pipe(1)),
            deregister_fd(0),
            register_fd(fd_pipe(1)),
            deregister_fd(0),
            occurred_timeout(tok_live_timer(0)),
            register_timer(1),
            cancel_timer(0),
            register_fd(fd_pipe(1)),
            occurred_fd(tok_history(0)),
            occurred_fd(tok_slot(0, gen_max(0))),
            occurred_fd(tok_slot(1, gen_max(1))),
            occurred_fd(tok_slot(2, gen_max(0))),
        ],
    ),
    # The fd re-check option: the interest the engine holds decides whether
    # a callback runs (the socket pairs are writable, never readable), so a
    # failed modify must leave it unchanged.
    "recheck": seed(
        config(limit=40, recheck=True),
        [
            register_fd(fd_pipe(0), POLLIN),
            occurred_fd(tok_live_fd(0), revents=POLLIN),
            modify_fd(0, POLLOUT),
            occurred_fd(tok_live_fd(0), revents=POLLIN),
            fail_next_hook(),
            modify_fd(0, POLLIN),
            occurred_fd(tok_live_fd(0), revents=POLLIN),
            arm(0, [a_modify(POLLIN), a_report(POLLOUT)]),
            occurred_fd(tok_live_fd(0), revents=POLLOUT),
            occurred_fd(tok_live_fd(0), revents=POLLOUT),
        ],
    ),
    # Bad fds, and dropping the engine before its handles.
    "bad_fds_engine_first": seed(
        config(first_gen=("any", 12345), drop_engine_first=True),
        [
            register_fd(fd_negative(-1)),
            register_fd(fd_unopened(0)),
            register_fd(fd_unopened(2)),
            register_fd(fd_any(2**31 - 1)),
            register_fd(fd_pipe(0)),
            register_timer(100),
            register_fd(fd_pipe(1)),
            deregister_fd(1, by_drop=True),
            register_timer(100),
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

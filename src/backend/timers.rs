//! The built-in loops' timer queue: a binary heap of `(deadline, seq,
//! token)` owned by the thread that drives the loop, bounding how long the
//! loop may sleep.
//!
//! Measured on the development machine at 10,000 and 100,000 timers, a heap
//! with one bounded wait beats one io_uring TIMEOUT operation per timer by
//! 20x to 100x (the queue's own register+cancel ~7-20 ns against ~1,500 ns;
//! register+fire ~55-65 ns against ~1,000-1,200 ns; the kernel keeps ring
//! timeouts in a sorted list and each costs an SQE and a CQE), so the
//! io_uring loop uses this queue too. (Through the engine a timer costs
//! more: a slot, a handle, the command queue; see `benches/timers.rs`.)
//!
//! Entries are never removed on cancel or modify: the slot is the truth.
//! An entry fires only if its timer is still live with exactly this
//! deadline (checked under the slot protocol by `fire_if_due`); stale
//! entries are dropped when they come up, or all at once by `compact` when
//! they outnumber the live ones.

use crate::base::token::Token;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(u64, u64, Token)>>,
    /// Insertion counter: equal deadlines fire in the order they were set.
    seq: u64,
}

impl TimerQueue {
    pub(crate) fn push(&mut self, deadline: u64, token: Token) {
        self.seq += 1;
        self.heap.push(Reverse((deadline, self.seq, token)));
    }

    /// The earliest deadline queued (possibly of a stale entry: waking for
    /// one early is harmless).
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Moves every entry due at `now` into `out`, earliest first.
    pub(crate) fn pop_due(&mut self, now: u64, out: &mut Vec<Token>) {
        while let Some(&Reverse((deadline, _, token))) = self.heap.peek() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            out.push(token);
        }
    }

    /// Drops entries from the front while `current(token, deadline)` is
    /// false (the timer was cancelled, fired, or moved), so that
    /// [`TimerQueue::next_deadline`] is a live timer's.
    pub(crate) fn drop_stale_front(&mut self, mut current: impl FnMut(Token, u64) -> bool) {
        while let Some(&Reverse((deadline, _, token))) = self.heap.peek() {
            if current(token, deadline) {
                break;
            }
            self.heap.pop();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every entry for which `current(token, deadline)` is false.
    pub(crate) fn compact(&mut self, mut current: impl FnMut(Token, u64) -> bool) {
        self.heap.retain(|Reverse((d, _, t))| current(*t, *d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_out_in_deadline_then_insertion_order() {
        let mut q = TimerQueue::default();
        let t = |n: u64| Token::from_u64(n << 24);
        q.push(30, t(1));
        q.push(10, t(2));
        q.push(20, t(3));
        q.push(10, t(4));
        assert_eq!(q.next_deadline(), Some(10));
        let mut out = Vec::new();
        q.pop_due(20, &mut out);
        assert_eq!(out, vec![t(2), t(4), t(3)]);
        assert_eq!(q.next_deadline(), Some(30));
        q.compact(|_, _| false);
        assert_eq!(q.len(), 0);
    }
}

//! The built-in loops' timer queue, owned by the thread that drives the
//! loop: it bounds how long the loop may sleep and yields the timers due.
//!
//! Measured on the development machine at 10,000 and 100,000 timers, a
//! user-space queue with one bounded wait beats one io_uring TIMEOUT
//! operation per timer by 20x to 100x (the queue's own register+cancel
//! ~7-20 ns against ~1,500 ns; register+fire ~55-65 ns against ~1,000-1,200
//! ns; the kernel keeps ring timeouts in a sorted list and each costs an SQE
//! and a CQE), so the io_uring loop uses this queue too. (Through the
//! engine a timer costs more: a slot, a handle, the command queue; see
//! `benches/timers.rs`.)
//!
//! # Runs beside a heap
//!
//! Most timers of a program come in runs: timeouts of one duration set one
//! after another (a watchdog per request, a keepalive per connection) have
//! deadlines that never decrease. Such an entry goes to the back of a
//! *run*, a FIFO whose deadlines never decrease, in O(1), and leaves from
//! its front in O(1). An entry that fits behind no run goes to a binary
//! heap, O(log n) both ways, as before. The earliest entry is the earliest
//! of the runs' fronts and the heap's top. This generalises libevent's
//! "common timeouts" (one queue per duration, declared by the application)
//! without asking the application anything: [`RUNS`] runs, and an entry
//! joins the run whose last deadline is the latest one not after its own
//! (so two interleaved durations settle into two runs). The order is the
//! same as a heap's: by deadline, then in the order the entries were set.
//! Deadlines keep their nanoseconds; nothing is rounded.
//!
//! Entries are never removed on cancel or modify: the slot is the truth.
//! An entry fires only if its timer is still live with exactly this
//! deadline (checked under the slot protocol by `fire_due`); stale
//! entries are dropped when they come up, or all at once by `compact` when
//! they outnumber the live ones.

use crate::base::token::Token;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Runs kept beside the heap. Every pop compares their fronts, so few;
/// enough for the handful of timeout durations a program typically uses.
const RUNS: usize = 4;

/// `(deadline, seq, token)`: ordered by deadline, then insertion.
type Entry = (u64, u64, Token);

/// The bound of [`TimerQueue::earliest_and_bound`] when no other source
/// holds an entry: above every key.
const NO_BOUND: (u64, u64) = (u64::MAX, u64::MAX);

/// Where the earliest entry is.
#[derive(Clone, Copy)]
enum Source {
    Run(usize),
    Heap,
}

#[derive(Default)]
pub(crate) struct TimerQueue {
    /// Each run's deadlines never decrease from front to back.
    runs: [VecDeque<Entry>; RUNS],
    heap: BinaryHeap<Reverse<Entry>>,
    /// The run whose last deadline is the latest (a hint, see `push`).
    latest: usize,
    /// Insertion counter: equal deadlines fire in the order they were set.
    seq: u64,
    /// Entries in the runs and the heap: an empty queue, the case of a loop
    /// without timers, answers every question without looking at them.
    len: usize,
}

impl TimerQueue {
    pub(crate) fn push(&mut self, deadline: u64, token: Token) {
        self.seq += 1;
        self.len += 1;
        let entry = (deadline, self.seq, token);
        // The common case in one comparison: the run with the latest last
        // deadline takes it (`seq` only grows, so the entry sorts after it).
        if let Some(&(last, _, _)) = self.runs[self.latest].back() {
            if last <= deadline {
                self.runs[self.latest].push_back(entry);
                return;
            }
        }
        // Else the run whose last deadline is the latest one not after this
        // deadline, else an empty run, else the heap.
        let mut fit: Option<(usize, u64)> = None;
        let mut empty = None;
        for (i, run) in self.runs.iter().enumerate() {
            match run.back() {
                Some(&(last, _, _)) if last <= deadline => {
                    if fit.map_or(true, |(_, best)| last > best) {
                        fit = Some((i, last));
                    }
                }
                Some(_) => {}
                None => {
                    empty.get_or_insert(i);
                }
            }
        }
        match fit.map(|(i, _)| i).or(empty) {
            Some(i) => self.runs[i].push_back(entry),
            None => self.heap.push(Reverse(entry)),
        }
        self.find_latest();
    }

    /// Points `latest` at the run with the latest last deadline. Only a
    /// hint for `push`: any run whose last deadline is not after an entry's
    /// may take it.
    fn find_latest(&mut self) {
        let backs = self.runs.iter().map(|r| r.back().map(|&(d, _, _)| d));
        self.latest = backs
            .enumerate()
            .max_by_key(|&(_, back)| back)
            .map_or(0, |(i, _)| i);
    }

    /// The earliest entry and where it is.
    #[inline]
    fn earliest(&self) -> Option<(Entry, Source)> {
        self.earliest_and_bound().map(|(e, source, _)| (e, source))
    }

    /// The earliest entry, where it is, and the key (deadline, seq) of the
    /// earliest entry of every other source ([`NO_BOUND`] if none): the
    /// entries of that source sort before every other until one reaches
    /// the bound.
    #[inline]
    fn earliest_and_bound(&self) -> Option<(Entry, Source, (u64, u64))> {
        if self.len == 0 {
            return None;
        }
        let mut best = self.heap.peek().map(|&Reverse(e)| (e, Source::Heap));
        let mut bound = NO_BOUND;
        for (i, run) in self.runs.iter().enumerate() {
            if let Some(&e) = run.front() {
                match best {
                    Some((b, _)) if (b.0, b.1) < (e.0, e.1) => bound = bound.min((e.0, e.1)),
                    _ => {
                        if let Some((b, _)) = best {
                            bound = bound.min((b.0, b.1));
                        }
                        best = Some((e, Source::Run(i)));
                    }
                }
            }
        }
        best.map(|(e, source)| (e, source, bound))
    }

    /// The front entry of `source`.
    #[inline]
    fn front(&self, source: Source) -> Option<Entry> {
        match source {
            Source::Run(i) => self.runs[i].front().copied(),
            Source::Heap => self.heap.peek().map(|&Reverse(e)| e),
        }
    }

    /// Removes the earliest entry, found by [`TimerQueue::earliest`].
    #[inline]
    fn remove(&mut self, source: Source) {
        self.len -= 1;
        match source {
            Source::Run(i) => drop(self.runs[i].pop_front()),
            Source::Heap => drop(self.heap.pop()),
        }
    }

    /// The earliest deadline queued (possibly of a stale entry: waking for
    /// one early is harmless).
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.earliest().map(|((d, _, _), _)| d)
    }

    /// Moves every entry due at `now` into `out`, earliest first.
    pub(crate) fn pop_due(&mut self, now: u64, out: &mut Vec<Token>) {
        while let Some(((deadline, _, _), source, bound)) = self.earliest_and_bound() {
            if deadline > now {
                break;
            }
            // The earliest source's entries come out without comparing the
            // other fronts again, up to the first that is not due or sorts
            // after their earliest (a run of due timers costs a comparison
            // each, not a scan of every source). `seq` never reaches
            // `u64::MAX`, so `(now, u64::MAX)` admits every deadline up to
            // `now`, and keys are unique, so `<=` the bound is `<`.
            let limit = bound.min((now, u64::MAX));
            while let Some((d, seq, token)) = self.front(source) {
                if (d, seq) > limit {
                    break;
                }
                self.remove(source);
                out.push(token);
            }
        }
    }

    /// Drops entries from the front while `current(token, deadline)` is
    /// false (the timer was cancelled, fired, or moved), so that
    /// [`TimerQueue::next_deadline`] is a live timer's.
    pub(crate) fn drop_stale_front(&mut self, mut current: impl FnMut(Token, u64) -> bool) {
        while let Some(((deadline, _, token), source)) = self.earliest() {
            if current(token, deadline) {
                break;
            }
            self.remove(source);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Drops every entry for which `current(token, deadline)` is false.
    pub(crate) fn compact(&mut self, mut current: impl FnMut(Token, u64) -> bool) {
        // Removing entries keeps a run's order.
        for run in &mut self.runs {
            run.retain(|&(d, _, t)| current(t, d));
        }
        self.heap.retain(|Reverse((d, _, t))| current(*t, *d));
        self.len = self.heap.len() + self.runs.iter().map(VecDeque::len).sum::<usize>();
        self.find_latest();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> Token {
        Token::from_u64(n << 24)
    }

    #[test]
    fn due_entries_come_out_in_deadline_then_insertion_order() {
        let mut q = TimerQueue::default();
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

    #[test]
    fn non_decreasing_deadlines_stay_in_runs_and_two_interleaved_durations_take_two_runs() {
        let mut q = TimerQueue::default();
        // A 10-unit timeout and a 1,000-unit timeout set at times 0, 1, 2...
        for now in 0..100 {
            q.push(now + 10, t(2 * now));
            q.push(now + 1000, t(2 * now + 1));
        }
        assert!(q.heap.is_empty(), "no entry needed the heap");
        assert_eq!(q.runs.iter().filter(|r| !r.is_empty()).count(), 2);
        let mut out = Vec::new();
        q.pop_due(109, &mut out);
        assert_eq!(out, (0..100).map(|n| t(2 * n)).collect::<Vec<_>>());
        out.clear();
        q.pop_due(u64::MAX, &mut out);
        assert_eq!(out, (0..100).map(|n| t(2 * n + 1)).collect::<Vec<_>>());
    }

    /// A pop drains the earliest source only up to the front of the next:
    /// two runs whose due entries interleave, and a heap entry between
    /// them, come out merged. (Built by hand: `push` would have put
    /// these deadlines in fewer runs.)
    #[test]
    fn due_entries_of_interleaved_runs_and_the_heap_come_out_merged() {
        let mut q = TimerQueue::default();
        q.runs[0] = VecDeque::from([(100, 1, t(1)), (120, 3, t(3)), (140, 5, t(5))]);
        q.runs[1] = VecDeque::from([(110, 2, t(2)), (130, 4, t(4)), (150, 6, t(6))]);
        q.heap.push(Reverse((125, 7, t(7))));
        (q.len, q.seq) = (7, 7);
        let mut out = Vec::new();
        q.pop_due(140, &mut out);
        assert_eq!(
            out,
            [1, 2, 3, 7, 4, 5].map(t),
            "100, 110, 120, 125, 130, 140"
        );
        assert_eq!(q.next_deadline(), Some(150));
        assert_eq!(q.len(), 1);
    }

    /// The queue against a sorted list, over random pushes (some runs, some
    /// scattered, `u64::MAX` and 0 included), pops, stale drops and
    /// compactions: the same entries come out in the same order.
    #[test]
    fn matches_a_sorted_reference_under_random_operations() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Fewer under miri, which runs this some thousand times slower.
        let rounds = if cfg!(miri) { 4 } else { 200 };
        for round in 0..rounds {
            let mut q = TimerQueue::default();
            let mut model: Vec<(u64, u64, Token)> = Vec::new();
            let mut seq = 0;
            let mut clock = 0u64;
            let mut next_token = 0;
            for _ in 0..300 {
                match rand() % 10 {
                    0..=5 => {
                        let deadline = match rand() % 8 {
                            0 => u64::MAX,
                            1 => 0,
                            2 | 3 => clock + rand() % 1000,
                            // Runs of a few durations.
                            k => clock + 100 * k,
                        };
                        clock += rand() % 3;
                        next_token += 1;
                        seq += 1;
                        q.push(deadline, t(next_token));
                        model.push((deadline, seq, t(next_token)));
                    }
                    6 | 7 => {
                        let now = clock + rand() % 500;
                        let mut got = Vec::new();
                        q.pop_due(now, &mut got);
                        model.sort_unstable();
                        let split = model.partition_point(|e| e.0 <= now);
                        let want: Vec<Token> = model.drain(..split).map(|e| e.2).collect();
                        assert_eq!(got, want, "round {round}: pop_due({now})");
                    }
                    8 => {
                        // Entries with an even token are stale.
                        let stale = |tok: Token, _| (tok.as_u64() >> 24) % 2 == 1;
                        q.drop_stale_front(stale);
                        model.sort_unstable();
                        let keep = model.iter().position(|e| stale(e.2, e.0));
                        model.drain(..keep.unwrap_or(model.len()));
                    }
                    _ => {
                        let live = |tok: Token, d: u64| (tok.as_u64() >> 24) % 3 != 0 || d == 0;
                        q.compact(live);
                        model.retain(|e| live(e.2, e.0));
                    }
                }
                model.sort_unstable();
                assert_eq!(q.len(), model.len(), "round {round}");
                let held = q.heap.len() + q.runs.iter().map(VecDeque::len).sum::<usize>();
                assert_eq!(
                    q.len(),
                    held,
                    "round {round}: the count is what the queue holds"
                );
                assert_eq!(q.next_deadline(), model.first().map(|e| e.0));
            }
            let mut got = Vec::new();
            q.pop_due(u64::MAX, &mut got);
            assert_eq!(got, model.iter().map(|e| e.2).collect::<Vec<_>>());
        }
    }
}

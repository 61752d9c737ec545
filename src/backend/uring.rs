//! The io_uring backend: the built-in loop waits in `io_uring_enter`.
//!
//! The ring carries one operation: an `EPOLL_WAIT` on the loop's epoll set
//! (kernel 6.15 on; before that, a one-shot `POLL_ADD` on the epoll fd
//! followed by a non-blocking `epoll_wait`). The set holds every fd watch,
//! level-triggered and edge-triggered (`EPOLLET`) alike, and the wake-up
//! eventfd; timers bound the `io_uring_enter` timeout (no operation per
//! timer: see `timers`). So registrations from any thread need no ring
//! access, and every event costs what epoll's own costs. The operation is
//! queued only when the set is found idle: with nothing in flight a turn
//! first looks at the set with a non-blocking `epoll_wait`, so a busy loop
//! makes the same one system call per turn as the epoll backend, and a
//! loop whose operation is in flight looks by reading the completion
//! queue, with no system call at all.
//!
//! Edge-triggered watches used to be multishot `POLL_ADD` operations, one
//! per watch. Measured on the development machine (busy/64 and busy/1024
//! against mio), `EPOLLET` in the set was faster on both sizes (the ring's
//! task work per wake-up was 21% of the multishot profile), and it keeps
//! the epoll fd an exact picture of what is ready, which nesting needs.
//!
//! A non-blocking wait (`Some(Duration::ZERO)`, what a host loop that nests
//! the engine calls) reads the set with `epoll_wait` directly and leaves no
//! operation in flight: an `EPOLL_WAIT` in flight would harvest the set's
//! edge-triggered readiness from the ring's task work behind the host's
//! back, and the host would sleep on an fd that no longer looks ready.
//!
//! A full submission queue is submitted and retried, never dropped; the
//! ring must offer `IORING_FEAT_NODROP`, so an overflowing completion queue
//! is kept by the kernel and flushed as the loop reaps (an `EBUSY` from
//! submit means exactly that: reap, then retry).

use crate::backend::builtin::{Event, Waiter, CANCEL_DATA, EPOLL_DATA};
use crate::backend::epoll::translate;
use crate::dispatch::BackendKind;
use io_uring::{opcode, squeue, types, IoUring, Probe};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Events one `EPOLL_WAIT` may return.
const EPOLL_BATCH: usize = 1024;

pub(crate) struct UringWaiter {
    ring: IoUring,
    /// `EPOLL_WAIT`'s output. Boxed so it stays put while the operation is
    /// in flight; never touched then.
    buf: Box<[libc::epoll_event]>,
    epoll_in_flight: bool,
    /// Fallback mode: the `POLL_ADD` on the epoll fd fired.
    epoll_ready: bool,
    /// The kernel has `IORING_OP_EPOLL_WAIT`.
    epoll_op: bool,
    /// Completions reaped while making room, handed out by the next wait.
    reaped: Vec<Event>,
    /// Scratch for reaping: (user data, result).
    batch: Vec<(u64, i32)>,
    sq_full: u64,
    cq_overflow: u64,
}

impl UringWaiter {
    /// A ring of `entries` submission entries (completion queue twice
    /// that). `inject` makes setup fail with that errno (tests of the epoll
    /// fallback).
    pub(crate) fn new(entries: u32, inject: Option<i32>) -> io::Result<UringWaiter> {
        if let Some(errno) = inject {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let entries = entries.clamp(1, 32768);
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .setup_clamp()
            .build(entries)?;
        let params = ring.params();
        if !params.is_feature_nodrop() || !params.is_feature_ext_arg() {
            // Without NODROP an overflow loses completions; without EXT_ARG
            // the wait has no timeout. Kernels that old get epoll.
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        Ok(UringWaiter {
            epoll_op: probe.is_supported(opcode::EpollWait::CODE),
            ring,
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_BATCH].into_boxed_slice(),
            epoll_in_flight: false,
            epoll_ready: false,
            reaped: Vec::new(),
            batch: Vec::new(),
            sq_full: 0,
            cq_overflow: 0,
        })
    }

    /// Testing aid: behave as on a kernel without `EPOLL_WAIT`.
    pub(crate) fn without_epoll_wait_op(mut self) -> UringWaiter {
        self.epoll_op = false;
        self
    }

    /// Queues `entry`, making room as often as it takes.
    ///
    /// # Safety
    /// Whatever `entry` points to must stay valid until its completion.
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller's contract.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.sq_full += 1;
            self.submit(0)?;
        }
    }

    /// Submits what is queued and waits for `want` completions (at most
    /// `timeout`); reaps whatever completed.
    fn submit_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        let r = match timeout {
            Some(d) => {
                // The kernel reads the seconds as signed: clamp, or
                // `Duration::MAX` would be a negative (instant) timeout.
                let ts = types::Timespec::new()
                    .sec(d.as_secs().min(i64::MAX as u64))
                    .nsec(d.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            None => self.ring.submitter().submit_and_wait(want),
        };
        match r {
            Ok(_) => {}
            Err(e) => match e.raw_os_error() {
                // Timed out: a wait that found nothing.
                Some(libc::ETIME) => {}
                // Interrupted: take what completed; the loop retries with
                // what is left of the timeout if that is nothing.
                Some(libc::EINTR) => {
                    self.reap()?;
                    return Err(e);
                }
                // The completion queue overflowed into the kernel's backlog
                // and the submission could not proceed: reap to make room.
                Some(libc::EBUSY) | Some(libc::EAGAIN) => self.cq_overflow += 1,
                _ => return Err(e),
            },
        }
        self.reap()
    }

    fn submit(&mut self, want: usize) -> io::Result<()> {
        self.submit_wait(want, None)
    }

    /// Submits without waiting. A full completion queue (EBUSY, EAGAIN)
    /// or an interruption is not an error: what was submitted stays
    /// queued, and the next reap or wait sees to it.
    fn submit_or_busy(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Takes every completion, and the kernel's overflow backlog with it.
    fn reap(&mut self) -> io::Result<()> {
        loop {
            let mut batch = std::mem::take(&mut self.batch);
            {
                let mut cq = self.ring.completion();
                cq.sync();
                batch.extend(cq.map(|c| (c.user_data(), c.result())));
            }
            for &(data, res) in &batch {
                self.complete(data, res);
            }
            batch.clear();
            self.batch = batch;
            if !self.ring.submission().cq_overflow() {
                return Ok(());
            }
            self.cq_overflow += 1;
            // An enter flushes the backlog into the (now empty) queue.
            self.submit_or_busy()?;
        }
    }

    fn complete(&mut self, data: u64, res: i32) {
        if data != EPOLL_DATA {
            // The cancel of `Drop` or of `take_now`: nothing to do.
            debug_assert_eq!(data, CANCEL_DATA);
            return;
        }
        self.epoll_in_flight = false;
        if self.epoll_op {
            if res >= 0 {
                translate(&self.buf[..res as usize], &mut self.reaped);
            } else if res == -libc::EINVAL {
                // The probe said yes but the kernel refuses: fall back.
                self.epoll_op = false;
            }
        } else if res >= 0 {
            // POLL_ADD on the epoll fd fired: `wait` collects its events
            // without blocking.
            self.epoll_ready = true;
        }
    }

    /// Ends the operation in flight, if any, and waits for its completion
    /// (whatever it harvested goes to `reaped`), so that nothing reads the
    /// epoll set behind the caller's back and the buffer is free.
    fn settle(&mut self) -> io::Result<()> {
        if self.epoll_in_flight {
            self.reap()?;
        }
        if self.epoll_in_flight {
            let cancel = opcode::AsyncCancel::new(EPOLL_DATA)
                .build()
                .user_data(CANCEL_DATA);
            // SAFETY: a cancel operation points to no memory of ours.
            unsafe { self.push(cancel)? };
            while self.epoll_in_flight {
                self.submit(1)?;
            }
        }
        Ok(())
    }

    /// Queues the wait operation on the epoll set (not submitted yet).
    fn arm_epoll(&mut self, epfd: RawFd) -> io::Result<()> {
        let entry = if self.epoll_op {
            opcode::EpollWait::new(
                types::Fd(epfd),
                self.buf.as_mut_ptr().cast(),
                self.buf.len() as u32,
            )
            .build()
        } else {
            opcode::PollAdd::new(types::Fd(epfd), libc::POLLIN as u32).build()
        };
        // SAFETY: `buf` is owned by `self` and not touched again until the
        // operation's completion clears `epoll_in_flight`; `Drop` waits for
        // that completion before freeing it.
        unsafe { self.push(entry.user_data(EPOLL_DATA))? };
        self.epoll_in_flight = true;
        Ok(())
    }

    /// Reads the epoll set without blocking, straight into `out`.
    fn epoll_now(&mut self, epfd: RawFd, out: &mut Vec<Event>) {
        let len = self.buf.len() as libc::c_int;
        // SAFETY: no operation is in flight (the callers settle first), so
        // the buffer is ours; it has room for `len` events.
        let n = unsafe { libc::epoll_wait(epfd, self.buf.as_mut_ptr(), len, 0) };
        if n > 0 {
            translate(&self.buf[..n as usize], out);
        }
    }

    /// With nothing in flight: hands over what was reaped and reads the
    /// set without blocking.
    fn look_now(&mut self, epfd: RawFd, out: &mut Vec<Event>) {
        let fired = std::mem::take(&mut self.epoll_ready);
        let harvested = !self.reaped.is_empty();
        self.hand_over(out);
        // What a completed EPOLL_WAIT harvested is the set's state
        // already; reading the set again would repeat level events.
        if fired || !harvested {
            self.epoll_now(epfd, out);
        }
    }

    fn hand_over(&mut self, out: &mut Vec<Event>) {
        if out.is_empty() {
            // Hand over the reaped events without copying them.
            std::mem::swap(out, &mut self.reaped);
        } else {
            out.append(&mut self.reaped);
        }
    }
}

impl Waiter for UringWaiter {
    const KIND: BackendKind = BackendKind::Uring;

    fn probe(&mut self, epfd: RawFd, out: &mut Vec<Event>) -> io::Result<()> {
        if !self.epoll_in_flight {
            // Nothing in flight (the last wait's operation completed): look
            // at the set with one `epoll_wait` that does not block, so a
            // busy loop makes one system call per turn, as on epoll
            // (submitting an `EPOLL_WAIT` to find a set already ready cost
            // 1.7x as much per turn: the `loop` bench's `ready/1`).
            self.look_now(epfd, out);
            if !out.is_empty() {
                return Ok(());
            }
            // Nothing ready: put the operation in flight now. The wait
            // that follows (or, for a turn that does not sleep because
            // watches kept their readiness, the next turns' look) then
            // only reads the completion queue, which costs no system call
            // until the set becomes ready. A full completion queue
            // (EBUSY/EAGAIN) or an interruption leaves the operation
            // queued: the reap below and the wait after see to it.
            self.arm_epoll(epfd)?;
            self.submit_or_busy()?;
        }
        // The operation in flight has completed by now if the set became
        // ready (its task work runs as this thread returns from any system
        // call); if not, the blocking wait that follows finds out.
        self.reap()?;
        self.hand_over(out);
        if std::mem::take(&mut self.epoll_ready) {
            // Fallback mode: the POLL_ADD fired (nothing is in flight).
            self.epoll_now(epfd, out);
        }
        Ok(())
    }

    fn wait(
        &mut self,
        epfd: RawFd,
        timeout: Option<Duration>,
        out: &mut Vec<Event>,
    ) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            self.settle()?;
            self.look_now(epfd, out);
            return Ok(());
        }
        if !self.epoll_in_flight {
            self.arm_epoll(epfd)?;
        }
        // Completions already reaped: do not sleep.
        let timeout = if self.reaped.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let waited = self.submit_wait(1, timeout);
        self.hand_over(out);
        waited?;
        if std::mem::take(&mut self.epoll_ready) {
            // The epoll fd is readable: take its events without blocking
            // (the POLL_ADD that said so has completed: nothing in flight).
            self.epoll_now(epfd, out);
        }
        Ok(())
    }

    fn pressure(&self) -> (u64, u64) {
        (self.sq_full, self.cq_overflow)
    }
}

impl Drop for UringWaiter {
    fn drop(&mut self) {
        if !self.epoll_in_flight {
            return;
        }
        // The kernel may still write into `buf`: cancel the operation and
        // wait for its completion before the buffer is freed.
        let cancel = opcode::AsyncCancel::new(EPOLL_DATA)
            .build()
            .user_data(CANCEL_DATA);
        // SAFETY: a cancel operation points to no memory of ours.
        let mut ok = unsafe { self.push(cancel) }.is_ok();
        for _ in 0..100 {
            if !ok || !self.epoll_in_flight {
                break;
            }
            ok = self.submit_wait(1, Some(Duration::from_millis(10))).is_ok();
        }
        if self.epoll_in_flight {
            // Could not confirm: leak the buffer rather than free memory
            // the kernel may write.
            std::mem::forget(std::mem::take(&mut self.buf));
        }
    }
}

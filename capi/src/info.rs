//! What the engine has done (`evnexus_stats`) and what an error code means
//! (`evnexus_strerror`).

use crate::boundary::{ffi_boundary, EINVAL};
use crate::{borrow, Evnexus};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};

/// Counts of what an engine has done. Set `size` to
/// `sizeof(evnexus_stats)` before calling `evnexus_get_stats`; fields past a
/// smaller size (an older header) are left alone.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct evnexus_stats {
    /// `sizeof(evnexus_stats)`, set by the caller.
    pub size: usize,
    /// Callback runs (a rerun counts as a run).
    pub dispatched: u64,
    /// Events folded into a rerun of a callback running on another thread.
    pub reruns: u64,
    /// Reports rejected: old generation, or the registration has ended.
    pub stale_generation: u64,
    /// Reports rejected: live registration, different fd.
    pub stale_fd_mismatch: u64,
    /// Reports rejected: index beyond the arena, or a malformed token.
    pub stale_out_of_range: u64,
    /// Reports rejected: a timer token reported as an fd, or the reverse.
    pub stale_wrong_kind: u64,
    /// Runs skipped because the fd re-check found the condition gone.
    pub recheck_suppressed: u64,
    /// Callbacks that panicked (Rust callbacks only; C cannot).
    pub panicked: u64,
    /// Registrations made (one whose hook then failed counts here and in
    /// `deregistered`).
    pub registered: u64,
    /// Registrations ended (deregistered, fired, failed, freed).
    pub deregistered: u64,
    /// Slots retired at the maximum generation.
    pub retired_slots: u64,
    /// io_uring loop: full submission queue, submitted to make room.
    pub ring_sq_full: u64,
    /// io_uring loop: completion queue overflows drained from the kernel.
    pub ring_cq_overflow: u64,
    /// Deregistrations that found the watch's fd closed while it was still
    /// registered (`evnexus_deregister` returned `-EBADF`).
    pub closed_while_registered: u64,
    /// Built-in loops: kernel entries that outlived their watch (fd closed
    /// while registered, file kept open by a duplicate), found reporting
    /// and removed.
    pub orphans_removed: u64,
    /// Built-in loops: such entries that could not be removed; the loop
    /// wakes for them until the last copy of the file is closed.
    pub orphans_left: u64,
}

/// Fills `*out` with the engine's counts (a consistent-enough snapshot:
/// counters taken while other threads work may be mid-update relative to
/// each other).
///
/// Ownership: the caller owns `*out`; it is only written. Threading: any
/// thread. Errors: `-EINVAL` for NULL, or `out->size` smaller than the
/// `size` field and the first count.
#[no_mangle]
pub extern "C" fn evnexus_get_stats(ev: *mut Evnexus, out: *mut evnexus_stats) -> c_int {
    ffi_boundary! {
        // SAFETY: the header's contract for `ev`.
        let Some(e) = (unsafe { borrow(ev) }) else {
            return EINVAL;
        };
        if out.is_null() {
            return EINVAL;
        }
        // SAFETY: `out` is non-NULL and its size field readable.
        let size = unsafe { std::ptr::addr_of!((*out).size).read_unaligned() };
        let head = std::mem::size_of::<usize>();
        if size < head + std::mem::size_of::<u64>() {
            return EINVAL;
        }
        let s = e.engine.stats();
        let ours = evnexus_stats {
            size,
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
            retired_slots: s.retired_slots,
            ring_sq_full: s.ring_sq_full,
            ring_cq_overflow: s.ring_cq_overflow,
            closed_while_registered: s.closed_while_registered,
            orphans_removed: s.orphans_removed,
            orphans_left: s.orphans_left,
        };
        let len = size.min(std::mem::size_of::<evnexus_stats>()) - head;
        // SAFETY: the caller's struct has `size` writable bytes; we write
        // the `len` bytes after its size field, from ours, which has as
        // many.
        unsafe {
            let src = (&ours as *const evnexus_stats).cast::<u8>().add(head);
            std::ptr::copy_nonoverlapping(src, out.cast::<u8>().add(head), len);
        }
        0
    }
}

/// The errors whose meaning in evnexus is more specific than the system's.
fn own_message(err: c_int) -> Option<&'static CStr> {
    Some(match err {
        0 => c"success",
        libc::EINVAL => {
            c"invalid argument (a NULL pointer, a value out of range, or a short struct)"
        }
        libc::EBADF => c"not an open file descriptor (or the fd was closed while still registered)",
        libc::ENOSPC => c"the engine holds as many registrations as it may",
        libc::ENOENT => c"the token names no live registration of this kind",
        libc::EDEADLK => c"a registration was modified from inside a hook",
        libc::ENOBUFS => c"the pollfd array is too small: the size needed was stored",
        libc::EBUSY => c"another thread (or a callback) is running this engine's loop",
        libc::EOPNOTSUPP => c"not supported by this engine's backend",
        libc::ENOTRECOVERABLE => c"a panic inside evnexus was contained at the C boundary",
        _ => return None,
    })
}

thread_local! {
    static MESSAGE: RefCell<CString> = RefCell::new(CString::default());
}

/// A description of error code `err` (negative errno, as every function
/// returns; a positive errno is read the same). Never NULL.
///
/// Ownership: the string is static for the codes evnexus itself gives;
/// for any other code it lives in a per-thread buffer, valid until the
/// next `evnexus_strerror` call on the same thread. Threading: any thread.
/// Errors: none; any `int` is accepted.
#[no_mangle]
pub extern "C" fn evnexus_strerror(err: c_int) -> *const c_char {
    ffi_boundary! {
        let err = err.saturating_abs();
        if let Some(m) = own_message(err) {
            return m.as_ptr();
        }
        let text = std::io::Error::from_raw_os_error(err).to_string();
        let text = CString::new(text).unwrap_or_default();
        MESSAGE.with(|m| {
            *m.borrow_mut() = text;
            m.borrow().as_ptr()
        })
    }
}

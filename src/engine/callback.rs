//! [`Callback`]: what a slot holds, a registration's callback in 32 bytes.
//!
//! A closure of up to [`INLINE_BYTES`] (three words) with an alignment of
//! at most 8 lives in the slot itself: registering it allocates nothing.
//! That covers the common shapes (an `Arc` and an index, an fd and a
//! counter). A larger closure is boxed, as any `Box<dyn FnMut>` would be.
//! The slot stays one cache line (64 bytes: state, param, this, the
//! backend's value).
//!
//! The layout is a pointer to a static table of functions for the closure's
//! type (run it, drop it) and three words of storage. The table is the
//! closure's own monomorphised code; nothing is type-erased through `Any`.

use crate::engine::fd::FdEvent;
use crate::engine::timer::TimerEvent;
use std::marker::PhantomData;
#[cfg(test)]
use std::mem::size_of_val;
use std::mem::{align_of, size_of, ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;

/// The largest closure stored without a heap allocation.
pub(crate) const INLINE_BYTES: usize = 3 * size_of::<usize>();

type Storage = MaybeUninit<[usize; 3]>;

/// What runs and drops one closure type, stored inline or boxed.
struct VTable {
    /// Runs an fd watch's callback in place (`FnMut`); `None` for a timer.
    fd: Option<unsafe fn(NonNull<Storage>, &FdEvent<'_>)>,
    /// Runs a timer's callback, consuming it (`FnOnce`); `None` for an fd
    /// watch.
    timer: Option<unsafe fn(NonNull<Storage>, &TimerEvent<'_>)>,
    drop: unsafe fn(NonNull<Storage>),
}

/// A registration's callback: an fd watch's (`FnMut(&FdEvent)`) or a
/// timer's (`FnOnce(&TimerEvent)`).
pub(crate) struct Callback {
    vtable: &'static VTable,
    data: Storage,
    /// `Send` (every closure stored is), not `Sync`: the slot protocol hands
    /// the callback to one thread at a time.
    _send: PhantomData<Box<dyn FnMut() + Send>>,
}

/// Whether `F` is stored in place rather than boxed.
const fn fits<F>() -> bool {
    size_of::<F>() <= INLINE_BYTES && align_of::<F>() <= align_of::<Storage>()
}

/// The closure of type `F` in `data`, stored in place or boxed.
///
/// # Safety
/// `data` holds an `F` (in place if `fits::<F>()`, else a `Box<F>` pointer
/// in its first word), initialised and not moved out.
unsafe fn closure<F>(data: NonNull<Storage>) -> *mut F {
    if fits::<F>() {
        data.as_ptr().cast::<F>()
    } else {
        // SAFETY: the function contract: the first word is the box pointer.
        unsafe { data.as_ptr().cast::<*mut F>().read() }
    }
}

unsafe fn run_fd<F: FnMut(&FdEvent<'_>)>(data: NonNull<Storage>, ev: &FdEvent<'_>) {
    // SAFETY: `Callback::call_fd` passes storage holding an `F` (contract
    // of `closure`), borrowed mutably for the call.
    unsafe { (*closure::<F>(data))(ev) }
}

unsafe fn run_timer<F: FnOnce(&TimerEvent<'_>)>(data: NonNull<Storage>, ev: &TimerEvent<'_>) {
    // SAFETY: `Callback::call_timer` passes storage holding an `F` that it
    // will not drop again: this moves it out exactly once.
    let f: F = unsafe {
        if fits::<F>() {
            data.as_ptr().cast::<F>().read()
        } else {
            *Box::from_raw(closure::<F>(data))
        }
    };
    f(ev)
}

unsafe fn drop_closure<F>(data: NonNull<Storage>) {
    // SAFETY: `Callback::drop` passes storage holding an `F`, dropped once.
    unsafe {
        if fits::<F>() {
            data.as_ptr().cast::<F>().drop_in_place()
        } else {
            drop(Box::from_raw(closure::<F>(data)))
        }
    }
}

/// The table of an fd callback type.
struct FdTable<F>(PhantomData<F>);
impl<F: FnMut(&FdEvent<'_>) + Send + 'static> FdTable<F> {
    const VTABLE: VTable = VTable {
        fd: Some(run_fd::<F>),
        timer: None,
        drop: drop_closure::<F>,
    };
}

/// The table of a timer callback type.
struct TimerTable<F>(PhantomData<F>);
impl<F: FnOnce(&TimerEvent<'_>) + Send + 'static> TimerTable<F> {
    const VTABLE: VTable = VTable {
        fd: None,
        timer: Some(run_timer::<F>),
        drop: drop_closure::<F>,
    };
}

impl Callback {
    fn store<F>(f: F, vtable: &'static VTable) -> Callback {
        let mut data = Storage::uninit();
        if fits::<F>() {
            // SAFETY: `F` fits the storage in size and alignment.
            unsafe { data.as_mut_ptr().cast::<F>().write(f) };
        } else {
            let boxed = Box::into_raw(Box::new(f));
            // SAFETY: a pointer fits the first word.
            unsafe { data.as_mut_ptr().cast::<*mut F>().write(boxed) };
        }
        Callback {
            vtable,
            data,
            _send: PhantomData,
        }
    }

    /// An fd watch's callback.
    pub(crate) fn fd<F: FnMut(&FdEvent<'_>) + Send + 'static>(f: F) -> Callback {
        Callback::store(f, &FdTable::<F>::VTABLE)
    }

    /// A timer's callback.
    pub(crate) fn timer<F: FnOnce(&TimerEvent<'_>) + Send + 'static>(f: F) -> Callback {
        Callback::store(f, &TimerTable::<F>::VTABLE)
    }

    fn data(&mut self) -> NonNull<Storage> {
        NonNull::from(&mut self.data)
    }

    /// Runs an fd watch's callback (nothing for a timer's).
    #[inline]
    pub(crate) fn call_fd(&mut self, ev: &FdEvent<'_>) {
        if let Some(run) = self.vtable.fd {
            // SAFETY: the storage holds the closure the table was made for.
            unsafe { run(self.data(), ev) }
        }
    }

    /// Runs a timer's callback, consuming it (nothing for an fd watch's,
    /// which is then dropped).
    pub(crate) fn call_timer(self, ev: &TimerEvent<'_>) {
        let Some(run) = self.vtable.timer else {
            // An fd watch's callback: dropped as usual.
            return;
        };
        let mut this = ManuallyDrop::new(self);
        // SAFETY: the storage holds the closure the table was made for;
        // `run_timer` moves it out, and `this` is never dropped again.
        unsafe { run(this.data(), ev) }
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        // SAFETY: the storage holds the closure the table was made for, not
        // moved out (`call_timer` forgets the callback it consumed).
        unsafe { (self.vtable.drop)(self.data()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn small_closures_fit_in_place_and_large_ones_are_boxed_and_both_drop_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let small = CountDrop(drops.clone());
        let (a, b) = (1usize, 2usize);
        let f = move |_: &FdEvent<'_>| {
            let _ = (&small, a, b);
        };
        assert!(fits::<CountDrop>() && size_of_val(&f) <= INLINE_BYTES);
        drop(Callback::fd(f));
        let big = CountDrop(drops.clone());
        let payload = [0u64; 8];
        let g = move |_: &TimerEvent<'_>| {
            let _ = (&big, payload);
        };
        assert!(size_of_val(&g) > INLINE_BYTES);
        drop(Callback::timer(g));
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        assert_eq!(size_of::<Option<Callback>>(), 32);
    }
}

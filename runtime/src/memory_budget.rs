//! A cap on the heap memory one piece of work may hold, for work whose size a file decides rather
//! than the user: a model's chat template is a program, and a 130-byte one that doubles a string
//! forty times asks for a terabyte.
//!
//! Every allocation of the process goes through [`BudgetAllocator`], which counts the bytes a
//! thread holds while [`within`] runs on it and otherwise only forwards to the system allocator.
//! When an allocation would take the thread past its limit, the allocator cannot fail it
//! gracefully: Rust aborts the whole process on a failed allocation, and an allocator may not
//! unwind. So it raises the flag the caller watches and stops the thread for good, before the
//! allocation is made: the thread holds no lock of the allocator's, keeps at most the budget, and
//! the caller reports the error and never hands that work to it again. Work run this way must run
//! on a thread of its own that shares no lock with anyone (see `chat_template::render`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The system allocator, counting what a thread under [`within`] holds.
pub struct BudgetAllocator;

#[global_allocator]
static ALLOCATOR: BudgetAllocator = BudgetAllocator;

#[derive(Clone, Copy)]
struct Budget {
    limit: usize,
    held: usize,
    /// Raised when the limit is reached; points into the caller of [`within`], which outlives it.
    exceeded: *const AtomicBool,
}

thread_local! {
    // Const-initialized and without a destructor: reading it never allocates and never fails,
    // not even while the thread is being torn down.
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// Runs `work` on this thread with at most `limit` bytes of heap held by the allocations it makes
/// (less what it frees). If it needs more, `exceeded` is raised and this thread never returns: it
/// stops inside the allocation that would have crossed the limit.
pub fn within<T>(limit: usize, exceeded: &AtomicBool, work: impl FnOnce() -> T) -> T {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            BUDGET.set(None);
        }
    }
    BUDGET.set(Some(Budget {
        limit,
        held: 0,
        exceeded,
    }));
    let _clear = Clear;
    work()
}

/// Counts `grow` more bytes (and `shrink` fewer) against this thread's budget, if it has one;
/// stops the thread when that would cross the limit.
fn charge(grow: usize, shrink: usize) {
    let Ok(Some(mut budget)) = BUDGET.try_with(Cell::get) else {
        return;
    };
    let held = budget.held.saturating_sub(shrink);
    match held.checked_add(grow) {
        Some(held) if held <= budget.limit => {
            budget.held = held;
            let _ = BUDGET.try_with(|b| b.set(Some(budget)));
        }
        _ => {
            // SAFETY: `within` keeps the flag alive for as long as the budget is set, and this
            // thread does not leave `within` from here on.
            unsafe { (*budget.exceeded).store(true, Ordering::SeqCst) };
            loop {
                // Sleeping allocates nothing and takes no lock.
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

// SAFETY: every call is forwarded to the system allocator with the same layout and pointer; the
// counting before it touches only a thread-local cell.
unsafe impl GlobalAlloc for BudgetAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size(), 0);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size(), 0);
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        charge(0, layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(new_size, layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn work_within_the_limit_returns() {
        let exceeded = AtomicBool::new(false);
        let n = within(1 << 20, &exceeded, || {
            // Allocations freed along the way do not add up.
            (0..100).map(|_| vec![0u8; 100_000].len()).sum::<usize>()
        });
        assert_eq!(n, 10_000_000);
        assert!(!exceeded.load(Ordering::SeqCst));
        // Outside `within` nothing is counted.
        assert_eq!(vec![1u8; 4 << 20].len(), 4 << 20);
    }

    #[test]
    fn work_past_the_limit_raises_the_flag_and_never_returns() {
        let exceeded = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        {
            let (exceeded, finished) = (Arc::clone(&exceeded), Arc::clone(&finished));
            std::thread::spawn(move || {
                let mut s = String::from("x");
                within(1 << 20, &exceeded, || {
                    for _ in 0..40 {
                        s = s.repeat(2);
                    }
                });
                finished.store(true, Ordering::SeqCst);
            });
        }
        let started = std::time::Instant::now();
        while !exceeded.load(Ordering::SeqCst) {
            assert!(started.elapsed() < Duration::from_secs(10), "never stopped");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(!finished.load(Ordering::SeqCst));
    }
}

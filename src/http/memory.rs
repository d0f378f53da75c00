//! Giving memory back to the system after large calls and bursts, for what glibc's malloc holds.
//!
//! The service binary allocates with jemalloc since issue 26 (`src/main.rs`: its background thread returns
//! freed memory within about a second; `scripts/burst` passes its three targets with it, docs/PERFORMANCE.md).
//! glibc's malloc still serves SQLite's C code, and everything when the library runs under another binary (the
//! tests, the benches), so its two settings stay:
//!
//! Why: glibc keeps freed memory in per-thread arenas for reuse. After a burst of 15 MiB records that was
//! hundreds of MiB held for nothing, hours later (`scripts/burst`, docs/PERFORMANCE.md). `malloc_trim` returns
//! it in about a millisecond. It runs after each large call (on the blocking thread that did the work) and, for
//! what the async workers freed meanwhile (the buffers of shed requests), once more on a quiet tick after a
//! burst. And the allocator is asked for fewer arenas (two per core, not eight): freed memory spread over
//! sixteen arenas is fragmented past what a trim can return (after a burst, 1.4× to 3.5× the idle RSS, varying
//! from run to run; with one arena per core, 1.7× every time; two per core since issue 26, see
//! [`limit_arenas`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set when something large was freed since the last trim.
static FREED_LARGE: AtomicBool = AtomicBool::new(false);

/// How often the background task looks for memory to return.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Notes that large buffers were freed (a large call ended, or one was shed), for the next tick.
pub fn freed_large() {
    FREED_LARGE.store(true, Ordering::Relaxed);
}

/// Work that holds large buffers on an async worker: when it ends (dropped, however the call ends), the next
/// tick trims. Noted at the end and not at the start: a tick that trims while the work still holds its memory
/// returns nothing, and without a later note no tick would trim again (a burst of feedback stayed at 440 MiB a
/// minute after it ended).
pub struct LargeWork(());

impl LargeWork {
    pub fn begin() -> LargeWork {
        LargeWork(())
    }
}

impl Drop for LargeWork {
    fn drop(&mut self) {
        freed_large();
    }
}

/// Limits glibc's malloc to two arenas per core (at least four), unless `MALLOC_ARENA_MAX` is set, which glibc
/// reads itself. Call it first thing in `main`, before any thread exists.
///
/// Why two per core and not one (issue 26): each thread keeps the arena it first took, so with one per core the
/// main thread held one and the two async workers often shared the other, and every buffer they freed
/// (hyper's read buffers are above glibc's per-thread cache) waited on that arena's lock: a third of the futex
/// calls under load, and discovery at 0.5 to 0.6 of the floor's throughput where two per core gave 0.66 to
/// 0.77 (docs/PERFORMANCE.md). Sixteen arenas (glibc's default here) were no faster and returned less after
/// a burst.
#[allow(unsafe_code)] // mallopt: see the SAFETY comment
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let arenas = 2 * std::thread::available_parallelism().map_or(2, usize::from).max(2);
        // SAFETY: mallopt takes two integers and changes a setting of the allocator; no thread has started.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas as libc::c_int);
        }
    }
}

/// Returns free memory to the system now. Blocking (about a millisecond): call it off the async workers.
#[allow(unsafe_code)] // malloc_trim: see the SAFETY comment
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs forever: every [`TRIM_EVERY`], trims if large buffers were freed since the last look.
pub async fn trim_after_bursts() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if FREED_LARGE.swap(false, Ordering::Relaxed) {
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

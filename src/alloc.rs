//! How the binaries' allocator (mimalloc, declared in each `main.rs`) treats
//! the memory it frees. While a backlog is ingested, fetch buffers and
//! batches of a few MiB are freed and allocated again many times a second;
//! mimalloc returned their pages to the kernel a second after they were
//! freed (its purge delay), and every page taken back was zeroed again:
//! `clear_page` took 22% of the service's CPU in the ingest benchmark
//! (perf). Huge pages made it worse (a whole 2 MiB page zeroed for
//! a few KiB used), so the `no_thp` feature is set in `Cargo.toml`, and the
//! purge delay is raised here: memory idle for [`PURGE_DELAY_MS`] still goes
//! back to the kernel, so a long-running service shrinks after a burst.

use std::os::raw::{c_int, c_long};

/// How long freed memory stays with the process before mimalloc returns it.
pub const PURGE_DELAY_MS: c_long = 10_000;

/// `mi_option_purge_delay` in `mimalloc.h` of libmimalloc-sys 0.1.49 (v3),
/// which `Cargo.toml` pins: its Rust bindings do not name this option.
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// Sets the allocator's options; call it first thing in `main`.
pub fn tune() {
    // SAFETY: `mi_option_set` only stores an integer in mimalloc's option
    // table, which is safe at any time from any thread; the option number is
    // that of the pinned version.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value mimalloc holds for its purge delay now.
    #[allow(unsafe_code)]
    fn purge_delay() -> c_long {
        // SAFETY: as in `tune`, reading an integer from the option table.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn the_option_number_is_the_purge_delay() {
        // The default purge delay of mimalloc v3 (options.c) is 1000 ms; a
        // different option under number 15 would hold another value.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay(), 1000);
        }
        tune();
        assert_eq!(purge_delay(), PURGE_DELAY_MS);
    }
}

//! Faults injected on purpose (`[fault]` settings, for tests only): a panic in
//! one task of a partition's pipeline, fetches that fail, or a process abort
//! right after a COMMIT, so that tests can show the service recovers from what
//! it cannot otherwise provoke.
//!
//! Only builds with the `faults` cargo feature (the tests') can inject them;
//! in every other build (the release binary, the Docker image, the
//! benchmarks) [`Faults`] is empty and each of its checks does nothing.

pub use injected::Faults;

#[cfg(not(feature = "faults"))]
mod injected {
    use crate::config::{FaultStage, Settings};

    /// No fault can be injected into this build.
    #[derive(Debug, Default)]
    pub struct Faults;

    impl Faults {
        pub fn from_settings(_: &Settings) -> Self {
            Self
        }

        #[inline(always)]
        pub fn maybe_panic(&self, _: FaultStage, _: i32) {}

        #[inline(always)]
        pub fn maybe_abort_after_commit(&self) {}
    }
}

#[cfg(feature = "faults")]
mod injected {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use crate::config::{FaultSettings, FaultStage, Settings};

    /// The faults to inject, and how many panics were injected so far.
    #[derive(Debug, Default)]
    pub struct Faults {
        settings: FaultSettings,
        panics: AtomicU32,
        commits: AtomicU64,
    }

    impl Faults {
        /// The faults `settings` asks for.
        pub fn from_settings(settings: &Settings) -> Self {
            Self::new(settings.fault.clone())
        }

        pub fn new(settings: FaultSettings) -> Self {
            Self {
                settings,
                panics: AtomicU32::new(0),
                commits: AtomicU64::new(0),
            }
        }

        /// Panics when `stage` is the configured one and the budget of panics
        /// (`panic_times`, 0 = unlimited) is not spent.
        pub fn maybe_panic(&self, stage: FaultStage, partition: i32) {
            if self.settings.panic_in != Some(stage) {
                return;
            }
            let done = self.panics.fetch_add(1, Ordering::Relaxed);
            if self.settings.panic_times == 0 || done < self.settings.panic_times {
                panic!("injected panic in the {stage:?} of partition {partition} (fault.panic_in)");
            }
        }

        /// Called right after each batch COMMIT: aborts the process at the
        /// configured batch (`abort_after_commit_at_batch`, counted over every
        /// partition of this process).
        pub fn maybe_abort_after_commit(&self) {
            let Some(at) = self.settings.abort_after_commit_at_batch else {
                return;
            };
            let done = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
            if done == at {
                eprintln!(
                    "injected abort right after the COMMIT of batch {done} (fault.abort_after_commit_at_batch)"
                );
                std::process::abort();
            }
        }

        /// True when every fetch should fail.
        pub fn fetch_fails(&self) -> bool {
            self.settings.fail_fetch
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn panics_only_in_its_stage_and_within_its_budget() {
            let faults = Faults::new(FaultSettings {
                panic_in: Some(FaultStage::Pipeline),
                panic_times: 2,
                fail_fetch: false,
                abort_after_commit_at_batch: None,
            });
            faults.maybe_panic(FaultStage::Fetcher, 0);
            let panicked = |f: &Faults| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    f.maybe_panic(FaultStage::Pipeline, 0)
                }))
                .is_err()
            };
            assert!(panicked(&faults));
            assert!(panicked(&faults));
            assert!(!panicked(&faults), "budget spent");
            assert!(!Faults::default().fetch_fails());
        }
    }
}

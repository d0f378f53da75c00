//! Admission of hook calls: a cap on how many run at once, a smaller cap on how many large bodies are held at
//! once, and the answer for everything over either cap: 503 now, not a queue.
//!
//! Why shed rather than queue: an EHR waits for cards while the clinician waits for the EHR; a request that
//! would wait behind hundreds of others is better told at once to retry (`Retry-After`) than answered late, and a
//! queue of 15 MiB bodies is exactly the memory this module exists to bound. The decision is made from the
//! request head, before the body is read, so a refused body is never buffered (and never gets
//! `100 Continue`). Discovery is not admitted here: it stays responsive during a burst.
//!
//! Feedback has a budget of its own, in bytes of body held at once ([`AdmissionSettings::feedback_bytes`]):
//! 400 feedback bodies of 1 MiB at once used to take the process to 1.77 GB. Its own, so that a burst of
//! feedback never sheds a hook call (a clinician waits for cards; feedback is resent by the EHR on a 503).
//!
//! The memory budget for request bodies is `max_large × body_limit + max_hooks × large_body_bytes`, plus what
//! parsing them takes (about the body's size again: the record keeps strings, not the JSON).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many hook calls may run at once, and which of them count as large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Hook calls in progress at once (any size); over it, 503.
    pub max_hooks: usize,
    /// Calls with a large body in progress at once; over it, 503. Their parsing and assessment run on the
    /// blocking pool, off the async workers.
    pub max_large: usize,
    /// A body above this size (or of unknown size: chunked) is large.
    pub large_body_bytes: u64,
    /// Feedback body bytes held at once (declared sizes; a chunked body counts as the feedback body limit);
    /// over it, 503.
    pub feedback_bytes: u64,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        AdmissionSettings {
            max_hooks: 256,
            max_large: cores.max(2),
            large_body_bytes: 1024 * 1024,
            feedback_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The shared counters; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    settings: AdmissionSettings,
    hooks: Arc<Semaphore>,
    large: Arc<Semaphore>,
    /// One permit per KiB of feedback body.
    feedback: Arc<Semaphore>,
}

/// A place among the calls in progress, held until the call's work (including work moved to the blocking pool)
/// is finished.
#[derive(Debug)]
pub struct Ticket {
    _hook: OwnedSemaphorePermit,
    large: Option<OwnedSemaphorePermit>,
}

impl Ticket {
    /// Whether the body is large: its work then runs on the blocking pool.
    pub fn is_large(&self) -> bool {
        self.large.is_some()
    }
}

/// The call was not admitted: too many in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Admission {
        Admission {
            settings,
            hooks: Arc::new(Semaphore::new(settings.max_hooks)),
            large: Arc::new(Semaphore::new(settings.max_large)),
            feedback: Arc::new(Semaphore::new(kib(settings.feedback_bytes).min(Semaphore::MAX_PERMITS))),
        }
    }

    pub fn settings(&self) -> AdmissionSettings {
        self.settings
    }

    /// Hook calls admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.settings.max_hooks.saturating_sub(self.hooks.available_permits())
    }

    /// Admits a call whose body has this `Content-Length` (`None`: chunked, so possibly large), or refuses it
    /// at once.
    pub fn admit(&self, content_length: Option<u64>) -> Result<Ticket, Overloaded> {
        let hook = self.hooks.clone().try_acquire_owned().map_err(|_| Overloaded)?;
        let large = match content_length {
            Some(length) if length <= self.settings.large_body_bytes => None,
            _ => Some(self.large.clone().try_acquire_owned().map_err(|_| Overloaded)?),
        };
        Ok(Ticket { _hook: hook, large })
    }

    /// Admits a feedback body of this `Content-Length` (`None`: chunked, counted as `limit`), or refuses it at
    /// once. The place is held until the returned permit is dropped (after the body is stored).
    pub fn admit_feedback(&self, content_length: Option<u64>, limit: u64) -> Result<OwnedSemaphorePermit, Overloaded> {
        let bytes = content_length.unwrap_or(limit).min(limit);
        let permits = u32::try_from(kib(bytes).max(1)).map_err(|_| Overloaded)?;
        self.feedback
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| Overloaded)
    }
}

/// Whole KiB, rounded up.
fn kib(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_calls_have_their_own_caps() {
        let admission = Admission::new(AdmissionSettings {
            max_hooks: 3,
            max_large: 1,
            large_body_bytes: 100,
            feedback_bytes: 0,
        });
        let large = admission.admit(Some(101)).unwrap();
        assert!(large.is_large());
        assert_eq!(
            admission.admit(None).unwrap_err(),
            Overloaded,
            "chunked bodies count as large"
        );
        let small = admission.admit(Some(100)).unwrap();
        assert!(!small.is_large());
        let _second = admission.admit(Some(0)).unwrap();
        assert_eq!(
            admission.admit(Some(1)).unwrap_err(),
            Overloaded,
            "every call counts toward max_hooks"
        );
        drop(large);
        drop(small);
        assert!(
            admission.admit(Some(5_000)).unwrap().is_large(),
            "places come back when calls end"
        );
    }

    #[test]
    fn feedback_has_a_byte_budget_of_its_own() {
        let admission = Admission::new(AdmissionSettings {
            max_hooks: 1,
            max_large: 1,
            large_body_bytes: 100,
            feedback_bytes: 3 * 1024,
        });
        let limit = 1024 * 1024;
        let first = admission.admit_feedback(Some(2 * 1024), limit).unwrap();
        assert!(admission.admit_feedback(Some(1025), limit).is_err(), "over the budget");
        let second = admission.admit_feedback(Some(1024), limit).unwrap();
        assert!(
            admission.admit_feedback(Some(0), limit).is_err(),
            "every body counts, at least 1 KiB"
        );
        let _hook = admission
            .admit(Some(10))
            .expect("feedback never takes a hook call's place");
        drop(first);
        assert!(
            admission.admit_feedback(None, 2 * 1024).is_ok(),
            "a chunked body counts as the limit"
        );
        drop(second);
    }
}

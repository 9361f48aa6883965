//! Admission control: a bounded number of requests may be queued or running at once
//! (Ollama's `OLLAMA_MAX_QUEUE`, default 512); past that the caller gets `QueueFull`
//! at once instead of waiting without bound. Fair ordering among admitted requests
//! comes from each model's FIFO lock (see `manager`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::error::ServiceError;

#[derive(Debug)]
pub struct Admission {
    limit: usize,
    in_flight: AtomicUsize,
}

/// Held for the life of one admitted request; frees its queue place on drop.
#[derive(Debug)]
pub struct Permit(Arc<Admission>);

impl Admission {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            in_flight: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests admitted and not yet finished.
    pub fn depth(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn admit(self: &Arc<Self>) -> Result<Permit, ServiceError> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .map_err(|_| ServiceError::QueueFull(self.limit))?;
        Ok(Permit(self.clone()))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_and_frees_on_drop() {
        let q = Admission::new(2);
        let a = q.admit().unwrap();
        let _b = q.admit().unwrap();
        assert!(matches!(q.admit(), Err(ServiceError::QueueFull(2))));
        assert_eq!(q.depth(), 2);
        drop(a);
        assert_eq!(q.depth(), 1);
        let _c = q.admit().unwrap();
    }
}

//! Per-tenant streams: work submitted to one stream runs in submission
//! order, streams run side by side on a small pool of worker threads. Each
//! submission gets a fence; `gpu_sync` waits for it.
//!
//! A fence is `slot << 48 | seq`: `slot` numbers the tenant's streams in the
//! order they were first used (1-based), `seq` counts the stream's work from 1.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Result, TensorError};
use crate::tenant::Tenant;

/// Most streams one tenant may use.
pub const MAX_STREAMS: usize = 1024;
/// Failures kept per stream for `gpu_sync` to report.
const KEEP_FAILURES: usize = 64;
const SEQ_BITS: u32 = 48;

type Work = Box<dyn FnOnce() -> Result<()> + Send>;

#[derive(Default)]
struct Stream {
    queue: VecDeque<(u64, Work)>,
    running: bool,
    submitted: u64,
    completed: u64,
    failed: BTreeMap<u64, TensorError>,
}

#[derive(Default)]
struct TenantStreams {
    slots: HashMap<u32, u16>,
    streams: Vec<Stream>,
}

#[derive(Default)]
struct State {
    tenants: HashMap<Tenant, TenantStreams>,
    ready: VecDeque<(Tenant, u16)>,
    shutdown: bool,
}

/// The streams of every tenant. Dropping it stops the workers once their
/// current work is done.
pub struct Streams {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Workers wait here for ready streams.
    work: Condvar,
    /// Waiters (sync, stream reads) wait here for completions.
    done: Condvar,
}

fn fence(slot: u16, seq: u64) -> u64 {
    (slot as u64) << SEQ_BITS | seq
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Streams {
    /// Streams served by `workers` threads.
    pub fn new(workers: usize) -> Streams {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        for i in 0..workers.max(1) {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("tensor-stream-{i}"))
                .spawn(move || worker(s))
                .expect("spawning a stream worker");
        }
        Streams { shared }
    }

    /// Queue `work` on `stream` of `tenant`; returns its fence.
    pub fn submit(&self, tenant: Tenant, stream: u32, work: Work) -> Result<u64> {
        let mut st = self.shared.state();
        let t = st.tenants.entry(tenant).or_default();
        let slot = match t.slots.get(&stream) {
            Some(&s) => s,
            None => {
                if t.streams.len() >= MAX_STREAMS {
                    return Err(TensorError::limit(format!(
                        "at most {MAX_STREAMS} streams per partition"
                    )));
                }
                t.streams.push(Stream::default());
                let s = t.streams.len() as u16;
                t.slots.insert(stream, s);
                s
            }
        };
        let s = &mut t.streams[slot as usize - 1];
        if s.submitted + 1 >= 1 << SEQ_BITS {
            return Err(TensorError::limit(
                "the stream's fence counter is exhausted",
            ));
        }
        s.submitted += 1;
        let seq = s.submitted;
        s.queue.push_back((seq, work));
        if !s.running {
            s.running = true;
            st.ready.push_back((tenant, slot));
            self.shared.work.notify_one();
        }
        Ok(fence(slot, seq))
    }

    /// Wait up to `timeout` for `fence`; the latest fence completed on its
    /// stream. `NotFound` for a fence never issued to `tenant`, `Busy` when it
    /// has not completed in time, the work's own error when it failed.
    pub fn sync(&self, tenant: Tenant, f: u64, timeout: Duration) -> Result<u64> {
        let slot = (f >> SEQ_BITS) as u16;
        let seq = f & ((1 << SEQ_BITS) - 1);
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state();
        loop {
            let s = st
                .tenants
                .get(&tenant)
                .and_then(|t| t.streams.get((slot as usize).wrapping_sub(1)))
                .filter(|s| seq >= 1 && seq <= s.submitted)
                .ok_or_else(|| TensorError::not_found("fence", f))?;
            if s.completed >= seq {
                if let Some(e) = s.failed.get(&seq) {
                    return Err(e.clone());
                }
                return Ok(fence(slot, s.completed));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TensorError::busy(format!(
                    "fence {f} has not completed yet (stream at {})",
                    fence(slot, s.completed)
                )));
            }
            st = self
                .shared
                .done
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait until `ready()` is true or `timeout` passes; whether it became true.
    /// `ready` is checked after every completion.
    pub fn wait_until(&self, timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state();
        loop {
            drop(st);
            if ready() {
                return true;
            }
            st = self.shared.state();
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Completions notify; cap the wait in case `ready` changed some other way.
            let wait = (deadline - now).min(Duration::from_millis(50));
            st = self
                .shared
                .done
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Forget a tenant's streams (its partition went away); queued work still runs.
    pub fn drop_tenant(&self, tenant: Tenant) {
        let mut st = self.shared.state();
        if st
            .tenants
            .get(&tenant)
            .is_some_and(|t| t.streams.iter().all(|s| !s.running))
        {
            st.tenants.remove(&tenant);
        }
    }

    /// Work queued or running, all tenants.
    pub fn pending(&self) -> u64 {
        let st = self.shared.state();
        st.tenants
            .values()
            .flat_map(|t| &t.streams)
            .map(|s| s.submitted - s.completed)
            .sum()
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.shared.state().shutdown = true;
        self.shared.work.notify_all();
    }
}

fn worker(s: Arc<Shared>) {
    loop {
        let job = {
            let mut st = s.state();
            loop {
                if st.shutdown {
                    return;
                }
                if let Some((tenant, slot)) = st.ready.pop_front() {
                    let stream = &mut st.tenants.get_mut(&tenant).expect("ready tenant").streams
                        [slot as usize - 1];
                    let (seq, work) = stream.queue.pop_front().expect("ready stream has work");
                    break (tenant, slot, seq, work);
                }
                st = s.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        let (tenant, slot, seq, work) = job;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .unwrap_or_else(|_| Err(TensorError::internal("the operation panicked")));
        let mut st = s.state();
        let stream =
            &mut st.tenants.get_mut(&tenant).expect("running tenant").streams[slot as usize - 1];
        stream.completed = seq;
        if let Err(e) = result {
            tracing::warn!(%tenant, fence = fence(slot, seq), "stream work failed: {e}");
            stream.failed.insert(seq, e);
            if stream.failed.len() > KEEP_FAILURES {
                stream.failed.pop_first();
            }
        }
        if stream.queue.is_empty() {
            stream.running = false;
        } else {
            st.ready.push_back((tenant, slot));
            s.work.notify_one();
        }
        drop(st);
        s.done.notify_all();
    }
}

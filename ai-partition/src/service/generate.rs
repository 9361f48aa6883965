//! Generation through each resident model's scheduler (continuous batching).
//!
//! Requests for a model wait in one FIFO queue. A scheduler loop, running on a blocking
//! thread while the model has work, takes them in arrival order into free parallel slots
//! (building the prompt with the model's own template and tokenizer), then calls the
//! engine's `step` over and over: every running request advances in the same batched
//! decode, and each piece of text goes straight to its request's channel. A request whose
//! client went away (receiver dropped) is cancelled at the next step and its slot given to
//! the next in line; one that left while queued never runs. The loop ends, releasing the
//! model, when nothing is running or queued.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::error::ServiceError;
use super::manager::{ModelCell, SlotUse};
use super::metrics::Metrics;
use super::queue::Permit;
use super::KeepAlive;
use crate::engine::{
    ChatMessage, FinishReason, GenerationStats, LoadedModel, SamplingParams, SeqEvent,
};

/// What to feed the model.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Used verbatim (Ollama's `raw`); special-token text is parsed.
    Raw(String),
    /// Rendered with the model's chat template, ready for the assistant's turn.
    Chat(Vec<ChatMessage>),
}

#[derive(Clone, Debug)]
pub struct GenerateJob {
    pub model: String,
    pub prompt: Prompt,
    pub params: SamplingParams,
    pub keep_alive: Option<KeepAlive>,
    /// Deliver each piece as it is generated; `false`: the whole text as one piece at
    /// the end (no per-token hand-off between threads for clients that wait anyway).
    pub stream: bool,
}

/// The end of a generation.
#[derive(Clone, Debug)]
pub struct GenerationDone {
    pub finish: FinishReason,
    pub stats: GenerationStats,
    pub load_duration: Duration,
    /// From admission to the last token.
    pub total_duration: Duration,
}

#[derive(Debug)]
pub enum GenEvent {
    Piece(String),
    /// Always the last event.
    Done(Result<GenerationDone, ServiceError>),
}

/// A queued or running generation. Dropping it (or its receiver) cancels it.
pub struct Generation {
    /// Canonical model name.
    pub model: String,
    /// Unbounded: the scheduler never waits for one slow reader while others decode (a
    /// generation's text is bounded by the context anyway).
    pub events: mpsc::UnboundedReceiver<GenEvent>,
}

impl Generation {
    /// Wait for the whole text and the outcome.
    pub async fn collect(mut self) -> Result<(String, GenerationDone), ServiceError> {
        let mut text = String::new();
        while let Some(ev) = self.events.recv().await {
            match ev {
                GenEvent::Piece(p) => text.push_str(&p),
                GenEvent::Done(r) => return r.map(|d| (text, d)),
            }
        }
        Err(ServiceError::Internal(
            "generation ended without a result".into(),
        ))
    }
}

/// A request that ended, with its outcome.
type Finished = (
    Request,
    Result<(FinishReason, GenerationStats), ServiceError>,
);

/// An admitted request waiting for (or running in) a slot.
struct Request {
    job: GenerateJob,
    tx: mpsc::UnboundedSender<GenEvent>,
    /// Keeps the model resident; dropped (restarting its keep-alive) when the request ends.
    hold: SlotUse,
    _permit: Permit,
    started: Instant,
    load_duration: Duration,
    /// Text of a non-streamed request, sent whole at the end.
    text: String,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Request>,
    /// A loop is running (or about to) for this model.
    looping: bool,
}

/// One resident model's request queue and batch scheduler.
pub struct Scheduler {
    name: String,
    slots: usize,
    queue: Mutex<Queue>,
    busy: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// Slots and queue of one model, for `/api/ps` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerLoad {
    /// Parallel slots (0: the model does not generate).
    pub slots: usize,
    pub slots_busy: usize,
    pub queued: usize,
}

impl Scheduler {
    pub(super) fn new(name: String, slots: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Scheduler {
            name,
            slots,
            queue: Mutex::new(Queue::default()),
            busy: AtomicUsize::new(0),
            metrics,
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn load(&self) -> SchedulerLoad {
        SchedulerLoad {
            slots: self.slots,
            slots_busy: self.busy.load(Ordering::Relaxed),
            queued: self.queue().waiting.len(),
        }
    }

    /// Queue a request (FIFO) and make sure a loop serves the model.
    fn submit(self: &Arc<Self>, model: ModelCell, req: Request) {
        let spawn = {
            let mut q = self.queue();
            q.waiting.push_back(req);
            !std::mem::replace(&mut q.looping, true)
        };
        if spawn {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.run(model));
        }
    }

    /// The scheduler loop: admit, step, deliver; ends when nothing is running or queued.
    fn run(&self, model: ModelCell) {
        let mut guard = model.blocking_lock_owned();
        let mut active: Vec<Option<Request>> = (0..guard.slots()).map(|_| None).collect();
        let mut finished: Vec<Finished> = Vec::new();
        loop {
            self.cancel_departed(&mut **guard, &mut active);
            self.admit(&mut **guard, &mut active, &mut finished);
            self.busy
                .store(active.iter().flatten().count(), Ordering::Relaxed);
            if active.iter().all(Option::is_none) {
                let mut q = self.queue();
                if q.waiting.is_empty() {
                    q.looping = false;
                    drop(q);
                    // Release the model before the requests' holds, so an unload when the
                    // last hold goes frees it at once.
                    drop(guard);
                    self.deliver(finished);
                    return;
                }
                drop(q);
                self.deliver(std::mem::take(&mut finished));
                continue;
            }
            guard.step(&mut |slot, ev| {
                let Some(req) = active.get_mut(slot).and_then(Option::as_mut) else {
                    return ControlFlow::Continue(());
                };
                match ev {
                    SeqEvent::Piece(p) => {
                        let gone = if req.job.stream {
                            req.tx.send(GenEvent::Piece(p.to_string())).is_err()
                        } else {
                            req.text.push_str(p);
                            req.tx.is_closed()
                        };
                        if gone {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    }
                    SeqEvent::Done(r) => {
                        if let Some(req) = active[slot].take() {
                            finished.push((req, r.map_err(ServiceError::from)));
                        }
                        ControlFlow::Continue(())
                    }
                }
            });
            // When nothing runs any more the top of the loop ends it and delivers (after
            // releasing the model).
            if active.iter().any(Option::is_some) {
                self.busy
                    .store(active.iter().flatten().count(), Ordering::Relaxed);
                self.deliver(std::mem::take(&mut finished));
            }
        }
    }

    /// Cancel running requests whose client went away; their slots are free at once.
    fn cancel_departed(&self, model: &mut dyn LoadedModel, active: &mut [Option<Request>]) {
        for (slot, a) in active.iter_mut().enumerate() {
            if a.as_ref().is_some_and(|r| r.tx.is_closed()) {
                if let Some(stats) = model.cancel(slot) {
                    self.metrics.record_generation(&self.name, &stats);
                }
                self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(model = %self.name, slot, "generation cancelled: client went away");
                *a = None;
            }
        }
    }

    /// Move queued requests into free slots, first come first served.
    fn admit(
        &self,
        model: &mut dyn LoadedModel,
        active: &mut [Option<Request>],
        finished: &mut Vec<Finished>,
    ) {
        if active.is_empty() {
            // Not a generation model (callers check the kind first): fail what is queued.
            let waiting = std::mem::take(&mut self.queue().waiting);
            finished.extend(waiting.into_iter().map(|r| {
                let e = format!("\"{}\" does not support generate", self.name);
                (r, Err(ServiceError::BadRequest(e)))
            }));
            return;
        }
        while active.iter().any(Option::is_none) {
            let Some(req) = self.queue().waiting.pop_front() else {
                return;
            };
            if req.tx.is_closed() {
                // The client left while queued: do not run at all.
                self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match tokens(model, &req.job.prompt)
                .and_then(|t| model.start(&t, &req.job.params).map_err(ServiceError::from))
            {
                Ok(slot) => match active.get_mut(slot) {
                    Some(free @ None) => *free = Some(req),
                    _ => {
                        model.cancel(slot);
                        finished.push((
                            req,
                            Err(ServiceError::Internal(format!(
                                "the engine started a request in slot {slot}, which is not free"
                            ))),
                        ));
                    }
                },
                Err(e) => finished.push((req, Err(e))),
            }
        }
    }

    /// Report ended requests: metrics, then release each one's hold on the model before its
    /// final event, so a client that sees "done" sees the model idle.
    fn deliver(&self, finished: Vec<Finished>) {
        for (req, outcome) in finished {
            let Request {
                job,
                tx,
                hold,
                started,
                load_duration,
                text,
                ..
            } = req;
            let done = outcome.map(|(finish, stats)| {
                self.metrics.record_generation(&self.name, &stats);
                if finish == FinishReason::Cancelled {
                    self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(model = %self.name, tokens = stats.generated_tokens, "generation cancelled: client went away");
                }
                GenerationDone {
                    finish,
                    stats,
                    load_duration,
                    total_duration: started.elapsed(),
                }
            });
            drop(hold);
            if !job.stream && !text.is_empty() {
                let _ = tx.send(GenEvent::Piece(text));
            }
            let _ = tx.send(GenEvent::Done(done));
        }
    }
}

/// The prompt's tokens: the chat template applied, then the model's tokenizer.
fn tokens(model: &dyn LoadedModel, prompt: &Prompt) -> Result<Vec<u32>, ServiceError> {
    let text = match prompt {
        Prompt::Raw(s) => s.clone(),
        Prompt::Chat(messages) => model.apply_chat_template(messages, true)?,
    };
    // `add_bos` adds BOS only where the model's metadata asks for it (as llama.cpp does).
    Ok(model.tokenize(&text, true, true)?)
}

/// Queue `job` on the held model and return at once; its place in the model's FIFO queue
/// is taken before this returns, so callers are served in order.
pub(super) fn start(
    job: GenerateJob,
    model_name: String,
    hold: SlotUse,
    permit: Permit,
    started: Instant,
    load_duration: Duration,
) -> Generation {
    let (tx, rx) = mpsc::unbounded_channel();
    let scheduler = hold.slot.scheduler.clone();
    let model = hold.slot.model.clone();
    scheduler.submit(
        model,
        Request {
            job,
            tx,
            hold,
            _permit: permit,
            started,
            load_duration,
            text: String::new(),
        },
    );
    Generation {
        model: model_name,
        events: rx,
    }
}

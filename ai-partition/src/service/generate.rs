//! One generation: wait for the model's FIFO lock, build the prompt with the model's
//! own template and tokenizer, run the engine on a blocking thread and stream pieces.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::error::ServiceError;
use super::manager::SlotUse;
use super::metrics::Metrics;
use super::queue::Permit;
use super::KeepAlive;
use crate::engine::{ChatMessage, FinishReason, GenerationStats, LoadedModel, SamplingParams};

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
    pub events: mpsc::Receiver<GenEvent>,
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

/// Queue `job` on the held model and return at once; the caller's place in the
/// model's FIFO queue is taken before this returns, so callers are served in order.
pub(super) async fn start(
    job: GenerateJob,
    model_name: String,
    hold: SlotUse,
    permit: Permit,
    metrics: Arc<Metrics>,
    started: Instant,
    load_duration: Duration,
) -> Generation {
    let (tx, rx) = mpsc::channel(64);
    let mut lock = Box::pin(hold.slot.model.clone().lock_owned());
    // Poll the lock once now: that enqueues this request in the lock's FIFO wait list.
    let ready = tokio::select! {
        biased;
        g = &mut lock => Some(g),
        _ = std::future::ready(()) => None,
    };
    let name = model_name.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let hold = hold;
        let mut guard = match ready {
            Some(g) => g,
            None => lock.await,
        };
        if tx.is_closed() {
            // The client left while queued: do not run at all.
            metrics
                .cancelled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let tx2 = tx.clone();
        let res = tokio::task::spawn_blocking(move || run(&mut **guard, &job, &tx2)).await;
        let res = match res {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        };
        let done = res.map(|(finish, stats)| {
            metrics.record_generation(&name, &stats);
            if finish == FinishReason::Cancelled {
                metrics.cancelled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(model = %name, tokens = stats.generated_tokens, "generation cancelled: client went away");
            }
            GenerationDone { finish, stats, load_duration, total_duration: started.elapsed() }
        });
        // Release the model (and restart its keep-alive clock) before the final event,
        // so a client that sees "done" sees the model idle.
        drop(hold);
        let _ = tx.send(GenEvent::Done(done)).await;
    });
    Generation {
        model: model_name,
        events: rx,
    }
}

/// Runs on a blocking thread with the model locked.
fn run(
    model: &mut dyn LoadedModel,
    job: &GenerateJob,
    tx: &mpsc::Sender<GenEvent>,
) -> Result<(FinishReason, GenerationStats), ServiceError> {
    let text = match &job.prompt {
        Prompt::Raw(s) => s.clone(),
        Prompt::Chat(messages) => model.apply_chat_template(messages, true)?,
    };
    // `add_bos` adds BOS only where the model's metadata asks for it (as llama.cpp does).
    let tokens = model.tokenize(&text, true, true)?;
    let mut whole = String::new();
    let mut on_piece = |piece: &str| {
        // A closed channel means the client went away: stop generating.
        let gone = if job.stream {
            tx.blocking_send(GenEvent::Piece(piece.to_string()))
                .is_err()
        } else {
            whole.push_str(piece);
            tx.is_closed()
        };
        if gone {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let out = model.generate(&tokens, &job.params, &mut on_piece)?;
    if !whole.is_empty() {
        let _ = tx.blocking_send(GenEvent::Piece(whole));
    }
    Ok(out)
}

//! A llama.cpp model and its context in one owned value.
//!
//! `LlamaContext<'m>` borrows the `LlamaModel` it was made from, but a loaded model must be
//! one `'static` value the scheduler can own and move between threads. This is the only
//! `unsafe` in the engine: the model is boxed (stable address), the context's borrow is
//! extended to `'static`, and field order makes the context drop first.

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;

pub(super) struct OwnedContext {
    // Declared before `model`: Rust drops fields in declaration order, so the context is
    // freed while the model it points into is still alive.
    ctx: LlamaContext<'static>,
    model: Box<LlamaModel>,
}

impl OwnedContext {
    pub(super) fn new(
        backend: &LlamaBackend,
        model: LlamaModel,
        params: LlamaContextParams,
    ) -> Result<Self, llama_cpp_2::LlamaContextLoadError> {
        let model = Box::new(model);
        // SAFETY: the reference points into the heap allocation owned by `model`, which is
        // never moved out of its box, replaced or dropped while `ctx` exists (both are
        // private fields, `ctx` is dropped first), so it outlives every use of `ctx`.
        let model_ref: &'static LlamaModel = unsafe { &*(model.as_ref() as *const LlamaModel) };
        let ctx = model_ref.new_context(backend, params)?;
        Ok(OwnedContext { ctx, model })
    }

    pub(super) fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// Model and context together (generation needs both at once). The `'static` is an
    /// implementation detail: callers only hold these for the duration of the borrow.
    pub(super) fn split(&mut self) -> (&LlamaModel, &mut LlamaContext<'static>) {
        (&self.model, &mut self.ctx)
    }
}

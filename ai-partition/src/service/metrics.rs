//! Counters for `GET /metrics` (Prometheus text format), kept by the service so the
//! HTTP API and ABI calls are counted alike.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default, Debug, Clone, Copy)]
struct ModelCounters {
    generations: u64,
    prompt_tokens: u64,
    prompt_tokens_evaluated: u64,
    generated_tokens: u64,
    prompt_eval_ns: u64,
    eval_ns: u64,
    embeddings: u64,
}

#[derive(Default, Debug)]
pub struct Metrics {
    /// (route, status) -> (count, total seconds)
    requests: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
    models: Mutex<BTreeMap<String, ModelCounters>>,
    pub cancelled: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    pub loads: AtomicU64,
    pub unloads: AtomicU64,
    pub load_ns: AtomicU64,
}

/// Name, help text and getter of one per-model counter.
type Series = (&'static str, &'static str, fn(&ModelCounters) -> f64);

/// Name, help text and getter of one per-model scheduler gauge.
type SlotGauge = (
    &'static str,
    &'static str,
    fn(&super::SchedulerLoad) -> usize,
);

/// A loaded model's gauges, sampled when `/metrics` is rendered.
pub struct LoadedGauge {
    pub name: String,
    pub memory_bytes: u64,
    pub load: super::SchedulerLoad,
}

impl Metrics {
    pub fn record_request(&self, route: &str, status: u16, seconds: f64) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry((route.to_string(), status)).or_default();
        e.0 += 1;
        e.1 += seconds;
    }

    pub fn record_generation(&self, model: &str, stats: &crate::engine::GenerationStats) {
        let mut m = self.models.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.entry(model.to_string()).or_default();
        c.generations += 1;
        c.prompt_tokens += u64::from(stats.prompt_tokens);
        c.prompt_tokens_evaluated += u64::from(stats.prompt_tokens_evaluated);
        c.generated_tokens += u64::from(stats.generated_tokens);
        c.prompt_eval_ns += stats.prompt_eval_ns;
        c.eval_ns += stats.eval_ns;
    }

    pub fn record_embedding(&self, model: &str, inputs: usize) {
        let mut m = self.models.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(model.to_string()).or_default().embeddings += inputs as u64;
    }

    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Total generated tokens for `model` so far.
    pub fn generated_tokens(&self, model: &str) -> u64 {
        let m = self.models.lock().unwrap_or_else(|e| e.into_inner());
        m.get(model).map_or(0, |c| c.generated_tokens)
    }

    pub fn render(&self, loaded: &[LoadedGauge], queue_depth: usize, queue_limit: usize) -> String {
        let mut out = String::new();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "# HELP nexus_ai_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE nexus_ai_requests_total counter");
        let reqs = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((route, status), (n, _)) in &reqs {
            let _ = writeln!(
                out,
                "nexus_ai_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                esc(route)
            );
        }
        let _ = writeln!(
            out,
            "# HELP nexus_ai_request_duration_seconds_sum Time spent answering requests."
        );
        let _ = writeln!(out, "# TYPE nexus_ai_request_duration_seconds_sum counter");
        for ((route, status), (_, secs)) in &reqs {
            let _ = writeln!(
                out,
                "nexus_ai_request_duration_seconds_sum{{route=\"{}\",status=\"{status}\"}} {secs}",
                esc(route)
            );
        }
        let models = self
            .models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let series: [Series; 7] = [
            ("nexus_ai_generations_total", "Finished generations.", |c| {
                c.generations as f64
            }),
            (
                "nexus_ai_prompt_tokens_total",
                "Prompt tokens received.",
                |c| c.prompt_tokens as f64,
            ),
            (
                "nexus_ai_prompt_tokens_evaluated_total",
                "Prompt tokens evaluated (the rest came from the KV cache).",
                |c| c.prompt_tokens_evaluated as f64,
            ),
            (
                "nexus_ai_generated_tokens_total",
                "Tokens generated.",
                |c| c.generated_tokens as f64,
            ),
            (
                "nexus_ai_prompt_eval_seconds_total",
                "Time evaluating prompts.",
                |c| c.prompt_eval_ns as f64 / 1e9,
            ),
            (
                "nexus_ai_eval_seconds_total",
                "Time generating tokens.",
                |c| c.eval_ns as f64 / 1e9,
            ),
            ("nexus_ai_embedded_inputs_total", "Inputs embedded.", |c| {
                c.embeddings as f64
            }),
        ];
        for (name, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (model, c) in &models {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", esc(model), get(c));
            }
        }
        let counters = [
            (
                "nexus_ai_generations_cancelled_total",
                "Generations cancelled because the client went away.",
                self.cancelled.load(Ordering::Relaxed),
            ),
            (
                "nexus_ai_queue_rejected_total",
                "Requests refused with 503 because the queue was full.",
                self.rejected_queue_full.load(Ordering::Relaxed),
            ),
            (
                "nexus_ai_model_loads_total",
                "Models loaded.",
                self.loads.load(Ordering::Relaxed),
            ),
            (
                "nexus_ai_model_unloads_total",
                "Models unloaded.",
                self.unloads.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let load_s = self.load_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "# HELP nexus_ai_model_load_seconds_total Time spent loading models.\n# TYPE nexus_ai_model_load_seconds_total counter\nnexus_ai_model_load_seconds_total {load_s}");
        let _ = writeln!(out, "# HELP nexus_ai_queue_depth Requests admitted and not finished.\n# TYPE nexus_ai_queue_depth gauge\nnexus_ai_queue_depth {queue_depth}");
        let _ = writeln!(out, "# HELP nexus_ai_queue_limit Most requests admitted at once.\n# TYPE nexus_ai_queue_limit gauge\nnexus_ai_queue_limit {queue_limit}");
        let _ = writeln!(out, "# HELP nexus_ai_loaded_models Models resident in memory.\n# TYPE nexus_ai_loaded_models gauge\nnexus_ai_loaded_models {}", loaded.len());
        let total: u64 = loaded.iter().map(|l| l.memory_bytes).sum();
        let _ = writeln!(out, "# HELP nexus_ai_memory_bytes Memory held by loaded models.\n# TYPE nexus_ai_memory_bytes gauge\nnexus_ai_memory_bytes {total}");
        let _ = writeln!(out, "# HELP nexus_ai_model_memory_bytes Memory held by each loaded model.\n# TYPE nexus_ai_model_memory_bytes gauge");
        for l in loaded {
            let _ = writeln!(
                out,
                "nexus_ai_model_memory_bytes{{model=\"{}\"}} {}",
                esc(&l.name),
                l.memory_bytes
            );
        }
        let gauges: [SlotGauge; 3] = [
            (
                "nexus_ai_parallel_slots",
                "Parallel generation slots of each loaded model.",
                |l| l.slots,
            ),
            (
                "nexus_ai_slots_busy",
                "Slots running a generation now.",
                |l| l.slots_busy,
            ),
            (
                "nexus_ai_requests_queued",
                "Generations waiting for a free slot.",
                |l| l.queued,
            ),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for l in loaded.iter().filter(|l| l.load.slots > 0) {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", esc(&l.name), get(&l.load));
            }
        }
        out
    }
}

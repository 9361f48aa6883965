//! `nexus-ai serve`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::api::{self, ApiConfig, AppState};
use crate::engine::LoadOptions;
use crate::service::{KeepAlive, Service, ServiceConfig};

use super::args::ServeArgs;
use super::commands::{load_options, open_store, CliResult};

/// `host` or `host:port` (the port from `--port` when absent); `[v6]:port` works too.
pub fn resolve_addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    let host = host.trim().trim_start_matches("http://");
    if let Ok(a) = host.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let with_port = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve listen address {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("listen address {host:?} resolves to nothing"))
}

/// The tensor service's budgets from `--policy`, if given.
fn tensor_config(
    a: &ServeArgs,
) -> Result<Option<nexus_tensor::Config>, Box<dyn std::error::Error>> {
    let Some(path) = &a.policy else {
        return Ok(None);
    };
    let policy = nexus_policy::load_file(path)?;
    let (budgets, skipped) =
        nexus_tensor::policy::budgets(&policy, nexus_tensor::policy::DEFAULT_HOST_BYTES);
    for name in skipped {
        tracing::warn!(region = %name, "VRAM region of no known kind (model, cache, gaming): left out of the GPU ledger");
    }
    let mut c = nexus_tensor::Config::new(budgets);
    if a.common.threads > 0 {
        c.threads = a.common.threads as usize;
    }
    Ok(Some(c))
}

/// A size such as `6GiB`, `512MB`, `1.5G` or a number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 6GiB, 512MB, 1000000)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    Ok((n * scale) as u64)
}

/// Refuse to expose the API beyond this machine without a token.
pub fn check_exposure(addr: &SocketAddr, token: Option<&str>) -> Result<(), String> {
    if !addr.ip().is_loopback() && token.is_none_or(|t| t.is_empty()) {
        return Err(format!(
            "refusing to listen on {addr} without a bearer token: anyone on the network could use it. \
             Set --token or NEXUS_AI_TOKEN, or listen on 127.0.0.1"
        ));
    }
    Ok(())
}

/// Parallel slots when neither --parallel nor NEXUS_AI_NUM_PARALLEL is given.
pub const DEFAULT_PARALLEL: u32 = 4;

/// Slots per model: the flag (or NEXUS_AI_NUM_PARALLEL), else Ollama's OLLAMA_NUM_PARALLEL,
/// else the default.
pub fn parallel(flag: Option<u32>, ollama_env: Option<&str>) -> Result<u32, String> {
    let max = crate::engine::llama::MAX_PARALLEL;
    if let Some(n) = flag {
        return Ok(n);
    }
    match ollama_env.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_PARALLEL),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "OLLAMA_NUM_PARALLEL={v:?} is not a number of parallel slots between 1 and {max}"
            )),
        },
    }
}

pub async fn serve(a: ServeArgs) -> CliResult {
    let addr = resolve_addr(&a.host, a.port)?;
    let parallel = parallel(
        a.parallel,
        std::env::var("OLLAMA_NUM_PARALLEL").ok().as_deref(),
    )?;
    let token = a.token.clone().filter(|t| !t.is_empty());
    check_exposure(&addr, token.as_deref())?;
    let default_keep_alive = KeepAlive::parse(&a.keep_alive)?;
    // Fail now, not at the first request, when llama.cpp's CPU kernels cannot be loaded.
    let cpu = crate::engine::llama::cpu_backend()?;
    tracing::info!(
        variant = %cpu.variant,
        forced = cpu.forced,
        cpu = %cpu.cpu_model,
        path = %cpu.path.display(),
        "llama.cpp CPU backend"
    );
    let store = open_store(&a.common)?;
    tracing::info!(models = %store.dir().display(), cache = %store.package_cache().display(), "model store");
    let config = ServiceConfig {
        max_loaded: a.max_loaded,
        max_queue: a.max_queue,
        default_keep_alive,
        load: LoadOptions {
            n_parallel: parallel,
            ..load_options(&a.common)
        },
        max_memory: a.max_memory,
        tensor: tensor_config(&a)?,
    };
    let service = Service::with_store(store, config);
    let models = service.list().await?;
    tracing::info!(
        "{} models installed: {}",
        models.len(),
        models
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    service.spawn_expiry();
    for m in &a.preload {
        tracing::info!(model = %m, "preloading");
        let r = service.load(m, None).await?;
        tracing::info!(model = %r.name, "preloaded in {:.2}s", r.load_duration.as_secs_f64());
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(
        auth = if token.is_some() {
            "bearer token"
        } else {
            "none (loopback)"
        },
        max_loaded = a.max_loaded,
        max_queue = a.max_queue,
        parallel,
        ctx_per_slot = a.common.ctx,
        "listening on http://{local}"
    );
    let state = AppState::new(
        service,
        ApiConfig {
            token,
            max_body_bytes: a.max_body,
        },
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    api::serve(listener, state, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            resolve_addr("127.0.0.1", 11434).unwrap(),
            "127.0.0.1:11434".parse().unwrap()
        );
        assert_eq!(
            resolve_addr("0.0.0.0:8080", 11434).unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(resolve_addr("::1", 5).unwrap(), "[::1]:5".parse().unwrap());
        assert!(resolve_addr("no such host.invalid", 1).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("6GiB").unwrap(), 6 << 30);
        assert_eq!(parse_bytes("512MB").unwrap(), 512_000_000);
        assert_eq!(parse_bytes("1.5G").unwrap(), 1_500_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
    }

    #[test]
    fn parallel_slots_come_from_the_flag_then_ollamas_variable() {
        assert_eq!(parallel(None, None), Ok(DEFAULT_PARALLEL));
        assert_eq!(parallel(None, Some("")), Ok(DEFAULT_PARALLEL));
        assert_eq!(parallel(None, Some("2")), Ok(2));
        assert_eq!(parallel(Some(8), Some("2")), Ok(8));
        for bad in ["0", "-1", "four", "1000"] {
            let e = parallel(None, Some(bad)).unwrap_err();
            assert!(e.contains("OLLAMA_NUM_PARALLEL"), "{e}");
        }
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let lan: SocketAddr = "0.0.0.0:11434".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:11434".parse().unwrap();
        assert!(check_exposure(&lan, None).is_err());
        assert!(check_exposure(&lan, Some("")).is_err());
        assert!(check_exposure(&lan, Some("s3cret")).is_ok());
        assert!(check_exposure(&lo, None).is_ok());
    }
}

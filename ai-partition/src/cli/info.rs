//! `nexus-ai info`: the CPU, the llama.cpp CPU variant chosen for it, and the others found.

use serde_json::json;

use crate::engine::llama::backends::{REFUSED, VARIANT_ENV};

use super::args::InfoArgs;
use super::commands::CliResult;

pub fn info(a: InfoArgs) -> CliResult {
    let b = crate::engine::llama::cpu_backend()?;
    if a.json {
        let line = json!({"version": env!("CARGO_PKG_VERSION"), "cpu_backend": b});
        println!("{line}");
        return Ok(());
    }
    let how = if b.forced {
        format!("forced by {VARIANT_ENV}")
    } else {
        "the best this CPU runs".into()
    };
    println!("nexus-ai {}", env!("CARGO_PKG_VERSION"));
    println!("CPU:                 {}", b.cpu_model);
    println!("llama.cpp CPU variant: {} ({how})", b.variant);
    println!("  loaded from        {}", b.path.display());
    println!("  this CPU runs      {}", b.supported.join(", "));
    if !b.unsupported.is_empty() {
        println!("  not for this CPU   {}", b.unsupported.join(", "));
    }
    for v in &b.refused {
        let why = REFUSED
            .iter()
            .find(|(name, _)| name == v)
            .map_or("", |(_, why)| why);
        println!("  refused            {v}: {why}");
    }
    println!("ggml:                {}", b.ggml_features);
    println!("set {VARIANT_ENV} to one this CPU runs to force it");
    Ok(())
}

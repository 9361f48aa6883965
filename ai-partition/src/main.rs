//! `nexus-ai`: serve the AI partition's API, or run, list and pull models.

fn main() -> std::process::ExitCode {
    nexus_ai::engine::llama::huge_pages::reexec_with_huge_pages();
    nexus_ai::cli::main()
}

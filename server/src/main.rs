use clap::Parser;

/// jemalloc with its background thread rather than the system allocator: freed pages go
/// back to the system a few seconds after a burst of syncs, so an idle server is small
/// again (docs/SCALING.md has the figures).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // Logging is set up by `run`: `serve` reads its format from its settings first.
    let cli = diemdanh_server::cli::Cli::parse();
    if let Err(e) = diemdanh_server::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

use clap::Parser;

fn main() {
    // Logging is set up by `run`: `serve` reads its format from its settings first.
    let cli = diemdanh_server::cli::Cli::parse();
    if let Err(e) = diemdanh_server::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

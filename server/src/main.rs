use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DIEMDANH_LOG")
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = diemdanh_server::cli::Cli::parse();
    if let Err(e) = diemdanh_server::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

use clap::Parser;

fn main() {
    let cli = diemdanh::cli::Cli::parse();
    std::process::exit(diemdanh::cli::run(cli));
}

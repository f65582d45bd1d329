//! Cross-crate integration tests: real servers on loopback port 0, real SQLite files,
//! devices as library clients and through the command line. One binary, many modules.

mod bundles;
mod cli;
mod clock_skew;
mod common;
mod crash_points;
mod cuts;
mod netem;
mod nodes;
mod operations;
mod reports;
mod rosters;
mod scope_and_refusals;
mod simulation;
mod store_suite;
mod sync_and_conflicts;
mod tls;
mod write_path;

//! The `diemdanh-server` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sync_core::report::CourseReport;
use sync_core::units::UnitTree;

use crate::api::{canonical_code, hash_secret, new_code, now};
use crate::sqlite::SqliteStore;
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "diemdanh-server",
    version,
    about = "diemdanh's central server: consolidates attendance from field devices"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct DataArg {
    /// Folder of the server's store (created if missing).
    #[arg(long, env = "DIEMDANH_DATA", default_value = "diemdanh-data")]
    data: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server until SIGTERM or SIGINT, then shuts down cleanly.
    Serve {
        #[command(flatten)]
        data: DataArg,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Fill an empty store with demo data (communes of the former Nậm Nhùn district).
        #[arg(long)]
        demo: bool,
        /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Issues a one-time enrolment code for a unit; the last line of output is the code.
    EnrollCode {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        unit: String,
        #[arg(long, default_value_t = 7)]
        valid_days: u32,
    },
    /// Device management.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Reports.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Syncs carried on USB sticks or SD cards, for places with no network.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Applies a device's bundle (`diemdanh bundle export`) with the same checks as a sync.
    Import {
        file: PathBuf,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
        /// Also apply the bundle of a revoked device (a lost tablet recovered and its
        /// `diemdanh export` reviewed); every other check still applies.
        #[arg(long)]
        accept_revoked: bool,
    },
    /// Writes what a device lacks into a bundle for it (`diemdanh bundle import`).
    Export {
        #[arg(long)]
        device: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Revokes a device: its next sync is refused.
    Revoke {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        device: String,
    },
    /// Lists enrolled devices.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// One course: sessions, trainees, marks, conflicts, completion.
    Course {
        course_id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

fn open(data: &Path) -> anyhow_like::Result<SqliteStore> {
    SqliteStore::open(data).map_err(|e| anyhow_like::Error(format!("cannot open the store in {}: {e}", data.display())))
}

/// A tiny error carrier for the command line: a message for a person, exit code 1.
pub mod anyhow_like {
    #[derive(Debug)]
    pub struct Error(pub String);
    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl<E: std::error::Error> From<E> for Error {
        fn from(e: E) -> Self {
            Error(e.to_string())
        }
    }
    pub type Result<T> = std::result::Result<T, Error>;
}

pub fn run(cli: Cli) -> anyhow_like::Result<()> {
    match cli.command {
        Command::Serve {
            data,
            listen,
            demo,
            tls_cert,
            tls_key,
        } => serve(&data.data, listen, demo, tls_cert.zip(tls_key)),
        Command::EnrollCode { data, unit, valid_days } => {
            let unit = UnitTree::reference().resolve(&unit)?;
            if !(1..=90).contains(&valid_days) {
                return Err(anyhow_like::Error("--valid-days must be 1 to 90".into()));
            }
            let store = open(&data.data)?;
            let code = new_code();
            let expires = now() + i64::from(valid_days) * 86_400;
            store.create_enroll_code(&unit.key.to_string(), &hash_secret(&canonical_code(&code)), expires)?;
            println!(
                "Enrolment code for {} ({}), valid {} days, usable once:",
                unit.key, unit.name, valid_days
            );
            println!("{code}");
            Ok(())
        }
        Command::Device {
            command: DeviceCommand::Revoke { data, device },
        } => {
            let store = open(&data.data)?;
            if store.revoke_device(&device, now())? {
                println!("device {device} revoked");
                Ok(())
            } else {
                Err(anyhow_like::Error(format!(
                    "no device {device} is enrolled on this server"
                )))
            }
        }
        Command::Device {
            command: DeviceCommand::List { data, json },
        } => {
            let store = open(&data.data)?;
            let devices = store.devices()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                for d in devices {
                    println!(
                        "{}\t{}\t{}\t{}",
                        d.id,
                        d.unit,
                        if d.revoked_at.is_some() { "revoked" } else { "active" },
                        d.last_sync_at
                            .map(sync_core::device::format_time)
                            .unwrap_or_else(|| "never synced".into())
                    );
                }
            }
            Ok(())
        }
        Command::Bundle {
            command:
                BundleCommand::Import {
                    file,
                    data,
                    json,
                    accept_revoked,
                },
        } => {
            let bytes = read_bundle(&file)?;
            let store = open(&data.data)?;
            let report = crate::bundle::import_with(&store, &bytes, accept_revoked)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "bundle of device {}: {} document(s) accepted, {} refused",
                    report.device_id,
                    report.accepted.len(),
                    report.refused.len()
                );
                for (doc, reason) in &report.refused {
                    println!("refused {doc}: {reason}");
                }
            }
            Ok(())
        }
        Command::Bundle {
            command: BundleCommand::Export { device, out, data },
        } => {
            let store = open(&data.data)?;
            let (bytes, docs) = crate::bundle::export(&store, &device)?;
            write_file(&out, &bytes)?;
            println!(
                "wrote {} ({} bytes, {docs} document(s)) for device {device}",
                out.display(),
                bytes.len()
            );
            Ok(())
        }
        Command::Report {
            command: ReportCommand::Course { course_id, data, json },
        } => {
            let store = open(&data.data)?;
            let rows = store
                .course_rows(&course_id)?
                .ok_or_else(|| anyhow_like::Error(format!("course {course_id} is not on this server")))?;
            let report = CourseReport::assemble(rows);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_course(&report);
            }
            Ok(())
        }
    }
}

fn read_bundle(path: &Path) -> anyhow_like::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).map_err(|e| anyhow_like::Error(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > sync_core::bundle::MAX_BUNDLE_BYTES as u64 {
        return Err(anyhow_like::Error(format!(
            "{} is larger than a bundle can be",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| anyhow_like::Error(format!("cannot read {}: {e}", path.display())))
}

/// Writes through a temporary file and a rename, so a half-written bundle never exists
/// under the final name (a USB stick pulled out mid-write).
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow_like::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("partial");
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| anyhow_like::Error(format!("cannot write {}: {e}", tmp.display())))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow_like::Error(format!("cannot write {}: {e}", path.display())))?;
    Ok(())
}

pub fn print_course(r: &CourseReport) {
    println!("{} ({}), unit {}", r.title, r.id, r.unit);
    println!(
        "{} sessions, {} trainees, {} marks, {} conflicts",
        r.sessions.len(),
        r.trainees.len(),
        r.marks.len(),
        r.conflicts.len()
    );
    for (t, c) in r.trainees.iter().zip(&r.completion) {
        println!(
            "  {:<30} {:>3}/{:<3} {:>5.1}% {}",
            t.name.as_deref().unwrap_or(&t.id),
            c.attended,
            c.sessions,
            c.ratio * 100.0,
            if c.completed { "completed" } else { "below threshold" }
        );
    }
}

fn serve(data: &Path, listen: SocketAddr, demo: bool, tls: Option<(PathBuf, PathBuf)>) -> anyhow_like::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Checked before the store is touched: a bad certificate path fails at once.
    let tls = match &tls {
        Some((cert, key)) => Some(rt.block_on(crate::tls::load(cert, key))?),
        None => None,
    };
    let store = open(data)?;
    if demo && crate::demo::seed(&store)? {
        tracing::info!("demo data created");
    }
    let store: Arc<dyn Store> = Arc::new(store);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Whoever started us may have closed our stdout: a status line is not worth a panic.
        say(&format!("diemdanh-server listening on {scheme}://{addr}"));
        match tls {
            Some(config) => crate::tls::serve_tls_until(listener, store, config, shutdown_signal()).await?,
            None => crate::serve_until(listener, store, shutdown_signal()).await?,
        }
        say("diemdanh-server stopped");
        Ok(())
    })
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

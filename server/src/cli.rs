//! The `diemdanh-server` command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sync_core::report::CourseReport;
use sync_core::units::UnitTree;

use crate::reports::{self, export::Format, Tabular};

use crate::api::{canonical_code, hash_secret, new_code, now};
use crate::pg::PgStore;
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
    /// A PostgreSQL database instead of the folder (`postgres://user@host/db`), shared by
    /// any number of server nodes; `--data` is then not used.
    #[arg(long, env = "DIEMDANH_DATABASE")]
    database: Option<String>,
    /// Most connections this process opens to PostgreSQL.
    #[arg(long, env = "DIEMDANH_DB_CONNECTIONS", default_value_t = 8)]
    db_connections: u32,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server until SIGTERM or SIGINT, then shuts down cleanly: requests in
    /// flight finish (for at most --shutdown-timeout). Each setting comes from its flag,
    /// else its DIEMDANH_* variable, else the --config file, else its default.
    Serve {
        /// A TOML file of settings (keys as the flags, with `_`: docs/OPERATIONS.md).
        #[arg(long, env = "DIEMDANH_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: crate::config::Layer,
        /// Fill an empty store with demo data (communes of the former Nậm Nhùn district).
        #[arg(long)]
        demo: bool,
        /// How much demo data: `district` (the former Nậm Nhùn, 207 cadres) or
        /// `province` (every commune of Lai Châu, same shape).
        #[arg(long, default_value = "district", value_parser = ["district", "province"])]
        demo_scale: String,
        /// Print the settings in force (secrets hidden) as a TOML file and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Copies the SQLite store to FILE while the server runs (SQLite's online backup),
    /// then checks the copy (`PRAGMA integrity_check`).
    Backup {
        /// Folder of the server's store.
        #[arg(long, env = "DIEMDANH_DATA", default_value = "diemdanh-data")]
        data: PathBuf,
        /// The backup file to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Puts a backup in place as the store of DATA. Refuses while a server runs on DATA,
    /// and when DATA already holds a store unless --force (which keeps it aside).
    Restore {
        /// Folder of the server's store (created if missing).
        #[arg(long, env = "DIEMDANH_DATA", default_value = "diemdanh-data")]
        data: PathBuf,
        /// The backup file (`diemdanh-server backup --out`).
        #[arg(long)]
        from: PathBuf,
        /// Replace the store DATA holds (it is renamed aside, not deleted).
        #[arg(long)]
        force: bool,
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
    /// Web accounts of the province and district organisers.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Syncs carried on USB sticks or SD cards, for places with no network.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Imports data from files (a roster sheet in the README's template).
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Commune rosters.
    Roster {
        #[command(subcommand)]
        command: RosterCommand,
    },
    /// Completion decisions and certificate numbers.
    Certificates {
        #[command(subcommand)]
        command: CertificatesCommand,
    },
    /// The unit structures (legacy and 2025).
    Units {
        #[command(subcommand)]
        command: UnitsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Imports a roster from an XLSX, XLS or CSV file as a server change that devices
    /// receive at their next sync. Every bad row is reported; with any bad row nothing
    /// is imported unless --skip-invalid. Importing the same file again creates nothing.
    Roster {
        file: PathBuf,
        #[arg(long)]
        unit: String,
        #[arg(long)]
        skip_invalid: bool,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RosterCommand {
    /// Writes a roster as XLSX in the import template, in Vietnamese order.
    Export {
        #[arg(long)]
        unit: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Debug, Subcommand)]
enum CertificatesCommand {
    /// Issues a certificate number to every trainee who met the attendance threshold
    /// and passed every evaluation; numbers already issued are kept. Idempotent.
    Issue {
        #[arg(long)]
        course: String,
        /// The register's year (default: this year).
        #[arg(long)]
        year: Option<i64>,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// The certificates of a course; --out writes CSV or XLSX (by the file's extension).
    List {
        #[arg(long)]
        course: String,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UnitsCommand {
    /// Applies the legacy-to-2025 mapping: moves legacy rosters to their 2025 communes
    /// and re-scopes legacy devices. Idempotent.
    ApplyReform {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
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
enum UserCommand {
    /// Creates an account whose view is the subtree of UNIT; the password is read from
    /// the first line of standard input.
    Add {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        name: String,
        /// The account's unit (2025:CODE or legacy:CODE): it sees that subtree only.
        #[arg(long)]
        unit: String,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Reset the unit and password of an existing account (ends its sessions).
        #[arg(long)]
        replace: bool,
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
        /// Print the report as JSON (as `--format json` with no `--out`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// A unit's subtree (province, district or commune; 2025 or legacy scheme) over a
    /// period: courses held, trainees, attendance, completions, with breakdowns.
    Unit {
        /// The unit, as `2025:CODE` or `legacy:CODE`.
        unit: String,
        /// First day of the period, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// Last day of the period, YYYY-MM-DD (included).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        data: DataArg,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The annual training report of a unit: learner-places by programme type, of which
    /// women and ethnic minorities.
    Annual {
        unit: String,
        #[arg(long)]
        year: i32,
        #[command(flatten)]
        data: DataArg,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, clap::Args)]
struct OutputArgs {
    /// xlsx, csv or json. Without it a short text summary is printed.
    #[arg(long)]
    format: Option<String>,
    /// The file to write (needed for xlsx and csv; json goes to stdout without it). A
    /// CSV export writes one file per table: FILE, then FILE-STEM-TABLE.csv beside it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compute the report as the data stood then: YYYY-MM-DD (the end of that day,
    /// Vietnam time) or an RFC 3339 time.
    #[arg(long)]
    as_of: Option<String>,
}

/// Opens the store the arguments name: PostgreSQL with `--database`, else the SQLite
/// folder. Never drop the last handle of a PostgreSQL store inside an async context
/// (see `pg.rs`).
fn open(data: &DataArg) -> anyhow_like::Result<Arc<dyn Store>> {
    match &data.database {
        Some(url) if crate::pg::is_postgres_url(url) => {
            let store = PgStore::open(url, data.db_connections)
                .map_err(|e| anyhow_like::Error(format!("cannot open the PostgreSQL store: {e}")))?;
            Ok(Arc::new(store))
        }
        Some(_) => Err(anyhow_like::Error(
            "--database takes a URL that starts with postgres:// or postgresql://".into(),
        )),
        None => {
            let store = SqliteStore::open(&data.data)
                .map_err(|e| anyhow_like::Error(format!("cannot open the store in {}: {e}", data.data.display())))?;
            Ok(Arc::new(store))
        }
    }
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
    if !matches!(cli.command, Command::Serve { .. }) {
        // Commands other than `serve` log text at the filter of DIEMDANH_LOG.
        let filter = std::env::var("DIEMDANH_LOG").unwrap_or_else(|_| crate::config::DEFAULT_LOG.to_string());
        crate::telemetry::init(crate::config::LogFormat::Text, &filter)
            .or_else(|_| crate::telemetry::init(crate::config::LogFormat::Text, crate::config::DEFAULT_LOG))
            .map_err(anyhow_like::Error)?;
    }
    match cli.command {
        Command::Serve {
            config,
            settings,
            demo,
            demo_scale,
            print_config,
        } => {
            let scale = match demo_scale.as_str() {
                "district" => crate::demo::Scale::District,
                "province" => crate::demo::Scale::Province,
                other => {
                    return Err(anyhow_like::Error(format!(
                        "`{other}` is not a demo scale; expected district or province"
                    )))
                }
            };
            let file = match &config {
                Some(path) => crate::config::read_file(path).map_err(anyhow_like::Error)?,
                None => crate::config::Layer::default(),
            };
            let settings = crate::config::Settings::resolve(settings, file).map_err(anyhow_like::Error)?;
            if print_config {
                print!("{}", settings.to_toml());
                return Ok(());
            }
            crate::telemetry::init(settings.log_format, &settings.log).map_err(anyhow_like::Error)?;
            serve(&settings, demo.then_some(scale))
        }
        Command::Backup { data, out, force } => {
            if out.exists() && !force {
                return Err(anyhow_like::Error(format!(
                    "{} exists: choose another name, or pass --force to replace it",
                    out.display()
                )));
            }
            let info = crate::sqlite::backup(&data, &out)?;
            println!(
                "backup of {} written to {} ({} bytes, schema version {}, integrity ok)",
                data.display(),
                out.display(),
                info.bytes,
                info.schema_version
            );
            Ok(())
        }
        Command::Restore { data, from, force } => {
            let r = crate::backup::restore(&data, &from, force, now()).map_err(anyhow_like::Error)?;
            if let Some(old) = &r.replaced {
                println!("the store it replaced is kept as {}", old.display());
            }
            println!(
                "restored {} into {} ({} bytes, schema version {}, integrity ok); start the server",
                from.display(),
                r.store.display(),
                r.bytes,
                r.schema_version
            );
            Ok(())
        }
        Command::EnrollCode { data, unit, valid_days } => {
            let unit = UnitTree::reference().resolve(&unit)?;
            if !(1..=90).contains(&valid_days) {
                return Err(anyhow_like::Error("--valid-days must be 1 to 90".into()));
            }
            let store = open(&data)?;
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
        Command::User {
            command:
                UserCommand::Add {
                    data,
                    name,
                    unit,
                    password_stdin: _,
                    replace,
                },
        } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| anyhow_like::Error(format!("cannot read the password from standard input: {e}")))?;
            let password = line.trim_end_matches(['\n', '\r']);
            let store = open(&data)?;
            let unit = crate::accounts::add(&*store, &name, &unit, password, replace)?;
            println!("account {name} created for unit {unit} ({})", unit_label(&unit));
            Ok(())
        }
        Command::Device {
            command: DeviceCommand::Revoke { data, device },
        } => {
            let store = open(&data)?;
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
            let store = open(&data)?;
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
            let store = open(&data)?;
            let report = crate::bundle::import_with(&*store, &bytes, accept_revoked)?;
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
            let store = open(&data)?;
            let (bytes, docs) = crate::bundle::export(&*store, &device)?;
            write_file(&out, &bytes)?;
            println!(
                "wrote {} ({} bytes, {docs} document(s)) for device {device}",
                out.display(),
                bytes.len()
            );
            Ok(())
        }
        Command::Import {
            command:
                ImportCommand::Roster {
                    file,
                    unit,
                    skip_invalid,
                    data,
                    json,
                },
        } => {
            let bytes =
                std::fs::read(&file).map_err(|e| anyhow_like::Error(format!("cannot read {}: {e}", file.display())))?;
            let store = open(&data)?;
            let report = crate::roster::import(&*store, &unit, &bytes, skip_invalid).map_err(anyhow_like::Error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for e in &report.errors {
                    eprintln!("row {}: {}", e.row, e.reason);
                }
                for c in &report.ignored_columns {
                    eprintln!("column `{c}` is not in the template and was not imported");
                }
                if report.applied {
                    println!(
                        "roster {}: {} row(s), {} created, {} updated, {} unchanged, {} bad row(s) skipped",
                        report.unit, report.rows, report.created, report.updated, report.unchanged, report.skipped
                    );
                }
            }
            if !report.applied {
                return Err(anyhow_like::Error(format!(
                    "nothing imported: {} bad row(s); fix them or pass --skip-invalid",
                    report.errors.len()
                )));
            }
            Ok(())
        }
        Command::Roster {
            command: RosterCommand::Export { unit, out, data },
        } => {
            let store = open(&data)?;
            let bytes = crate::roster::export(&*store, &unit).map_err(anyhow_like::Error)?;
            write_file(&out, &bytes)?;
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
            Ok(())
        }
        Command::Certificates {
            command:
                CertificatesCommand::Issue {
                    course,
                    year,
                    data,
                    json,
                },
        } => {
            let store = open(&data)?;
            let year = year.unwrap_or_else(|| i64::from(time::OffsetDateTime::now_utc().year()));
            let r = crate::certificates::issue(&*store, &course, year, now()).map_err(anyhow_like::Error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "course {}: {} trainee(s), {} completed, {} certificate(s) issued now (register {} {})",
                    r.course, r.trainees, r.completed, r.newly_issued, r.register, r.year
                );
                for l in &r.certificates {
                    println!("{}\t{}", l.number, l.name.as_deref().unwrap_or(&l.cadre));
                }
            }
            Ok(())
        }
        Command::Certificates {
            command:
                CertificatesCommand::List {
                    course,
                    out,
                    data,
                    json,
                },
        } => {
            let store = open(&data)?;
            let lines = crate::certificates::list(&*store, &course).map_err(anyhow_like::Error)?;
            if let Some(out) = out {
                let xlsx = out
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"));
                let bytes = if xlsx {
                    crate::certificates::to_xlsx(&lines).map_err(anyhow_like::Error)?
                } else {
                    crate::certificates::to_csv(&lines)
                };
                write_file(&out, &bytes)?;
                println!("wrote {} ({} certificate(s))", out.display(), lines.len());
            } else if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                for l in &lines {
                    println!("{}\t{}", l.number, l.name.as_deref().unwrap_or(&l.cadre));
                }
            }
            Ok(())
        }
        Command::Units {
            command: UnitsCommand::ApplyReform { data, json },
        } => {
            let store = open(&data)?;
            let report = crate::roster::apply_reform(&*store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for (from, to, n) in &report.moved {
                    println!("{from} -> {to}: {n} cadre(s) moved");
                }
                println!(
                    "{} cadre(s) moved, {} device(s) re-scoped",
                    report.cadres_moved, report.devices_rescoped
                );
            }
            Ok(())
        }
        Command::Report {
            command:
                ReportCommand::Course {
                    course_id,
                    data,
                    json,
                    mut output,
                },
        } => {
            if json && output.format.is_none() {
                output.format = Some("json".into());
            }
            let format = output.format()?;
            let base = open(&data)?;
            let (store, as_of) = output.store(&*base)?;
            let mut sheet = reports::course::build(store.get(&*base), &course_id)?;
            sheet.as_of = as_of;
            emit(&sheet, format, output.out.as_deref(), |s| print_course(&s.report))
        }
        Command::Report {
            command:
                ReportCommand::Unit {
                    unit,
                    from,
                    to,
                    data,
                    output,
                },
        } => {
            let format = output.format()?;
            let period = reports::unit::Period::new(&unit, &from, &to)?;
            let base = open(&data)?;
            let (store, as_of) = output.store(&*base)?;
            let mut report = reports::unit::build(store.get(&*base), &period)?;
            report.as_of = as_of;
            emit(&report, format, output.out.as_deref(), print_unit)
        }
        Command::Report {
            command:
                ReportCommand::Annual {
                    unit,
                    year,
                    data,
                    output,
                },
        } => {
            let format = output.format()?;
            let base = open(&data)?;
            let (store, as_of) = output.store(&*base)?;
            let mut report = reports::annual::build(store.get(&*base), &unit, year)?;
            report.as_of = as_of;
            emit(&report, format, output.out.as_deref(), print_annual)
        }
    }
}

/// The store a report reads: the live one, or the documents rebuilt as of a past time.
enum ReportStore {
    Live,
    AsOf(Box<SqliteStore>),
}

impl ReportStore {
    fn get<'a>(&'a self, live: &'a dyn Store) -> &'a dyn Store {
        match self {
            ReportStore::Live => live,
            ReportStore::AsOf(s) => &**s,
        }
    }
}

impl OutputArgs {
    fn format(&self) -> anyhow_like::Result<Option<Format>> {
        let format = self.format.as_deref().map(str::parse::<Format>).transpose()?;
        if matches!(format, Some(Format::Xlsx | Format::Csv)) && self.out.is_none() {
            return Err(anyhow_like::Error("--format xlsx and csv need --out FILE".into()));
        }
        if format.is_none() && self.out.is_some() {
            return Err(anyhow_like::Error("--out needs --format xlsx, csv or json".into()));
        }
        Ok(format)
    }

    fn store(&self, live: &dyn Store) -> anyhow_like::Result<(ReportStore, Option<String>)> {
        match &self.as_of {
            None => Ok((ReportStore::Live, None)),
            Some(s) => {
                let until = reports::asof::parse_as_of(s)?;
                Ok((
                    ReportStore::AsOf(Box::new(reports::asof::rebuild(live, until)?)),
                    Some(reports::asof::describe(until)),
                ))
            }
        }
    }
}

/// Writes a report in the asked format, or prints its text summary.
fn emit<R: serde::Serialize + Tabular>(
    report: &R,
    format: Option<Format>,
    out: Option<&Path>,
    text: impl FnOnce(&R),
) -> anyhow_like::Result<()> {
    match (format, out) {
        (None, _) => text(report),
        (Some(Format::Json), None) => println!("{}", serde_json::to_string_pretty(report)?),
        (Some(Format::Json), Some(out)) => {
            let mut bytes = serde_json::to_vec_pretty(report)?;
            bytes.push(b'\n');
            write_file(out, &bytes)?;
            println!("wrote {}", out.display());
        }
        (Some(Format::Xlsx), Some(out)) => {
            write_file(out, &reports::export::xlsx::write(&report.tables())?)?;
            println!("wrote {}", out.display());
        }
        (Some(Format::Csv), Some(out)) => {
            let tables = report.tables();
            for (table, path) in tables.iter().zip(reports::export::csv_paths(out, &tables)) {
                write_file(&path, &reports::export::csv::write(table)?)?;
                println!("wrote {}", path.display());
            }
        }
        (Some(_), None) => return Err(anyhow_like::Error("--format xlsx and csv need --out FILE".into())),
    }
    Ok(())
}

fn print_unit(r: &reports::unit::UnitReport) {
    println!("{} ({}), {} to {}", r.unit_name, r.unit, r.from, r.to);
    if let Some(t) = &r.as_of {
        println!("as the data stood at {t}");
    }
    let f = &r.totals;
    println!(
        "{} courses, {} trainees, {} learner-places, {} trainee-sessions, attendance {:.2}%, {} of {} finished places completed",
        f.courses, f.trainees, f.places, f.trainee_sessions, f.attendance_rate, f.completed, f.finished_places
    );
    for b in &r.breakdowns {
        println!("{}", b.title);
        for row in &b.rows {
            println!(
                "  {:<36} {:>6} trainees {:>7.2}% {:>6} completed",
                row.label, row.figures.trainees, row.figures.attendance_rate, row.figures.completed
            );
        }
    }
}

fn print_annual(r: &reports::annual::AnnualReport) {
    println!("{} ({}), year {}", r.unit_name, r.unit, r.year);
    if let Some(t) = &r.as_of {
        println!("as the data stood at {t}");
    }
    for p in r.programmes.iter().chain([&r.total]) {
        println!(
            "  {:<40} {:>4} courses {:>6} places {:>6} women {:>6} ethnic minority",
            p.label, p.courses, p.places, p.women, p.ethnic_minority
        );
    }
}

fn unit_label(unit: &str) -> String {
    UnitTree::reference()
        .resolve(unit)
        .map(|u| u.name.clone())
        .unwrap_or_default()
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
            if c.completed {
                "completed"
            } else if !c.attendance_ok {
                "below threshold"
            } else {
                "evaluation missing or failed"
            }
        );
    }
}

fn serve(settings: &crate::config::Settings, demo: Option<crate::demo::Scale>) -> anyhow_like::Result<()> {
    // Store work runs on blocking threads; the embedded store has one writer, so more
    // threads than this would only wait on it, each with its own stack and malloc arena.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()?;
    // Checked before the store is touched: a bad certificate path fails at once.
    let tls = match &settings.tls {
        Some((cert, key)) => Some(rt.block_on(crate::tls::load(cert, key))?),
        None => None,
    };
    let data = DataArg {
        data: settings.data.clone(),
        database: settings.database.clone(),
        db_connections: settings.db_connections,
    };
    // The embedded store's folder is held for as long as we serve: `restore` refuses then.
    let _lock = match &data.database {
        None => crate::backup::lock_for_serve(&data.data).map_err(anyhow_like::Error)?,
        Some(_) => None,
    };
    let (store, store_size) = open_sized(&data)?;
    let mut demo_login = None;
    if let Some(scale) = demo {
        if crate::demo::seed_scaled(&*store, scale)? {
            tracing::info!("demo data created");
        }
        // A fresh password on every start: the demo account is for looking around.
        let password = new_code();
        let unit = crate::accounts::add(
            &*store,
            crate::demo::ACCOUNT,
            crate::demo::account_unit(),
            &password,
            true,
        )?;
        demo_login = Some((unit, password));
    }
    let resume = crate::resume::Resume::new();
    let router = crate::api::app_with_options(
        store.clone(),
        crate::api::Options {
            limits: settings.limits,
            metrics_token: settings.metrics_token.clone(),
            store_size: Some(store_size),
            resume: resume.clone(),
        },
    );
    let listen = settings.listen;
    let drain = settings.shutdown_timeout;
    let housekeeping = store.clone();
    // This handle outlives the runtime: a PostgreSQL pool is dropped outside async code.
    let keep = store;
    let served = rt.block_on(async move {
        let stop = shutdown_signal();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow_like::Error(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Whoever started us may have closed our stdout: a status line is not worth a panic.
        say(&format!("diemdanh-server listening on {scheme}://{addr}"));
        tracing::info!(%addr, scheme, "listening");
        if let Some((unit, password)) = &demo_login {
            say(&format!(
                "demo sign-in: account {} password {password} (sees {unit}, {})",
                crate::demo::ACCOUNT,
                unit_label(unit)
            ));
        }
        // Housekeeping for as long as the server runs (ends with the runtime).
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                every.tick().await;
                let s = housekeeping.clone();
                let _ = tokio::task::spawn_blocking(move || s.maintain()).await;
                resume.trim();
            }
        });
        let drained = match tls {
            Some(config) => {
                crate::tls::serve_tls_router(listener, router, config, stop, drain).await?;
                crate::Drained::All
            }
            None => crate::serve_router(listener, router, stop, Some(drain)).await?,
        };
        say("diemdanh-server stopped");
        Ok::<_, anyhow_like::Error>(drained)
    });
    // Requests cut at the drain timeout may still hold a blocking thread in a store call:
    // do not wait for them (an unfinished transaction is rolled back by the database).
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(keep);
    served.map(|_| ())
}

/// The store, and where its size on disk is read for `/metrics`.
fn open_sized(data: &DataArg) -> anyhow_like::Result<(Arc<dyn Store>, crate::metrics::StoreSize)> {
    match &data.database {
        Some(url) if crate::pg::is_postgres_url(url) => {
            let store = Arc::new(
                PgStore::open(url, data.db_connections)
                    .map_err(|e| anyhow_like::Error(format!("cannot open the PostgreSQL store: {e}")))?,
            );
            let size = crate::metrics::StoreSize::Postgres(store.clone());
            Ok((store, size))
        }
        _ => Ok((open(data)?, crate::metrics::StoreSize::SqliteDir(data.data.clone()))),
    }
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Completes at SIGTERM (systemd, docker, kill) or SIGINT (Ctrl-C). Both handlers are
/// installed when this is called (inside the runtime, before the server says it
/// listens), so a signal that arrives early is not lost; one that cannot be installed is
/// logged and the other still works.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let watch = |kind: SignalKind, name: &'static str| {
            let installed = signal(kind);
            async move {
                match installed {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, signal = name, "cannot watch for this signal");
                        std::future::pending::<()>().await;
                    }
                }
                name
            }
        };
        let term = watch(SignalKind::terminate(), "SIGTERM");
        let int = watch(SignalKind::interrupt(), "SIGINT");
        async move {
            let which = tokio::select! { w = term => w, w = int => w };
            tracing::info!(signal = %which, "shutting down");
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}

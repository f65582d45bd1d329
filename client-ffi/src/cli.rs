//! The field command line: a device in a terminal. Every command that prints data
//! takes `--json`; everything but `enroll` and `sync` works with no server reachable.
//! Exit codes: 0 done, 1 refused or failed, 3 the server could not be reached.
//! An encrypted store (feature `sqlcipher`) takes its key from `DIEMDANH_DB_KEY`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use sync_core::device::{Device, NewSession, SyncProgress};
use sync_core::model::{Cadre, CourseMeta, HalfDay, MarkStatus};
use sync_core::Error;

use crate::transport::HttpTransport;

#[derive(Debug, Parser)]
#[command(
    name = "diemdanh",
    version,
    about = "diemdanh field device: record attendance offline, sync when a signal comes"
)]
pub struct Cli {
    /// The device's folder (its database lives there).
    #[arg(long, global = true, env = "DIEMDANH_HOME", default_value = "diemdanh-home")]
    home: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Json {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trades a one-time code from the server's administrator for this device's credentials.
    Enroll {
        #[arg(long)]
        server: String,
        #[arg(long)]
        code: String,
        /// PEM certificate of the private CA the server's certificate comes from (a
        /// district server); remembered, and trusted by every later sync.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
    },
    /// Device id, unit, pending changes, last sync, refused batches.
    Status(Json),
    /// The commune roster.
    Cadre {
        #[command(subcommand)]
        command: CadreCommand,
    },
    /// Courses and their sessions and trainees.
    Course {
        #[command(subcommand)]
        command: CourseCommand,
    },
    /// Records attendance for one trainee (--cadre) or every enrolled trainee (--all).
    Mark {
        #[arg(long)]
        course: String,
        /// Session id, or its date when the course has one session that day.
        #[arg(long)]
        session: String,
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        cadre: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long, value_parser = parse_status)]
        status: MarkStatus,
        #[arg(long)]
        note: Option<String>,
    },
    /// Exchanges everything with the server.
    Sync {
        /// Retries of an exchange that gets no answer, with capped exponential backoff.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        #[command(flatten)]
        json: Json,
    },
    /// Shows a record.
    Show {
        #[command(subcommand)]
        command: ShowCommand,
    },
    /// Marks recorded differently by two devices, waiting for a person to decide.
    Conflicts(Json),
    /// Syncs carried on USB sticks or SD cards when there is no network at all.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Writes everything this device holds (JSON, or the marks as CSV with --csv) for an
    /// administrator who holds a lost or broken tablet: works offline and when revoked;
    /// `unsent` lists what the server never received.
    Export {
        #[arg(long)]
        out: PathBuf,
        /// The marks of every course as CSV (one row per mark, `unsent` column) instead of JSON.
        #[arg(long)]
        csv: bool,
    },
    /// Records an evaluation of a trainee: monthly (--period YYYY-MM) or final, with
    /// a score out of 10 (--score 8.5) or a decision (--passed yes|no).
    Evaluate {
        #[arg(long)]
        course: String,
        #[arg(long)]
        cadre: String,
        #[arg(long, value_parser = |s: &str| s.parse::<sync_core::model::EvalKind>().map_err(|e| e.to_string()))]
        kind: sync_core::model::EvalKind,
        #[arg(long)]
        period: Option<String>,
        #[arg(long, conflicts_with = "passed", required_unless_present = "passed")]
        score: Option<f64>,
        #[arg(long, value_parser = parse_yes_no)]
        passed: Option<bool>,
        #[command(flatten)]
        json: Json,
    },
    /// Imports data from files (a roster sheet in the README's template).
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// A commune's roster: list and search, export to XLSX.
    Roster {
        #[command(subcommand)]
        command: RosterCommand,
    },
    /// Decides a conflict with a new mark that supersedes every concurrent value.
    Resolve {
        #[arg(long)]
        course: String,
        #[arg(long)]
        session: String,
        #[arg(long)]
        cadre: String,
        #[arg(long, value_parser = parse_status)]
        status: MarkStatus,
    },
}

#[derive(Debug, Subcommand)]
enum CadreCommand {
    /// Adds a cadre to a commune roster.
    Add {
        #[arg(long)]
        unit: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = |s: &str| s.parse::<sync_core::model::Gender>().map_err(|e| e.to_string()))]
        gender: sync_core::model::Gender,
        #[arg(long)]
        birth_year: u16,
        /// Two-digit ethnic group code (01 Kinh ... 54 Rơ-măm).
        #[arg(long)]
        ethnicity: Option<String>,
        /// can_bo, cong_chuc or khong_chuyen_trach.
        #[arg(long, value_parser = |s: &str| s.parse::<sync_core::model::Category>().map_err(|e| e.to_string()))]
        category: Option<sync_core::model::Category>,
        #[arg(long)]
        position: Option<String>,
        #[arg(long)]
        qualification: Option<String>,
        /// so_cap, trung_cap, cao_cap or cu_nhan.
        #[arg(long, value_parser = |s: &str| s.parse::<sync_core::model::TheoryLevel>().map_err(|e| e.to_string()))]
        theory_level: Option<sync_core::model::TheoryLevel>,
        #[command(flatten)]
        json: Json,
    },
    /// Lists the cadres this device holds.
    List {
        #[arg(long)]
        unit: Option<String>,
        #[command(flatten)]
        json: Json,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Imports a roster from an XLSX, XLS or CSV file in the template (README.md).
    /// Every bad row is reported; with any bad row nothing is imported unless
    /// --skip-invalid. Importing the same file again creates nothing.
    Roster {
        file: PathBuf,
        #[arg(long)]
        unit: String,
        #[arg(long)]
        skip_invalid: bool,
        #[command(flatten)]
        json: Json,
    },
}

#[derive(Debug, Subcommand)]
enum RosterCommand {
    /// Lists the cadres, in Vietnamese order; --search ignores case and accents.
    List {
        #[arg(long)]
        unit: Option<String>,
        #[arg(long)]
        search: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Writes the roster as XLSX in the import template.
    Export {
        #[arg(long)]
        unit: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CourseCommand {
    /// Creates a course with its sessions.
    Create {
        #[arg(long)]
        unit: String,
        #[arg(long)]
        title: String,
        /// Session dates, comma-separated (YYYY-MM-DD,...).
        #[arg(long, value_delimiter = ',')]
        sessions: Vec<String>,
        #[arg(long, default_value_t = 0.8)]
        min_ratio: f64,
        /// Count excused absences as attended.
        #[arg(long)]
        excused_counts: bool,
        #[arg(long, default_value_t = 100)]
        planned_trainees: u32,
        /// Programme type for the annual report: ly_luan_chinh_tri, quan_ly_nha_nuoc,
        /// chuyen_mon_nghiep_vu, kien_thuc_ky_nang, quoc_phong_an_ninh, ngoai_ngu_tin_hoc,
        /// tieng_dan_toc or khac (the default when none is given).
        #[arg(long)]
        programme: Option<sync_core::model::Programme>,
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        organiser: Option<String>,
        #[arg(long)]
        form: Option<String>,
        #[arg(long)]
        venue: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Adds a session to a course.
    AddSession {
        #[arg(long)]
        course: String,
        #[arg(long)]
        date: String,
        #[arg(long, value_parser = |s: &str| s.parse::<HalfDay>().map_err(|e| e.to_string()))]
        half_day: Option<HalfDay>,
        #[arg(long)]
        periods: Option<u16>,
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Enrols trainees (repeat --cadre).
    Enrol {
        #[arg(long)]
        course: String,
        #[arg(long, required = true)]
        cadre: Vec<String>,
    },
    /// Lists the courses this device holds.
    List(Json),
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Writes everything the server has not acknowledged into a sealed file, for
    /// `diemdanh-server bundle import` at a place with a connection.
    Export {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        json: Json,
    },
    /// Applies a file made by `diemdanh-server bundle export --device THIS_DEVICE`.
    Import {
        file: PathBuf,
        #[command(flatten)]
        json: Json,
    },
}

#[derive(Debug, Subcommand)]
enum ShowCommand {
    /// A course: sessions, trainees, marks, conflicts, completion.
    Course {
        course_id: String,
        #[command(flatten)]
        json: Json,
    },
}

fn parse_status(s: &str) -> Result<MarkStatus, String> {
    s.parse().map_err(|e: sync_core::InvalidInput| e.to_string())
}

fn parse_yes_no(s: &str) -> Result<bool, String> {
    match sync_core::text::fold_compact(s).as_str() {
        "yes" | "y" | "true" | "pass" | "dat" | "co" => Ok(true),
        "no" | "n" | "false" | "fail" | "khongdat" | "khong" => Ok(false),
        _ => Err(format!("`{s}` is not yes or no")),
    }
}

fn print_json<T: Serialize>(value: &T) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(value).map_err(|e| Error::Wire(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn human_bytes(n: u64) -> String {
    if n < 10_000 {
        format!("{n} B")
    } else {
        format!("{:.1} KB", n as f64 / 1000.0)
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), Error> {
    crate::files::write_atomically(path, bytes).map_err(Error::invalid)
}

/// One row per mark of every course: the conflict's values joined by ` / `, and
/// whether the server ever received the mark.
fn marks_csv(export: &sync_core::export::DeviceExport) -> Result<Vec<u8>, Error> {
    let fail = |e: csv::Error| Error::invalid(format!("cannot write the CSV: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "course",
        "course_title",
        "session",
        "date",
        "cadre",
        "name",
        "status",
        "note",
        "conflict",
        "unsent",
    ])
    .map_err(fail)?;
    for c in &export.courses {
        for m in &c.marks {
            let date = c.sessions.iter().find(|s| s.id == m.session).map(|s| s.date.as_str());
            let name = c
                .trainees
                .iter()
                .find(|t| t.id == m.cadre)
                .and_then(|t| t.name.as_deref());
            let conflict = c
                .conflicts
                .iter()
                .find(|x| x.session == m.session && x.cadre == m.cadre);
            let status = match conflict {
                Some(x) => x.values.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(" / "),
                None => m.status.as_str().to_string(),
            };
            let key = sync_core::docs::mark_key(&m.session, &m.cadre);
            w.write_record([
                c.id.as_str(),
                c.title.as_str(),
                m.session.as_str(),
                date.unwrap_or(""),
                m.cadre.as_str(),
                name.unwrap_or(""),
                status.as_str(),
                m.note.as_deref().unwrap_or(""),
                if conflict.is_some() { "yes" } else { "no" },
                if export.mark_unsent(&c.id, &key) { "yes" } else { "no" },
            ])
            .map_err(fail)?;
        }
    }
    w.into_inner()
        .map_err(|e| Error::invalid(format!("cannot write the CSV: {e}")))
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::invalid(format!("cannot read {}: {e}", path.display())))
}

/// Prints an import report: every bad row with its number and reason.
pub fn print_import(r: &sync_core::roster::ImportReport, json: bool) -> Result<(), Error> {
    if json {
        return print_json(r);
    }
    for e in &r.errors {
        eprintln!("row {}: {}", e.row, e.reason);
    }
    for c in &r.ignored_columns {
        eprintln!("column `{c}` is not in the template and was not imported");
    }
    if r.applied {
        println!(
            "roster {}: {} row(s), {} created, {} updated, {} unchanged, {} bad row(s) skipped",
            r.unit, r.rows, r.created, r.updated, r.unchanged, r.skipped
        );
    }
    Ok(())
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match execute(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                Error::Offline(_) => 3,
                _ => 1,
            }
        }
    }
}

fn transport(device: &Device) -> Result<HttpTransport, Error> {
    HttpTransport::with_ca(&device.server_url()?, device.ca_cert()?.as_deref()).map_err(Error::invalid)
}

/// The device database's key, from the environment only: a flag would land in shell
/// history and in `ps`. Unset (or empty) means an unencrypted store.
pub const DB_KEY_ENV: &str = "DIEMDANH_DB_KEY";

fn execute(cli: Cli) -> Result<(), Error> {
    let key = std::env::var(DB_KEY_ENV).ok().filter(|k| !k.is_empty());
    let mut device = Device::open_with_key(&cli.home, key.as_deref())?;
    match cli.command {
        Command::Enroll { server, code, ca_cert } => {
            let ca = match &ca_cert {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                    Error::invalid(format!(
                        "cannot read the CA certificate {}: {}",
                        path.display(),
                        e.kind()
                    ))
                })?),
                None => None,
            };
            let mut t = HttpTransport::with_ca(&server, ca.as_deref()).map_err(Error::invalid)?;
            let resp = device.enroll_trusting(&mut t, &server, &code, ca.as_deref())?;
            println!("enrolled device {} for unit {}", resp.device_id, resp.unit);
        }
        Command::Status(j) => {
            let st = device.status()?;
            if j.json {
                print_json(&st)?;
            } else {
                println!("device {}", st.device_id);
                println!("unit {}", st.unit.as_deref().unwrap_or("(not enrolled)"));
                println!("pending changes {}", st.pending_changes);
                println!("last sync {}", st.last_sync.as_deref().unwrap_or("never"));
                for r in &st.refused {
                    println!("refused {}: {}", r.doc, r.reason);
                }
            }
        }
        Command::Cadre {
            command:
                CadreCommand::Add {
                    unit,
                    name,
                    gender,
                    birth_year,
                    ethnicity,
                    category,
                    position,
                    qualification,
                    theory_level,
                    json,
                },
        } => {
            let cadre = Cadre {
                name,
                gender,
                birth_year,
                ethnicity,
                category,
                position,
                qualification,
                theory_level,
                state_management: None,
            };
            let id = device.add_cadre(&unit, cadre)?;
            if json.json {
                print_json(&serde_json::json!({ "id": id }))?;
            } else {
                println!("{id}");
            }
        }
        Command::Cadre {
            command: CadreCommand::List { unit, json },
        } => {
            let rows = device.list_cadres(unit.as_deref())?;
            if json.json {
                print_json(&rows)?;
            } else {
                for c in rows {
                    println!("{}\t{}\t{}\t{}", c.id, c.name, c.gender, c.birth_year);
                }
            }
        }
        Command::Course {
            command:
                CourseCommand::Create {
                    unit,
                    title,
                    sessions,
                    min_ratio,
                    excused_counts,
                    planned_trainees,
                    programme,
                    topic,
                    organiser,
                    form,
                    venue,
                    json,
                },
        } => {
            let meta = CourseMeta {
                title,
                topic,
                organiser,
                form,
                venue,
                start_date: None,
                end_date: None,
                min_ratio,
                excused_counts,
                planned_trainees,
                programme,
            };
            let sessions = sessions
                .into_iter()
                .filter(|s| !s.trim().is_empty())
                .map(|d| NewSession {
                    date: d.trim().to_string(),
                    ..Default::default()
                })
                .collect();
            let created = device.create_course(&unit, meta, sessions)?;
            if json.json {
                print_json(&created)?;
            } else {
                println!("{}", created.id);
                for s in created.sessions {
                    println!("  session {} {}", s.id, s.date);
                }
            }
        }
        Command::Course {
            command:
                CourseCommand::AddSession {
                    course,
                    date,
                    half_day,
                    periods,
                    topic,
                    json,
                },
        } => {
            let s = device.add_session(
                &course,
                NewSession {
                    date,
                    half_day,
                    periods,
                    topic,
                },
            )?;
            if json.json {
                print_json(&s)?;
            } else {
                println!("{}", s.id);
            }
        }
        Command::Course {
            command: CourseCommand::Enrol { course, cadre },
        } => {
            for c in &cadre {
                device.enrol(&course, c)?;
            }
            println!("enrolled {} trainee(s)", cadre.len());
        }
        Command::Course {
            command: CourseCommand::List(j),
        } => {
            let rows = device.list_courses()?;
            if j.json {
                print_json(&rows)?;
            } else {
                for c in rows {
                    println!(
                        "{}\t{}\t{} sessions\t{} trainees\t{}",
                        c.id, c.unit, c.sessions, c.trainees, c.title
                    );
                }
            }
        }
        Command::Mark {
            course,
            session,
            cadre,
            all,
            status,
            note,
        } => {
            if all {
                let n = device.mark_all(&course, &session, status)?;
                println!("saved {n} mark(s)");
            } else if let Some(cadre) = cadre {
                device.mark(&course, &session, &cadre, status, note)?;
                println!("saved");
            }
        }
        Command::Sync { retries, json: j } => {
            let mut t = transport(&device)?;
            device.set_retry(sync_core::device::RetryPolicy {
                retries,
                ..Default::default()
            });
            // Drawn only when stderr is a terminal; scripts and --json see the summary alone.
            let bar = if j.json {
                indicatif::ProgressBar::hidden()
            } else {
                indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} sync {elapsed} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar.set_message("connecting");
            let mut progress = |p: &SyncProgress| {
                bar.set_message(format!(
                    "↑ {} ↓ {} · {} document(s) sent, {} received · {} change(s) · {} left · {} request(s)",
                    human_bytes(p.stats.bytes_up),
                    human_bytes(p.stats.bytes_down),
                    p.stats.docs_sent,
                    p.stats.docs_received,
                    p.stats.changes_sent,
                    p.docs_left,
                    p.stats.requests
                ));
                true
            };
            let result = device.sync(&mut t, &mut progress);
            bar.finish_and_clear();
            let stats = result?;
            if j.json {
                print_json(&stats)?;
            } else {
                println!(
                    "synced: {} request(s), {} up, {} down, {} document(s) sent ({} change(s)), {} received, {:.2} s",
                    stats.requests,
                    human_bytes(stats.bytes_up),
                    human_bytes(stats.bytes_down),
                    stats.docs_sent,
                    stats.changes_sent,
                    stats.docs_received,
                    stats.seconds
                );
            }
            if !stats.refused.is_empty() {
                for r in &stats.refused {
                    eprintln!("refused by the server: {}: {}", r.doc, r.reason);
                }
                return Err(Error::Server(format!(
                    "{} document(s) were refused; the data stays on this device (see `diemdanh status`)",
                    stats.refused.len()
                )));
            }
        }
        Command::Bundle {
            command: BundleCommand::Export { out, json },
        } => {
            let summary = device.export_bundle()?;
            write_atomically(&out, &summary.data)?;
            if json.json {
                print_json(&summary)?;
            } else {
                println!(
                    "wrote {} ({} bytes, {} document(s), {} change(s)); the next sync checks it arrived",
                    out.display(),
                    summary.bytes,
                    summary.docs,
                    summary.changes
                );
            }
        }
        Command::Bundle {
            command: BundleCommand::Import { file, json },
        } => {
            let bytes =
                std::fs::read(&file).map_err(|e| Error::invalid(format!("cannot read {}: {e}", file.display())))?;
            let summary = device.import_bundle(&bytes)?;
            if json.json {
                print_json(&summary)?;
            } else {
                println!("applied {} ({} document(s))", file.display(), summary.docs);
            }
        }
        Command::Show {
            command: ShowCommand::Course { course_id, json },
        } => {
            let r = device.show_course(&course_id)?;
            if json.json {
                print_json(&r)?;
            } else {
                println!("{} ({}), unit {}", r.title, r.id, r.unit);
                for (t, c) in r.trainees.iter().zip(&r.completion) {
                    println!(
                        "  {:<30} {}/{} {:.0}% {}",
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
                if !r.evaluations.is_empty() {
                    println!("{} evaluation(s)", r.evaluations.len());
                }
                if !r.conflicts.is_empty() {
                    println!("{} conflict(s): run `diemdanh conflicts`", r.conflicts.len());
                }
            }
        }
        Command::Conflicts(j) => {
            let rows = device.conflicts()?;
            if j.json {
                print_json(&rows)?;
            } else {
                for c in rows {
                    println!(
                        "course {} session {} cadre {}: {}",
                        c.course,
                        c.session,
                        c.cadre,
                        c.values.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(" / ")
                    );
                }
            }
        }
        Command::Export { out, csv } => {
            let export = device.export_all()?;
            let bytes = if csv {
                marks_csv(&export)?
            } else {
                serde_json::to_vec_pretty(&export).map_err(|e| Error::Wire(e.to_string()))?
            };
            write_atomically(&out, &bytes)?;
            let unsent_marks = export.unsent.iter().filter(|u| u.key.starts_with("m/")).count();
            println!(
                "wrote {} ({} course(s), {} value(s) the server never received, {} of them marks)",
                out.display(),
                export.courses.len(),
                export.unsent.len(),
                unsent_marks
            );
        }
        Command::Evaluate {
            course,
            cadre,
            kind,
            period,
            score,
            passed,
            json,
        } => {
            let e = device.evaluate(&course, &cadre, kind, period, score, passed)?;
            if json.json {
                print_json(&e)?;
            } else {
                println!(
                    "saved {} evaluation ({})",
                    e.slot(),
                    if e.is_pass() { "passed" } else { "not passed" }
                );
            }
        }
        Command::Import {
            command:
                ImportCommand::Roster {
                    file,
                    unit,
                    skip_invalid,
                    json,
                },
        } => {
            let bytes = read_file(&file)?;
            let report = device.import_roster(&unit, &bytes, skip_invalid)?;
            print_import(&report, json.json)?;
            if !report.applied {
                return Err(Error::invalid(format!(
                    "nothing imported: {} bad row(s); fix them or pass --skip-invalid",
                    report.errors.len()
                )));
            }
        }
        Command::Roster {
            command: RosterCommand::List { unit, search, json },
        } => {
            let rows = device.search_cadres(unit.as_deref(), search.as_deref())?;
            if json.json {
                print_json(&rows)?;
            } else {
                for c in rows {
                    println!("{}\t{}\t{}\t{}", c.id, c.name, c.gender, c.birth_year);
                }
            }
        }
        Command::Roster {
            command: RosterCommand::Export { unit, out },
        } => {
            let bytes = device.export_roster(&unit)?;
            write_atomically(&out, &bytes)?;
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
        }
        Command::Resolve {
            course,
            session,
            cadre,
            status,
        } => {
            device.resolve(&course, &session, &cadre, status)?;
            println!("resolved");
        }
    }
    Ok(())
}

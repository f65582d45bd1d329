//! The data the apps send and receive: plain records and enums of the FFI, mirrored from
//! the core's types and converted here, so the core carries no uniffi derive and an FFI
//! record can change shape without touching the documents or the wire.

use sync_core::device as dev;
use sync_core::model as m;
use sync_core::report as rep;

/// Attendance of one trainee at one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum MarkStatus {
    Present,
    Late,
    LeftEarly,
    Excused,
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Gender {
    Female,
    Male,
    Other,
}

/// Cán bộ chuyên trách, công chức, người hoạt động không chuyên trách.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Category {
    CanBo,
    CongChuc,
    KhongChuyenTrach,
}

/// Political-theory level: sơ cấp, trung cấp, cao cấp, cử nhân.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TheoryLevel {
    SoCap,
    TrungCap,
    CaoCap,
    CuNhan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum HalfDay {
    Morning,
    Afternoon,
}

/// Maps an FFI enum to the core's and back, variant by variant.
macro_rules! mirror_enum {
    ($ffi:ident, $core:path, [$($v:ident),+]) => {
        impl From<$ffi> for $core {
            fn from(x: $ffi) -> Self {
                match x { $($ffi::$v => <$core>::$v),+ }
            }
        }
        impl From<$core> for $ffi {
            fn from(x: $core) -> Self {
                match x { $(<$core>::$v => $ffi::$v),+ }
            }
        }
    };
}

mirror_enum!(MarkStatus, m::MarkStatus, [Present, Late, LeftEarly, Excused, Absent]);
mirror_enum!(Gender, m::Gender, [Female, Male, Other]);
mirror_enum!(Category, m::Category, [CanBo, CongChuc, KhongChuyenTrach]);
mirror_enum!(TheoryLevel, m::TheoryLevel, [SoCap, TrungCap, CaoCap, CuNhan]);
mirror_enum!(HalfDay, m::HalfDay, [Morning, Afternoon]);

/// What `enroll` got from the server.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Enrollment {
    pub device_id: String,
    /// The unit key this device records for, e.g. "2025:03434".
    pub unit: String,
}

/// A cadre to add to a commune roster.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct NewCadre {
    pub name: String,
    pub gender: Gender,
    pub birth_year: u16,
    /// Two-digit ethnic group code ("01" Kinh ... "54" Rơ-măm). Sensitive: never logged.
    #[uniffi(default = None)]
    pub ethnicity: Option<String>,
    #[uniffi(default = None)]
    pub category: Option<Category>,
    #[uniffi(default = None)]
    pub position: Option<String>,
    #[uniffi(default = None)]
    pub qualification: Option<String>,
    #[uniffi(default = None)]
    pub theory_level: Option<TheoryLevel>,
}

impl From<NewCadre> for m::Cadre {
    fn from(c: NewCadre) -> Self {
        m::Cadre {
            name: c.name,
            gender: c.gender.into(),
            birth_year: c.birth_year,
            ethnicity: c.ethnicity,
            category: c.category.map(Into::into),
            position: c.position,
            qualification: c.qualification,
            theory_level: c.theory_level.map(Into::into),
            state_management: None,
        }
    }
}

/// A cadre as the roster list shows it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Cadre {
    pub id: String,
    pub unit: String,
    pub name: String,
    pub gender: Gender,
    pub birth_year: u16,
}

impl From<dev::CadreRow> for Cadre {
    fn from(c: dev::CadreRow) -> Self {
        Cadre {
            id: c.id,
            unit: c.unit,
            name: c.name,
            // The store only ever holds values that parsed; `Other` is never a guess in practice.
            gender: c.gender.parse::<m::Gender>().map(Into::into).unwrap_or(Gender::Other),
            birth_year: c.birth_year,
        }
    }
}

/// A course to create.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct NewCourse {
    pub title: String,
    #[uniffi(default = None)]
    pub topic: Option<String>,
    #[uniffi(default = None)]
    pub organiser: Option<String>,
    #[uniffi(default = None)]
    pub form: Option<String>,
    #[uniffi(default = None)]
    pub venue: Option<String>,
    /// Share of sessions a trainee must attend to complete, in (0, 1].
    #[uniffi(default = 0.8)]
    pub min_ratio: f64,
    /// Whether an excused absence counts as attended.
    #[uniffi(default = false)]
    pub excused_counts: bool,
    #[uniffi(default = 100)]
    pub planned_trainees: u32,
}

impl From<NewCourse> for m::CourseMeta {
    fn from(c: NewCourse) -> Self {
        m::CourseMeta {
            title: c.title,
            topic: c.topic,
            organiser: c.organiser,
            form: c.form,
            venue: c.venue,
            start_date: None,
            end_date: None,
            min_ratio: c.min_ratio,
            excused_counts: c.excused_counts,
            planned_trainees: c.planned_trainees,
            programme: None,
        }
    }
}

/// A session to add: a day (YYYY-MM-DD), optionally half a day.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct NewSession {
    pub date: String,
    #[uniffi(default = None)]
    pub half_day: Option<HalfDay>,
    #[uniffi(default = None)]
    pub periods: Option<u16>,
    #[uniffi(default = None)]
    pub topic: Option<String>,
}

impl From<NewSession> for dev::NewSession {
    fn from(s: NewSession) -> Self {
        dev::NewSession {
            date: s.date,
            half_day: s.half_day.map(Into::into),
            periods: s.periods,
            topic: s.topic,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct CreatedSession {
    pub id: String,
    pub date: String,
}

impl From<dev::CreatedSession> for CreatedSession {
    fn from(s: dev::CreatedSession) -> Self {
        CreatedSession { id: s.id, date: s.date }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct CreatedCourse {
    pub id: String,
    pub sessions: Vec<CreatedSession>,
}

impl From<dev::CreatedCourse> for CreatedCourse {
    fn from(c: dev::CreatedCourse) -> Self {
        CreatedCourse {
            id: c.id,
            sessions: c.sessions.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct CourseSummary {
    pub id: String,
    pub unit: String,
    pub title: String,
    pub sessions: u32,
    pub trainees: u32,
}

impl From<dev::CourseSummary> for CourseSummary {
    fn from(c: dev::CourseSummary) -> Self {
        CourseSummary {
            id: c.id,
            unit: c.unit,
            title: c.title,
            sessions: c.sessions,
            trainees: c.trainees,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SessionView {
    pub id: String,
    pub date: String,
    pub half_day: Option<HalfDay>,
    pub periods: Option<u16>,
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct TraineeView {
    pub id: String,
    /// None when the trainee's roster is not on this device.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct MarkView {
    pub session_id: String,
    pub cadre_id: String,
    pub status: MarkStatus,
    pub note: Option<String>,
}

/// A mark recorded differently by two devices, waiting for a person to decide.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Conflict {
    pub course_id: String,
    pub session_id: String,
    pub cadre_id: String,
    /// Every concurrent status, the one shown for now first.
    pub values: Vec<MarkStatus>,
}

impl From<dev::ConflictEntry> for Conflict {
    fn from(c: dev::ConflictEntry) -> Self {
        Conflict {
            course_id: c.course,
            session_id: c.session,
            cadre_id: c.cadre,
            values: c.values.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Completion {
    pub cadre_id: String,
    pub attended: u32,
    pub sessions: u32,
    pub ratio: f64,
    pub attendance_ok: bool,
    /// Every evaluation the course holds is recorded for this trainee and passed.
    pub evaluations_ok: bool,
    /// Attendance and evaluations: what a certificate needs.
    pub completed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum EvaluationKind {
    Monthly,
    Final,
}

impl From<EvaluationKind> for m::EvalKind {
    fn from(k: EvaluationKind) -> Self {
        match k {
            EvaluationKind::Monthly => m::EvalKind::Monthly,
            EvaluationKind::Final => m::EvalKind::Final,
        }
    }
}

/// An evaluation to record: monthly (with `period` YYYY-MM) or final; either a score
/// out of 10 or passed yes/no.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct NewEvaluation {
    pub kind: EvaluationKind,
    #[uniffi(default = None)]
    pub period: Option<String>,
    #[uniffi(default = None)]
    pub score: Option<f64>,
    #[uniffi(default = None)]
    pub passed: Option<bool>,
}

/// An evaluation as the course view shows it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct EvaluationView {
    pub cadre_id: String,
    /// `m2026-12` or `final`.
    pub slot: String,
    pub kind: EvaluationKind,
    pub period: Option<String>,
    pub score: Option<f64>,
    pub passed: Option<bool>,
    /// Counts as passed (score of at least 5, or yes).
    pub counts_as_passed: bool,
}

/// One bad row of a roster sheet.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RowProblem {
    pub row: u32,
    pub reason: String,
}

/// What a roster import did; when `applied` is false nothing was written.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RosterImport {
    pub rows: u32,
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
    pub skipped: u32,
    pub applied: bool,
    pub errors: Vec<RowProblem>,
}

impl From<sync_core::roster::ImportReport> for RosterImport {
    fn from(r: sync_core::roster::ImportReport) -> Self {
        RosterImport {
            rows: r.rows,
            created: r.created,
            updated: r.updated,
            unchanged: r.unchanged,
            skipped: r.skipped,
            applied: r.applied,
            errors: r
                .errors
                .into_iter()
                .map(|e| RowProblem {
                    row: e.row,
                    reason: e.reason,
                })
                .collect(),
        }
    }
}

/// A course as the device sees it: sessions, trainees, marks, conflicts, completion.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct CourseView {
    pub id: String,
    pub unit: String,
    pub title: String,
    pub min_ratio: f64,
    pub excused_counts: bool,
    pub sessions: Vec<SessionView>,
    pub trainees: Vec<TraineeView>,
    pub marks: Vec<MarkView>,
    pub conflicts: Vec<Conflict>,
    pub evaluations: Vec<EvaluationView>,
    pub completion: Vec<Completion>,
}

impl From<rep::CourseReport> for CourseView {
    fn from(r: rep::CourseReport) -> Self {
        let course_id = r.id.clone();
        CourseView {
            id: r.id,
            unit: r.unit,
            title: r.title,
            min_ratio: r.min_ratio,
            excused_counts: r.excused_counts,
            sessions: r
                .sessions
                .into_iter()
                .map(|s| SessionView {
                    id: s.id,
                    date: s.date,
                    half_day: s.half_day.and_then(|h| h.parse::<m::HalfDay>().ok()).map(Into::into),
                    periods: s.periods,
                    topic: s.topic,
                })
                .collect(),
            trainees: r
                .trainees
                .into_iter()
                .map(|t| TraineeView { id: t.id, name: t.name })
                .collect(),
            marks: r
                .marks
                .into_iter()
                .map(|k| MarkView {
                    session_id: k.session,
                    cadre_id: k.cadre,
                    status: k.status.into(),
                    note: k.note,
                })
                .collect(),
            conflicts: r
                .conflicts
                .into_iter()
                .map(|c| Conflict {
                    course_id: course_id.clone(),
                    session_id: c.session,
                    cadre_id: c.cadre,
                    values: c.values.into_iter().map(Into::into).collect(),
                })
                .collect(),
            evaluations: r
                .evaluations
                .into_iter()
                .map(|e| EvaluationView {
                    cadre_id: e.cadre,
                    kind: if e.kind == "final" {
                        EvaluationKind::Final
                    } else {
                        EvaluationKind::Monthly
                    },
                    slot: e.slot,
                    period: e.period,
                    score: e.score,
                    passed: e.passed,
                    counts_as_passed: e.pass,
                })
                .collect(),
            completion: r
                .completion
                .into_iter()
                .map(|c| Completion {
                    cadre_id: c.cadre,
                    attended: c.attended,
                    sessions: c.sessions,
                    ratio: c.ratio,
                    attendance_ok: c.attendance_ok,
                    evaluations_ok: c.evaluations_ok,
                    completed: c.completed,
                })
                .collect(),
        }
    }
}

/// Changes the server refused, kept on the device with the server's reason.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RefusedBatch {
    pub doc_id: String,
    pub reason: String,
    /// The document keys the server named as faulty (may be empty).
    pub keys: Vec<String>,
    /// When it was refused, Unix seconds, device clock.
    pub at_unix: i64,
}

impl From<dev::RefusedEntry> for RefusedBatch {
    fn from(r: dev::RefusedEntry) -> Self {
        RefusedBatch {
            doc_id: r.doc,
            reason: r.reason,
            keys: r.keys,
            at_unix: r.at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DeviceStatus {
    pub device_id: String,
    /// None until enrolled.
    pub unit: Option<String>,
    pub server_url: Option<String>,
    /// Local changes the server has not acknowledged yet.
    pub pending_changes: u64,
    /// RFC 3339, None before the first complete sync.
    pub last_sync: Option<String>,
    /// Every refusal this device has kept, oldest first.
    pub refused: Vec<RefusedBatch>,
}

impl From<dev::Status> for DeviceStatus {
    fn from(s: dev::Status) -> Self {
        DeviceStatus {
            device_id: s.device_id,
            unit: s.unit,
            server_url: s.server,
            pending_changes: s.pending_changes,
            last_sync: s.last_sync,
            refused: s.refused.into_iter().map(Into::into).collect(),
        }
    }
}

/// What a bundle file carried.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct BundleReport {
    pub documents: u32,
    pub changes: u64,
    pub bytes: u64,
}

/// What one sync moved.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SyncReport {
    pub requests: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub docs_sent: u32,
    pub docs_received: u32,
    pub changes_sent: u64,
    pub seconds: f64,
    /// Documents the server refused in this sync (the data stays on the device).
    pub refused: Vec<RefusedBatch>,
}

impl From<dev::SyncStats> for SyncReport {
    fn from(s: dev::SyncStats) -> Self {
        SyncReport {
            requests: s.requests,
            bytes_up: s.bytes_up,
            bytes_down: s.bytes_down,
            docs_sent: s.docs_sent,
            docs_received: s.docs_received,
            changes_sent: s.changes_sent,
            seconds: s.seconds,
            refused: s.refused.into_iter().map(Into::into).collect(),
        }
    }
}

/// Reported after every exchange of a sync.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SyncProgress {
    /// 0 for the first exchange.
    pub round: u32,
    pub requests: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub docs_sent: u32,
    pub docs_received: u32,
    /// Documents with local changes still to send.
    pub docs_left: u64,
}

impl From<&dev::SyncProgress> for SyncProgress {
    fn from(p: &dev::SyncProgress) -> Self {
        SyncProgress {
            round: u32::try_from(p.round).unwrap_or(u32::MAX),
            requests: p.stats.requests,
            bytes_up: p.stats.bytes_up,
            bytes_down: p.stats.bytes_down,
            docs_sent: p.stats.docs_sent,
            docs_received: p.stats.docs_received,
            docs_left: p.docs_left,
        }
    }
}

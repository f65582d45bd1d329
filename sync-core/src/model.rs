//! The domain: cadres, courses, sessions, enrolments, marks. Plain data with serde;
//! how they are laid out in automerge documents is `docs.rs`'s business.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;
use crate::units::UnitKey;

/// A fresh random id: 10 characters of Crockford base32 (50 bits), short enough to type
/// from a printed sheet, random enough that two offline devices never pick the same one.
pub fn new_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Ids are typed by people and used inside document keys: keep them to a safe alphabet.
pub fn check_id(what: &str, id: &str) -> Result<(), InvalidInput> {
    if id.is_empty() || id.len() > 40 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(InvalidInput::new(format!("`{id}` is not a valid {what} id")));
    }
    Ok(())
}

/// A calendar day `YYYY-MM-DD`, checked.
pub fn check_date(s: &str) -> Result<(), InvalidInput> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .map(|_| ())
        .map_err(|_| InvalidInput::new(format!("`{s}` is not a date of the form YYYY-MM-DD")))
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, InvalidInput> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(InvalidInput::new(format!(
                        concat!("`{}` is not a valid ", stringify!($name), "; expected one of: {}"),
                        s,
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Attendance status of one trainee at one session.
    MarkStatus {
        Present = "present",
        Late = "late",
        LeftEarly = "left_early",
        Excused = "excused",
        Absent = "absent",
    }
);

impl MarkStatus {
    /// Does this status count as attended? Excused counts only when the course says so.
    pub fn attended(self, excused_counts: bool) -> bool {
        match self {
            MarkStatus::Present | MarkStatus::Late | MarkStatus::LeftEarly => true,
            MarkStatus::Excused => excused_counts,
            MarkStatus::Absent => false,
        }
    }
}

string_enum!(Gender { Female = "female", Male = "male", Other = "other" });

string_enum!(
    /// Cán bộ chuyên trách, công chức, người hoạt động không chuyên trách.
    Category {
        CanBo = "can_bo",
        CongChuc = "cong_chuc",
        KhongChuyenTrach = "khong_chuyen_trach",
    }
);

string_enum!(
    /// Political-theory level: sơ cấp, trung cấp, cao cấp, cử nhân.
    TheoryLevel {
        SoCap = "so_cap",
        TrungCap = "trung_cap",
        CaoCap = "cao_cap",
        CuNhan = "cu_nhan",
    }
);

string_enum!(HalfDay { Morning = "morning", Afternoon = "afternoon" });

string_enum!(
    /// A monthly evaluation (of an attachment period) or the course's final one.
    EvalKind {
        Monthly = "monthly",
        Final = "final",
    }
);

/// The lowest passing score out of 10 (Vietnamese grading: 5 is a pass).
pub const PASS_SCORE: f64 = 5.0;

/// One evaluation of one trainee: the value of key `v/{cadre}/{slot}` in the course
/// document. Either a score out of 10 or a pass/fail decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub kind: EvalKind,
    /// The month evaluated (`YYYY-MM`), for a monthly evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    #[serde(rename = "d")]
    pub device: String,
    #[serde(rename = "t")]
    pub at: i64,
}

impl Evaluation {
    pub fn check(&self) -> Result<(), InvalidInput> {
        match (self.score, self.passed) {
            (Some(s), None) => {
                if !(0.0..=10.0).contains(&s) || ((s * 100.0).round() - s * 100.0).abs() > 1e-6 {
                    return Err(InvalidInput::new("a score is 0 to 10 with at most two decimals"));
                }
            }
            (None, Some(_)) => {}
            _ => {
                return Err(InvalidInput::new(
                    "an evaluation has either a score out of 10 or passed yes/no",
                ))
            }
        }
        match (self.kind, &self.period) {
            (EvalKind::Monthly, Some(p)) => {
                let fmt = time::macros::format_description!("[year]-[month]-[day]");
                if p.len() != 7 || time::Date::parse(&format!("{p}-01"), &fmt).is_err() {
                    return Err(InvalidInput::new(format!("`{p}` is not a month of the form YYYY-MM")));
                }
            }
            (EvalKind::Monthly, None) => {
                return Err(InvalidInput::new(
                    "a monthly evaluation needs its month (--period YYYY-MM)",
                ))
            }
            (EvalKind::Final, Some(_)) => return Err(InvalidInput::new("a final evaluation has no period")),
            (EvalKind::Final, None) => {}
        }
        Ok(())
    }

    /// Which evaluation of the course this is: `m2026-12` or `final` (part of the key).
    pub fn slot(&self) -> String {
        match (self.kind, &self.period) {
            (EvalKind::Monthly, Some(p)) => format!("m{p}"),
            (EvalKind::Monthly, None) => "m".into(),
            (EvalKind::Final, _) => "final".into(),
        }
    }

    pub fn is_pass(&self) -> bool {
        match (self.score, self.passed) {
            (Some(s), _) => s + 1e-9 >= PASS_SCORE,
            (None, Some(p)) => p,
            (None, None) => false,
        }
    }
}

string_enum!(
    /// The kind of training programme a course belongs to, as the annual training report
    /// (báo cáo kết quả đào tạo, bồi dưỡng) groups learner-places. A course that names
    /// none is counted as [`Programme::Other`].
    Programme {
        PoliticalTheory = "ly_luan_chinh_tri",
        StateManagement = "quan_ly_nha_nuoc",
        Professional = "chuyen_mon_nghiep_vu",
        PositionSkills = "kien_thuc_ky_nang",
        DefenceSecurity = "quoc_phong_an_ninh",
        LanguageIt = "ngoai_ngu_tin_hoc",
        EthnicLanguage = "tieng_dan_toc",
        Other = "khac",
    }
);

impl Programme {
    /// The Vietnamese name used in reports.
    pub fn label_vi(self) -> &'static str {
        match self {
            Programme::PoliticalTheory => "Lý luận chính trị",
            Programme::StateManagement => "Quản lý nhà nước",
            Programme::Professional => "Chuyên môn, nghiệp vụ",
            Programme::PositionSkills => "Kiến thức, kỹ năng theo vị trí việc làm",
            Programme::DefenceSecurity => "Quốc phòng, an ninh",
            Programme::LanguageIt => "Ngoại ngữ, tin học",
            Programme::EthnicLanguage => "Tiếng dân tộc thiểu số",
            Programme::Other => "Khác",
        }
    }
}

/// A cadre or civil servant on a commune roster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cadre {
    pub name: String,
    pub gender: Gender,
    pub birth_year: u16,
    /// Two-digit code of the ethnic group (01 Kinh ... 54 Rơ-măm). Sensitive: never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethnicity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theory_level: Option<TheoryLevel>,
    /// State-management training (Quản lý nhà nước), as the commune writes it
    /// ("Chuyên viên", "Chuyên viên chính", ...).
    #[serde(rename = "qlnn", default, skip_serializing_if = "Option::is_none")]
    pub state_management: Option<String>,
}

impl Cadre {
    pub fn check(&self) -> Result<(), InvalidInput> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 120 {
            return Err(InvalidInput::new("a cadre's name must have 1 to 120 characters"));
        }
        if !(1930..=2015).contains(&self.birth_year) {
            return Err(InvalidInput::new(format!(
                "birth year {} is outside 1930-2015",
                self.birth_year
            )));
        }
        for (what, text) in [
            ("position", &self.position),
            ("qualification", &self.qualification),
            ("state management", &self.state_management),
        ] {
            if text.as_ref().is_some_and(|t| t.chars().count() > 200) {
                return Err(InvalidInput::new(format!(
                    "a cadre's {what} has at most 200 characters"
                )));
            }
        }
        if let Some(code) = &self.ethnicity {
            if !crate::units::ethnic_groups().iter().any(|(c, _)| c == code) {
                return Err(InvalidInput::new(format!(
                    "ethnicity `{code}` is not one of the 54 group codes 01-54"
                )));
            }
        }
        Ok(())
    }
}

/// A course: what the course document's `meta` key holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CourseMeta {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organiser: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    /// Share of sessions a trainee must attend to complete (0.8 unless set).
    pub min_ratio: f64,
    /// Whether an excused absence counts as attended.
    pub excused_counts: bool,
    /// Planned number of trainees; sizes the attendance documents (see `docs::sessions_per_part`).
    pub planned_trainees: u32,
    /// The programme type, for the annual report. Absent in documents written before it
    /// existed; an unknown value fails to parse, so both sides refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programme: Option<Programme>,
}

impl CourseMeta {
    pub fn check(&self) -> Result<(), InvalidInput> {
        let n = self.title.trim().chars().count();
        if n == 0 || n > 300 {
            return Err(InvalidInput::new("a course title must have 1 to 300 characters"));
        }
        if !(self.min_ratio > 0.0 && self.min_ratio <= 1.0) {
            return Err(InvalidInput::new("the minimum attendance ratio must be in (0, 1]"));
        }
        for d in [&self.start_date, &self.end_date].into_iter().flatten() {
            check_date(d)?;
        }
        if !(1..=5000).contains(&self.planned_trainees) {
            return Err(InvalidInput::new("planned trainees must be 1 to 5000"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_day: Option<HalfDay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periods: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Which attendance document of the course holds this session's marks.
    pub part: u32,
}

impl Session {
    pub fn check(&self) -> Result<(), InvalidInput> {
        check_date(&self.date)?;
        if let Some(p) = self.periods {
            if p == 0 || p > 20 {
                return Err(InvalidInput::new("a session has 1 to 20 periods"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolment {
    /// Unix seconds, device clock.
    pub at: i64,
}

/// One attendance mark: the value of key (session, trainee). Short field names because
/// there are thousands per document and every byte crosses an EDGE link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    #[serde(rename = "s")]
    pub status: MarkStatus,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub periods: Option<u16>,
    /// The device that recorded it.
    #[serde(rename = "d")]
    pub device: String,
    /// When it was recorded, Unix seconds, device clock.
    #[serde(rename = "t")]
    pub at: i64,
}

impl Mark {
    pub fn check(&self) -> Result<(), InvalidInput> {
        if let Some(n) = &self.note {
            if n.chars().count() > 500 {
                return Err(InvalidInput::new("a note has at most 500 characters"));
            }
        }
        if matches!(self.periods, Some(0)) || self.periods.is_some_and(|p| p > 20) {
            return Err(InvalidInput::new("periods attended must be 1 to 20"));
        }
        Ok(())
    }
}

/// A unit-qualified reference used in reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CourseRef {
    pub id: String,
    pub unit: UnitKey,
}

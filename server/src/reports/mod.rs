//! Reports for the province and district organisers, as typed values: the course report
//! (matrix, completion, conflicts), the unit report for a period with its breakdowns,
//! and the annual training report. Each is computed once from the store's projection
//! tables (SQL behind [`Store`]), then serialised as JSON (serde) or laid out as
//! [`Table`]s for the XLSX and CSV exports (`export/`): every format prints the same
//! numbers because they are read from the same value. The web pages call the same
//! functions. A report "as of" a past date is the same computation over a store rebuilt
//! from the change log up to that time ([`asof`]).

pub mod annual;
pub mod asof;
pub mod course;
pub mod export;
pub mod unit;

use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Bad input from the person asking (unknown unit, dates out of order...).
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    NotFound(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("export: {0}")]
    Export(String),
}

pub type ReportResult<T> = Result<T, ReportError>;

/// One cell of a table. Numbers stay numbers in every format.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    Text(String),
    Int(i64),
    /// A decimal number, shown with two decimals (percentages are 0-100, not 0-1).
    Num(f64),
    Empty,
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(s.to_string())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(s)
    }
}
impl From<Option<String>> for Cell {
    fn from(s: Option<String>) -> Self {
        s.map(Cell::Text).unwrap_or(Cell::Empty)
    }
}
impl From<i64> for Cell {
    fn from(n: i64) -> Self {
        Cell::Int(n)
    }
}
impl From<u32> for Cell {
    fn from(n: u32) -> Self {
        Cell::Int(i64::from(n))
    }
}
impl From<u64> for Cell {
    fn from(n: u64) -> Self {
        Cell::Int(n as i64)
    }
}
impl From<f64> for Cell {
    fn from(n: f64) -> Self {
        Cell::Num(n)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    /// Vietnamese header.
    pub header: String,
    /// Width in Excel character units.
    pub width: f64,
}

pub fn col(header: &str, width: f64) -> Column {
    Column {
        header: header.to_string(),
        width,
    }
}

/// One sheet of an XLSX file, one CSV file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    /// ASCII name for file names (`-conflicts.csv`).
    pub id: &'static str,
    /// Vietnamese sheet name (at most 31 characters, Excel's limit).
    pub title: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

/// A report that can be laid out as tables.
pub trait Tabular {
    fn tables(&self) -> Vec<Table>;
}

/// A percentage with two decimals, the form every report shows (0 when `den` is 0).
pub fn pct(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        (num as f64 * 10_000.0 / den as f64).round() / 100.0
    }
}

/// Parses a `YYYY-MM-DD` report date with a clear error.
pub fn parse_date(what: &str, s: &str) -> ReportResult<time::Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .map_err(|_| ReportError::Input(format!("{what} `{s}` is not a date of the form YYYY-MM-DD")))
}

/// Vietnamese names of the stored codes.
pub mod labels {
    use sync_core::model::{Category, Gender, MarkStatus, TheoryLevel};

    pub fn status(s: MarkStatus) -> &'static str {
        match s {
            MarkStatus::Present => "Có mặt",
            MarkStatus::Late => "Đi muộn",
            MarkStatus::LeftEarly => "Về sớm",
            MarkStatus::Excused => "Vắng có phép",
            MarkStatus::Absent => "Vắng",
        }
    }

    pub fn gender(g: Gender) -> &'static str {
        match g {
            Gender::Female => "Nữ",
            Gender::Male => "Nam",
            Gender::Other => "Khác",
        }
    }

    pub fn category(c: Category) -> &'static str {
        match c {
            Category::CanBo => "Cán bộ",
            Category::CongChuc => "Công chức",
            Category::KhongChuyenTrach => "Người hoạt động không chuyên trách",
        }
    }

    pub fn theory_level(t: TheoryLevel) -> &'static str {
        match t {
            TheoryLevel::SoCap => "Sơ cấp",
            TheoryLevel::TrungCap => "Trung cấp",
            TheoryLevel::CaoCap => "Cao cấp",
            TheoryLevel::CuNhan => "Cử nhân",
        }
    }

    pub const UNKNOWN: &str = "Chưa rõ";
}

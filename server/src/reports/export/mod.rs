//! Writing [`Table`]s as files: XLSX (one sheet per table) and CSV (one file per table,
//! UTF-8 with a byte-order mark so Excel reads the Vietnamese). JSON is the report value
//! itself (serde), not a table.

pub mod csv;
pub mod xlsx;

use std::path::{Path, PathBuf};

use super::{ReportError, ReportResult, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xlsx,
    Csv,
    Json,
}

impl std::str::FromStr for Format {
    type Err = ReportError;
    fn from_str(s: &str) -> ReportResult<Format> {
        match s {
            "xlsx" => Ok(Format::Xlsx),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            _ => Err(ReportError::Input(format!(
                "format `{s}` is not one of xlsx, csv, json"
            ))),
        }
    }
}

/// The files a CSV export writes for `tables`: the first table at `out`, every other
/// one beside it as `STEM-ID.csv` (`course.csv`, `course-sessions.csv`, ...).
pub fn csv_paths(out: &Path, tables: &[Table]) -> Vec<PathBuf> {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let dir = out.parent().unwrap_or(Path::new(""));
    tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i == 0 {
                out.to_path_buf()
            } else {
                dir.join(format!("{stem}-{}.csv", t.id))
            }
        })
        .collect()
}

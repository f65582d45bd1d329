//! Completion decisions and certificates. A trainee completes a course when the
//! attendance threshold is met AND every evaluation the course holds is passed
//! (`sync_core::report`, the same rule the devices show). Each one who completes gets
//! a number from the register of the course's unit and the year of issue: sequential,
//! never reused, and kept if issuing is run again (idempotent). A legacy commune's
//! course draws from the register of its 2025 successor, the unit that exists now.

use serde::Serialize;
use sync_core::report::CourseReport;
use sync_core::units::{Level, Scheme, UnitKey, UnitTree};

use crate::store::{CertificateRow, Store};

/// One line of the certificate list.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateLine {
    pub number: String,
    pub cadre: String,
    pub name: Option<String>,
    pub attended: u32,
    pub sessions: u32,
    pub issued_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IssueReport {
    pub course: String,
    pub register: String,
    pub year: i64,
    pub trainees: u32,
    pub completed: u32,
    pub newly_issued: u32,
    pub certificates: Vec<CertificateLine>,
}

fn register_unit(unit: &str) -> String {
    let tree = UnitTree::reference();
    match unit.parse::<UnitKey>() {
        Ok(k) if k.scheme == Scheme::Legacy && tree.get(&k).map(|u| u.level) == Some(Level::Commune) => tree
            .default_successor(&k)
            .map(|s| s.to_string())
            .unwrap_or_else(|| unit.to_string()),
        _ => unit.to_string(),
    }
}

fn report(store: &dyn Store, course: &str) -> Result<CourseReport, String> {
    let rows = store
        .course_rows(course)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("course {course} is not on this server"))?;
    Ok(CourseReport::assemble(rows))
}

fn lines(report: &CourseReport, certs: &[CertificateRow]) -> Vec<CertificateLine> {
    let mut out: Vec<CertificateLine> = certs
        .iter()
        .map(|c| {
            let name = report
                .trainees
                .iter()
                .find(|t| t.id == c.cadre_id)
                .and_then(|t| t.name.clone());
            let done = report.completion.iter().find(|x| x.cadre == c.cadre_id);
            CertificateLine {
                number: c.number.clone(),
                cadre: c.cadre_id.clone(),
                name,
                attended: done.map(|d| d.attended).unwrap_or(0),
                sessions: done.map(|d| d.sessions).unwrap_or(0),
                issued_at: c.issued_at,
            }
        })
        .collect();
    out.sort_by_cached_key(|l| (l.name.as_deref().map(sync_core::text::name_key), l.number.clone()));
    out
}

/// Decides completion for every trainee and issues the missing certificates.
pub fn issue(store: &dyn Store, course: &str, year: i64, now: i64) -> Result<IssueReport, String> {
    let r = report(store, course)?;
    // Numbers go out in the list's (Vietnamese) order, so a class's numbers follow it.
    let mut done: Vec<(&str, Option<&str>)> = r
        .completion
        .iter()
        .filter(|c| c.completed)
        .map(|c| {
            let name = r
                .trainees
                .iter()
                .find(|t| t.id == c.cadre)
                .and_then(|t| t.name.as_deref());
            (c.cadre.as_str(), name)
        })
        .collect();
    done.sort_by_cached_key(|(id, name)| (name.map(sync_core::text::name_key), id.to_string()));
    let cadres: Vec<String> = done.iter().map(|(id, _)| id.to_string()).collect();
    let register = register_unit(&r.unit);
    let issued = store
        .issue_certificates(course, &register, year, &cadres, now)
        .map_err(|e| e.to_string())?;
    let newly = issued.iter().filter(|(_, new)| *new).count() as u32;
    let all = store.certificates(course).map_err(|e| e.to_string())?;
    Ok(IssueReport {
        course: course.to_string(),
        register,
        year,
        trainees: r.trainees.len() as u32,
        completed: cadres.len() as u32,
        newly_issued: newly,
        certificates: lines(&r, &all),
    })
}

/// The certificates of a course, in Vietnamese name order.
pub fn list(store: &dyn Store, course: &str) -> Result<Vec<CertificateLine>, String> {
    let r = report(store, course)?;
    let certs = store.certificates(course).map_err(|e| e.to_string())?;
    Ok(lines(&r, &certs))
}

const HEADERS: [&str; 6] = [
    "STT",
    "Số chứng chỉ",
    "Họ và tên",
    "Mã học viên",
    "Số buổi dự",
    "Tổng số buổi",
];

fn cells(l: &CertificateLine) -> [String; 5] {
    [
        l.number.clone(),
        l.name.clone().unwrap_or_default(),
        l.cadre.clone(),
        l.attended.to_string(),
        l.sessions.to_string(),
    ]
}

/// The list as CSV (UTF-8 with a byte-order mark for Excel).
pub fn to_csv(lines: &[CertificateLine]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
    let _ = w.write_record(HEADERS);
    for (i, l) in lines.iter().enumerate() {
        let mut rec = vec![(i + 1).to_string()];
        rec.extend(cells(l));
        let _ = w.write_record(&rec);
    }
    w.into_inner().unwrap_or_default()
}

/// The list as an XLSX workbook.
pub fn to_xlsx(lines: &[CertificateLine]) -> Result<Vec<u8>, String> {
    use rust_xlsxwriter::{Format, Workbook};
    let fail = |e: rust_xlsxwriter::XlsxError| format!("cannot write the workbook: {e}");
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let sheet = book.add_worksheet();
    sheet.set_name("Chứng chỉ").map_err(fail)?;
    for (i, h) in HEADERS.iter().enumerate() {
        sheet.write_string_with_format(0, i as u16, *h, &bold).map_err(fail)?;
    }
    for (i, l) in lines.iter().enumerate() {
        let row = i as u32 + 1;
        sheet.write_number(row, 0, f64::from(row)).map_err(fail)?;
        let [number, name, cadre, _, _] = cells(l);
        sheet.write_string(row, 1, number).map_err(fail)?;
        sheet.write_string(row, 2, name).map_err(fail)?;
        sheet.write_string(row, 3, cadre).map_err(fail)?;
        sheet.write_number(row, 4, f64::from(l.attended)).map_err(fail)?;
        sheet.write_number(row, 5, f64::from(l.sessions)).map_err(fail)?;
    }
    for (col, w) in [(0u16, 5.0), (1, 18.0), (2, 28.0), (3, 14.0), (4, 10.0), (5, 12.0)] {
        sheet.set_column_width(col, w).map_err(fail)?;
    }
    book.save_to_buffer().map_err(fail)
}

//! XLSX with rust_xlsxwriter: one sheet per table, Vietnamese headers in a bold header
//! row frozen in place, column widths, numbers stored as numbers (decimals shown with
//! two places).

use rust_xlsxwriter::{Format, Workbook, XlsxError};

use super::super::{Cell, ReportError, ReportResult, Table};

pub fn write(tables: &[Table]) -> ReportResult<Vec<u8>> {
    write_inner(tables).map_err(|e| ReportError::Export(e.to_string()))
}

/// Excel's rules for sheet names: at most 31 characters, none of `[]:*?/\`, unique.
pub fn sheet_name(title: &str, taken: &[String]) -> String {
    let clean: String = title
        .chars()
        .map(|c| if "[]:*?/\\".contains(c) { '-' } else { c })
        .take(31)
        .collect();
    let clean = if clean.trim().is_empty() {
        "Sheet".to_string()
    } else {
        clean
    };
    let mut name = clean.clone();
    let mut n = 2;
    while taken.iter().any(|t| t.to_lowercase() == name.to_lowercase()) {
        let suffix = format!(" ({n})");
        name = format!(
            "{}{suffix}",
            clean.chars().take(31 - suffix.chars().count()).collect::<String>()
        );
        n += 1;
    }
    name
}

fn write_inner(tables: &[Table]) -> Result<Vec<u8>, XlsxError> {
    let mut wb = Workbook::new();
    let bold = Format::new().set_bold().set_text_wrap();
    let decimal = Format::new().set_num_format("0.00");
    let mut taken = Vec::new();
    for t in tables {
        let name = sheet_name(&t.title, &taken);
        let ws = wb.add_worksheet();
        ws.set_name(&name)?;
        taken.push(name);
        for (c, column) in t.columns.iter().enumerate() {
            let c = c as u16;
            ws.write_string_with_format(0, c, &column.header, &bold)?;
            ws.set_column_width(c, column.width)?;
        }
        ws.set_freeze_panes(1, 0)?;
        for (r, row) in t.rows.iter().enumerate() {
            let r = r as u32 + 1;
            for (c, cell) in row.iter().enumerate() {
                let c = c as u16;
                match cell {
                    Cell::Text(s) => {
                        ws.write_string(r, c, s)?;
                    }
                    Cell::Int(n) => {
                        ws.write_number(r, c, *n as f64)?;
                    }
                    Cell::Num(x) => {
                        ws.write_number_with_format(r, c, *x, &decimal)?;
                    }
                    Cell::Empty => {}
                }
            }
        }
    }
    wb.save_to_buffer()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_names_follow_excels_rules() {
        let long = "Báo cáo tổng hợp kết quả bồi dưỡng cán bộ";
        let a = sheet_name(long, &[]);
        assert_eq!(a.chars().count(), 31);
        let b = sheet_name(long, std::slice::from_ref(&a));
        assert_ne!(a, b);
        assert!(b.ends_with(" (2)") && b.chars().count() <= 31, "{b}");
        assert_eq!(sheet_name("Năm 2026/2027: [x]", &[]), "Năm 2026-2027- -x-");
    }
}

//! CSV: UTF-8 with a byte-order mark (without it Excel reads the file as the local code
//! page and the Vietnamese comes out garbled), a header row, numbers unquoted with a
//! decimal point.

use super::super::{Cell, ReportError, ReportResult, Table};

pub const BOM: &[u8] = b"\xEF\xBB\xBF";

pub fn write(table: &Table) -> ReportResult<Vec<u8>> {
    let mut out = BOM.to_vec();
    {
        let mut w = ::csv::WriterBuilder::new()
            .terminator(::csv::Terminator::CRLF)
            .from_writer(&mut out);
        let err = |e: ::csv::Error| ReportError::Export(e.to_string());
        w.write_record(table.columns.iter().map(|c| c.header.as_str()))
            .map_err(err)?;
        for row in &table.rows {
            w.write_record(row.iter().map(cell_text)).map_err(err)?;
        }
        w.flush().map_err(|e| ReportError::Export(e.to_string()))?;
    }
    Ok(out)
}

fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Text(s) => s.clone(),
        Cell::Int(n) => n.to_string(),
        Cell::Num(x) => x.to_string(),
        Cell::Empty => String::new(),
    }
}

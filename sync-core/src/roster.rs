//! Commune rosters as offices keep them: an Excel (XLSX, XLS) or CSV sheet in the
//! documented template (README.md, "Roster template"), read from bytes so the device
//! and the server parse and match exactly alike; the same template written back.
//!
//! Headers and values are matched regardless of case, spacing and accents ("Ho va
//! ten", "HỌ VÀ TÊN"); an ethnic group by its two-digit code or its name. Every bad row
//! is reported with its row number and reason. No value from a row (a name, a birth
//! year, an ethnic group) is echoed in a reason: reasons may reach logs.
//!
//! **A cadre's identity is (unit, folded name, birth year)**: the name with case,
//! accents and spacing removed. Importing a file matches its rows against the roster by
//! that identity (a match updates, never duplicates), and a new cadre's id is derived
//! from it ([`stable_id`]), so two devices that import the same file offline create the
//! same keys. Two people of one commune with the same name and birth year cannot be
//! told apart by a sheet: such a row is reported, and the second one is added by hand.

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::InvalidInput;
use crate::model::{Cadre, Category, Gender, TheoryLevel};
use crate::text::{fold, fold_compact, name_key, normalize_name};
use crate::units::{ethnic_groups, UnitKey};

/// The template's headers, in order. Only the first three are required.
pub const TEMPLATE_HEADERS: [&str; 9] = [
    "Họ và tên",
    "Giới tính",
    "Năm sinh",
    "Dân tộc",
    "Chức danh",
    "Loại",
    "Trình độ chuyên môn",
    "Lý luận chính trị",
    "Quản lý nhà nước",
];

/// The largest sheet accepted: a province's roster is tens of thousands of rows.
pub const MAX_ROWS: usize = 50_000;
/// The largest file accepted.
pub const MAX_FILE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Name,
    Gender,
    BirthYear,
    Ethnicity,
    Position,
    Category,
    Qualification,
    Theory,
    StateManagement,
    /// Số thứ tự: a row number column, ignored.
    Ordinal,
}

fn column_of(header: &str) -> Option<Column> {
    let h = fold_compact(header);
    let c = match h.as_str() {
        "hovaten" | "hoten" | "hotendaydu" => Column::Name,
        "gioitinh" | "gioi" | "phai" => Column::Gender,
        "namsinh" | "ngaysinh" | "ngaythangnamsinh" => Column::BirthYear,
        "dantoc" => Column::Ethnicity,
        "chucdanh" | "chucvu" | "chucvuchucdanh" => Column::Position,
        "loai" | "phanloai" | "doituong" => Column::Category,
        "trinhdochuyenmon" | "chuyenmon" | "trinhdo" => Column::Qualification,
        "lyluanchinhtri" | "llct" | "trinhdolyluanchinhtri" => Column::Theory,
        "quanlynhanuoc" | "qlnn" | "trinhdoquanlynhanuoc" => Column::StateManagement,
        "stt" | "sothutu" | "tt" => Column::Ordinal,
        _ => return None,
    };
    Some(c)
}

const COLUMN_HEADER: [(Column, &str); 9] = [
    (Column::Name, TEMPLATE_HEADERS[0]),
    (Column::Gender, TEMPLATE_HEADERS[1]),
    (Column::BirthYear, TEMPLATE_HEADERS[2]),
    (Column::Ethnicity, TEMPLATE_HEADERS[3]),
    (Column::Position, TEMPLATE_HEADERS[4]),
    (Column::Category, TEMPLATE_HEADERS[5]),
    (Column::Qualification, TEMPLATE_HEADERS[6]),
    (Column::Theory, TEMPLATE_HEADERS[7]),
    (Column::StateManagement, TEMPLATE_HEADERS[8]),
];

fn header_of(c: Column) -> &'static str {
    COLUMN_HEADER
        .iter()
        .find(|(k, _)| *k == c)
        .map(|(_, h)| *h)
        .unwrap_or("STT")
}

/// One cell as read from a sheet.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(String),
    Number(f64),
    /// An Excel date, as its serial day number.
    Date(f64),
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Text(s) => s.trim().to_string(),
            Cell::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            Cell::Number(n) => n.to_string(),
            Cell::Date(d) => serial_year(*d).map(|y| y.to_string()).unwrap_or_default(),
        }
    }
    fn is_blank(&self) -> bool {
        matches!(self, Cell::Text(s) if s.trim().is_empty())
    }
}

/// The year of an Excel serial date (day 1 is 1900-01-01, with Excel's 1900 leap bug,
/// hence counting from 1899-12-30).
fn serial_year(serial: f64) -> Option<i32> {
    if !(1.0..2_958_466.0).contains(&serial) {
        return None;
    }
    let base = time::macros::date!(1899 - 12 - 30);
    base.checked_add(time::Duration::days(serial.floor() as i64))
        .map(|d| d.year())
}

/// A bad row: its number in the sheet (as the spreadsheet shows it) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub row: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRow {
    pub row: u32,
    pub cadre: Cadre,
}

/// A sheet read and checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedRoster {
    pub rows: Vec<ParsedRow>,
    pub errors: Vec<RowError>,
    /// Headers that are not in the template (their columns are not imported).
    pub ignored_columns: Vec<String>,
}

/// Reads a roster from the bytes of an XLSX, XLS or CSV file (told apart by content:
/// Excel files are zip or OLE containers). Fails as a whole only when the file cannot
/// be read or lacks a required column; row problems are in [`ParsedRoster::errors`].
pub fn parse(bytes: &[u8]) -> Result<ParsedRoster, InvalidInput> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(InvalidInput::new(format!(
            "the file is larger than {} MB",
            MAX_FILE_BYTES / (1024 * 1024)
        )));
    }
    let grid = if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
        excel_grid(bytes)?
    } else {
        csv_grid(bytes)?
    };
    parse_grid(grid)
}

fn excel_grid(bytes: &[u8]) -> Result<Vec<(u32, Vec<Cell>)>, InvalidInput> {
    use calamine::{Data, Reader};
    let mut book = calamine::open_workbook_auto_from_rs(Cursor::new(bytes))
        .map_err(|e| InvalidInput::new(format!("the file is not a readable Excel workbook: {e}")))?;
    let range = book
        .worksheet_range_at(0)
        .ok_or_else(|| InvalidInput::new("the workbook has no sheet"))?
        .map_err(|e| InvalidInput::new(format!("the first sheet cannot be read: {e}")))?;
    let first_row = range.start().map(|(r, _)| r).unwrap_or(0);
    let first_col = range.start().map(|(_, c)| c).unwrap_or(0) as usize;
    let mut out = Vec::new();
    for (i, row) in range.rows().enumerate() {
        if out.len() > MAX_ROWS + 20 {
            return Err(InvalidInput::new(format!("the sheet has more than {MAX_ROWS} rows")));
        }
        let mut cells = vec![Cell::Text(String::new()); first_col];
        for d in row {
            cells.push(match d {
                Data::Int(n) => Cell::Number(*n as f64),
                Data::Float(f) => Cell::Number(*f),
                Data::String(s) => Cell::Text(s.clone()),
                Data::Bool(b) => Cell::Text(b.to_string()),
                Data::DateTime(dt) => Cell::Date(dt.as_f64()),
                Data::DateTimeIso(s) | Data::DurationIso(s) => Cell::Text(s.clone()),
                Data::Error(_) | Data::Empty => Cell::Text(String::new()),
            });
        }
        out.push((first_row + i as u32 + 1, cells));
    }
    Ok(out)
}

fn csv_grid(bytes: &[u8]) -> Result<Vec<(u32, Vec<Cell>)>, InvalidInput> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        InvalidInput::new("the file is neither an Excel workbook nor a UTF-8 CSV file (in Excel: Save As, CSV UTF-8)")
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Excel writes `;` where the decimal separator is a comma; take whichever the
    // first line uses most.
    let first = text.lines().next().unwrap_or("");
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| first.bytes().filter(|b| b == d).count())
        .unwrap_or(b',');
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut out = Vec::new();
    // The reader reports where a record's read began, blank lines before it included:
    // count the lines up to its first byte ourselves, so a row number is the one a
    // spreadsheet shows.
    let bytes = text.as_bytes();
    let (mut at, mut line) = (0usize, 1u32);
    for rec in reader.records() {
        if out.len() > MAX_ROWS + 20 {
            return Err(InvalidInput::new(format!("the file has more than {MAX_ROWS} rows")));
        }
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            InvalidInput::new(format!("line {line} of the CSV file cannot be read"))
        })?;
        let mut start = rec.position().map(|p| p.byte() as usize).unwrap_or(at).min(bytes.len());
        while start < bytes.len() && (bytes[start] == b'\n' || bytes[start] == b'\r') {
            start += 1;
        }
        line += bytes[at.min(start)..start].iter().filter(|b| **b == b'\n').count() as u32;
        at = start;
        out.push((line, rec.iter().map(|s| Cell::Text(s.to_string())).collect()));
    }
    Ok(out)
}

fn parse_grid(grid: Vec<(u32, Vec<Cell>)>) -> Result<ParsedRoster, InvalidInput> {
    // The header row is the first row with a name column among the first 20: offices
    // often put a title or the commune's name above it.
    let (header_at, columns) = grid
        .iter()
        .take(20)
        .enumerate()
        .find_map(|(i, (_, cells))| {
            let cols: Vec<Option<Column>> = cells.iter().map(|c| column_of(&c.text())).collect();
            cols.contains(&Some(Column::Name)).then_some((i, cols))
        })
        .ok_or_else(|| {
            InvalidInput::new(format!(
                "no header row with `{}` in the first 20 rows; the template's headers are: {}",
                TEMPLATE_HEADERS[0],
                TEMPLATE_HEADERS.join(", ")
            ))
        })?;
    for required in [Column::Gender, Column::BirthYear] {
        if !columns.contains(&Some(required)) {
            return Err(InvalidInput::new(format!(
                "the header row has no `{}` column (required: {}, {}, {})",
                header_of(required),
                TEMPLATE_HEADERS[0],
                TEMPLATE_HEADERS[1],
                TEMPLATE_HEADERS[2]
            )));
        }
    }
    let mut out = ParsedRoster::default();
    let header_cells = &grid[header_at].1;
    for (i, col) in columns.iter().enumerate() {
        let text = header_cells[i].text();
        if col.is_none() && !text.is_empty() {
            out.ignored_columns.push(text);
        }
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for (row, cells) in grid.into_iter().skip(header_at + 1) {
        if cells.iter().all(Cell::is_blank) {
            continue;
        }
        if out.rows.len() + out.errors.len() >= MAX_ROWS {
            return Err(InvalidInput::new(format!("the sheet has more than {MAX_ROWS} rows")));
        }
        match parse_row(&columns, &cells) {
            Ok(cadre) => {
                let id = identity(&cadre);
                if let Some(first) = seen.get(&id) {
                    out.errors.push(RowError {
                        row,
                        reason: format!("same name and birth year as row {first}"),
                    });
                } else {
                    seen.insert(id, row);
                    out.rows.push(ParsedRow { row, cadre });
                }
            }
            Err(reasons) => out.errors.push(RowError {
                row,
                reason: reasons.join("; "),
            }),
        }
    }
    Ok(out)
}

fn parse_row(columns: &[Option<Column>], cells: &[Cell]) -> Result<Cadre, Vec<String>> {
    let get = |c: Column| -> Option<&Cell> {
        columns
            .iter()
            .position(|k| *k == Some(c))
            .and_then(|i| cells.get(i))
            .filter(|cell| !cell.is_blank())
    };
    let text = |c: Column| {
        get(c)
            .map(|cell| normalize_name(&cell.text()))
            .filter(|s| !s.is_empty())
    };
    let mut reasons = Vec::new();
    let mut bad = |c: Column, why: &str| reasons.push(format!("{}: {why}", header_of(c)));

    let name = text(Column::Name).unwrap_or_default();
    if name.is_empty() {
        bad(Column::Name, "missing");
    } else if name.chars().count() > 120 {
        bad(Column::Name, "longer than 120 characters");
    }
    let gender = match text(Column::Gender).map(|g| fold_compact(&g)) {
        None => {
            bad(Column::Gender, "missing");
            None
        }
        Some(g) => match g.as_str() {
            "nam" | "male" | "m" => Some(Gender::Male),
            "nu" | "female" | "f" => Some(Gender::Female),
            "khac" | "other" => Some(Gender::Other),
            _ => {
                bad(Column::Gender, "expected Nam, Nữ or Khác");
                None
            }
        },
    };
    let birth_year = match get(Column::BirthYear) {
        None => {
            bad(Column::BirthYear, "missing");
            None
        }
        Some(cell) => match birth_year_of(cell) {
            Some(y) if (1930..=2015).contains(&y) => Some(y as u16),
            Some(_) => {
                bad(Column::BirthYear, "outside 1930-2015");
                None
            }
            None => {
                bad(Column::BirthYear, "expected a year (1985) or a date (15/03/1985)");
                None
            }
        },
    };
    let ethnicity = match text(Column::Ethnicity) {
        None => None,
        Some(e) => match ethnic_code(&e) {
            Some(code) => Some(code),
            None => {
                bad(
                    Column::Ethnicity,
                    "not one of the 54 groups (give the code 01-54 or the name)",
                );
                None
            }
        },
    };
    let category = match text(Column::Category) {
        None => None,
        Some(c) => match category_of(&c) {
            Some(c) => Some(c),
            None => {
                bad(Column::Category, "expected Cán bộ, Công chức or Không chuyên trách");
                None
            }
        },
    };
    let theory_level = match text(Column::Theory) {
        None => None,
        Some(t) => match theory_of(&t) {
            Ok(t) => t,
            Err(()) => {
                bad(Column::Theory, "expected Sơ cấp, Trung cấp, Cao cấp or Cử nhân");
                None
            }
        },
    };
    let position = text(Column::Position);
    let qualification = text(Column::Qualification);
    let state_management = text(Column::StateManagement);
    for (c, v) in [
        (Column::Position, &position),
        (Column::Qualification, &qualification),
        (Column::StateManagement, &state_management),
    ] {
        if v.as_ref().is_some_and(|v| v.chars().count() > 200) {
            bad(c, "longer than 200 characters");
        }
    }
    match (reasons.is_empty(), gender, birth_year) {
        (true, Some(gender), Some(birth_year)) => Ok(Cadre {
            name,
            gender,
            birth_year,
            ethnicity,
            category,
            position,
            qualification,
            theory_level,
            state_management,
        }),
        _ => Err(reasons),
    }
}

/// A year from a year cell, an Excel date or a date written as text.
fn birth_year_of(cell: &Cell) -> Option<i32> {
    match cell {
        Cell::Date(d) => serial_year(*d),
        Cell::Number(n) if n.fract() == 0.0 && (1000.0..=9999.0).contains(n) => Some(*n as i32),
        // A date cell that lost its format is its serial number (1930 is about 10958).
        Cell::Number(n) if *n > 9999.0 => serial_year(*n),
        Cell::Number(_) => None,
        Cell::Text(t) => {
            let t = t.trim();
            // 1985, 15/03/1985, 15-3-1985, 1985-03-15, 15.03.1985: the one 4-digit group.
            let groups: Vec<&str> = t
                .split(|c: char| !c.is_ascii_digit())
                .filter(|g| !g.is_empty())
                .collect();
            let separators_ok = t.chars().all(|c| c.is_ascii_digit() || "/-. ".contains(c));
            let years: Vec<&&str> = groups.iter().filter(|g| g.len() == 4).collect();
            if !separators_ok || years.len() != 1 || groups.len() > 3 || groups.iter().any(|g| g.len() > 4) {
                return None;
            }
            years[0].parse().ok()
        }
    }
}

/// Other names offices write for some groups (folded, compact).
const ETHNIC_ALIASES: &[(&str, &str)] = &[
    ("mong", "08"),
    ("meo", "08"),
    ("khmu", "29"),
    ("khome", "05"),
    ("muong", "06"),
];

/// The two-digit code of an ethnic group given by code ("3", "03") or name ("Thái",
/// "thai", "H'Mông", "Khơ Mú").
pub fn ethnic_code(value: &str) -> Option<String> {
    let v = value.trim();
    if !v.is_empty() && v.len() <= 2 && v.bytes().all(|b| b.is_ascii_digit()) {
        let n: u32 = v.parse().ok()?;
        let code = format!("{n:02}");
        return ethnic_groups().iter().any(|(c, _)| *c == code).then_some(code);
    }
    let f = fold_compact(v);
    let f = f.strip_prefix("dantoc").unwrap_or(&f);
    if let Some((code, _)) = ethnic_groups().iter().find(|(_, name)| fold_compact(name) == f) {
        return Some(code.clone());
    }
    ETHNIC_ALIASES
        .iter()
        .find(|(alias, _)| *alias == f)
        .map(|(_, code)| code.to_string())
}

/// The name of an ethnic group code.
pub fn ethnic_name(code: &str) -> Option<&'static str> {
    ethnic_groups().iter().find(|(c, _)| c == code).map(|(_, n)| n.as_str())
}

fn category_of(value: &str) -> Option<Category> {
    let f = fold_compact(value);
    if f.contains("khongchuyentrach") || f == "kct" {
        return Some(Category::KhongChuyenTrach);
    }
    match f.as_str() {
        "canbo" | "canbochuyentrach" | "cb" => Some(Category::CanBo),
        "congchuc" | "cc" => Some(Category::CongChuc),
        _ => None,
    }
}

/// `Ok(None)` for "none yet" ("Chưa", "Không").
fn theory_of(value: &str) -> Result<Option<TheoryLevel>, ()> {
    let f = fold_compact(value);
    for (needle, level) in [
        ("cunhan", TheoryLevel::CuNhan),
        ("caocap", TheoryLevel::CaoCap),
        ("trungcap", TheoryLevel::TrungCap),
        ("socap", TheoryLevel::SoCap),
    ] {
        if f.contains(needle) {
            return Ok(Some(level));
        }
    }
    match f.as_str() {
        "khong" | "chua" | "chuaquadaotao" | "chuacodaotao" => Ok(None),
        _ => Err(()),
    }
}

pub fn gender_label(g: Gender) -> &'static str {
    match g {
        Gender::Male => "Nam",
        Gender::Female => "Nữ",
        Gender::Other => "Khác",
    }
}

pub fn category_label(c: Category) -> &'static str {
    match c {
        Category::CanBo => "Cán bộ",
        Category::CongChuc => "Công chức",
        Category::KhongChuyenTrach => "Người hoạt động không chuyên trách",
    }
}

pub fn theory_label(t: TheoryLevel) -> &'static str {
    match t {
        TheoryLevel::SoCap => "Sơ cấp",
        TheoryLevel::TrungCap => "Trung cấp",
        TheoryLevel::CaoCap => "Cao cấp",
        TheoryLevel::CuNhan => "Cử nhân",
    }
}

/// The identity a roster row is matched by: folded name and birth year (the unit is
/// the roster's).
pub fn identity(c: &Cadre) -> String {
    format!("{}|{}", fold(&c.name), c.birth_year)
}

/// The id of a cadre created by an import: derived from the unit and the identity, in
/// the alphabet and length of [`crate::model::new_id`], so the same row imported on
/// two devices gets the same key.
pub fn stable_id(unit: &UnitKey, identity: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let digest = Sha256::digest(format!("diemdanh-cadre-v1|{unit}|{identity}").as_bytes());
    let mut bits: u64 = 0;
    for b in &digest[..8] {
        bits = (bits << 8) | u64::from(*b);
    }
    (0..10)
        .map(|i| ALPHABET[((bits >> (64 - 5 * (i + 1))) & 31) as usize] as char)
        .collect()
}

/// What an import does to one roster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportPlan {
    /// The values to write, by cadre id.
    pub puts: Vec<(String, Cadre)>,
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
}

/// Matches `rows` against the roster's current cadres by [`identity`]: a match is
/// updated where the file says something new (an empty cell keeps what the roster
/// has), anything else is created with its [`stable_id`].
pub fn plan(unit: &UnitKey, existing: &BTreeMap<String, Cadre>, rows: &[ParsedRow]) -> ImportPlan {
    let mut by_identity: BTreeMap<String, (&String, &Cadre)> = BTreeMap::new();
    for (id, c) in existing {
        by_identity.entry(identity(c)).or_insert((id, c));
    }
    let mut out = ImportPlan::default();
    for row in rows {
        let ident = identity(&row.cadre);
        match by_identity.get(&ident) {
            Some((id, old)) => {
                let new = &row.cadre;
                let merged = Cadre {
                    name: new.name.clone(),
                    gender: new.gender,
                    birth_year: new.birth_year,
                    ethnicity: new.ethnicity.clone().or_else(|| old.ethnicity.clone()),
                    category: new.category.or(old.category),
                    position: new.position.clone().or_else(|| old.position.clone()),
                    qualification: new.qualification.clone().or_else(|| old.qualification.clone()),
                    theory_level: new.theory_level.or(old.theory_level),
                    state_management: new.state_management.clone().or_else(|| old.state_management.clone()),
                };
                if &merged == *old {
                    out.unchanged += 1;
                } else {
                    out.updated += 1;
                    out.puts.push(((*id).clone(), merged));
                }
            }
            None => {
                out.created += 1;
                out.puts.push((stable_id(unit, &ident), row.cadre.clone()));
            }
        }
    }
    out
}

/// What an import reported, on either side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    pub unit: String,
    /// Rows read (good and bad).
    pub rows: u32,
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
    /// Bad rows left out (only with `--skip-invalid`).
    pub skipped: u32,
    pub errors: Vec<RowError>,
    pub ignored_columns: Vec<String>,
    /// False when bad rows stopped the import: then nothing was written.
    pub applied: bool,
}

impl ImportReport {
    pub fn new(unit: &UnitKey, parsed: &ParsedRoster) -> Self {
        ImportReport {
            unit: unit.to_string(),
            rows: (parsed.rows.len() + parsed.errors.len()) as u32,
            errors: parsed.errors.clone(),
            ignored_columns: parsed.ignored_columns.clone(),
            ..Default::default()
        }
    }
}

/// Cadres in the order of a Vietnamese list (given name, then the whole name; id last
/// so equal names keep a stable order).
pub fn sorted(cadres: &BTreeMap<String, Cadre>) -> Vec<(&String, &Cadre)> {
    let mut v: Vec<_> = cadres.iter().collect();
    v.sort_by_cached_key(|(id, c)| (name_key(&c.name), (*id).clone()));
    v
}

fn template_row(c: &Cadre) -> [String; 9] {
    [
        c.name.clone(),
        gender_label(c.gender).to_string(),
        c.birth_year.to_string(),
        c.ethnicity
            .as_deref()
            .and_then(ethnic_name)
            .unwrap_or_default()
            .to_string(),
        c.position.clone().unwrap_or_default(),
        c.category.map(category_label).unwrap_or_default().to_string(),
        c.qualification.clone().unwrap_or_default(),
        c.theory_level.map(theory_label).unwrap_or_default().to_string(),
        c.state_management.clone().unwrap_or_default(),
    ]
}

/// The roster as an XLSX workbook in the import template (STT, then the template's
/// columns), in Vietnamese order: export, edit in Excel, import again.
pub fn export_xlsx(cadres: &BTreeMap<String, Cadre>) -> Result<Vec<u8>, InvalidInput> {
    use rust_xlsxwriter::{Format, Workbook};
    let fail = |e: rust_xlsxwriter::XlsxError| InvalidInput::new(format!("cannot write the workbook: {e}"));
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let sheet = book.add_worksheet();
    sheet.set_name("Danh sách").map_err(fail)?;
    sheet.write_string_with_format(0, 0, "STT", &bold).map_err(fail)?;
    for (i, h) in TEMPLATE_HEADERS.iter().enumerate() {
        sheet
            .write_string_with_format(0, i as u16 + 1, *h, &bold)
            .map_err(fail)?;
    }
    for (col, width) in [
        (0u16, 5.0),
        (1, 28.0),
        (2, 9.0),
        (3, 9.0),
        (4, 10.0),
        (5, 32.0),
        (6, 20.0),
        (7, 20.0),
        (8, 16.0),
        (9, 18.0),
    ] {
        sheet.set_column_width(col, width).map_err(fail)?;
    }
    for (n, (_, c)) in sorted(cadres).into_iter().enumerate() {
        let row = n as u32 + 1;
        sheet.write_number(row, 0, f64::from(row)).map_err(fail)?;
        for (i, v) in template_row(c).iter().enumerate() {
            if i == 2 {
                sheet.write_number(row, 3, f64::from(c.birth_year)).map_err(fail)?;
            } else if !v.is_empty() {
                sheet.write_string(row, i as u16 + 1, v).map_err(fail)?;
            }
        }
    }
    book.save_to_buffer().map_err(fail)
}

/// The same as CSV (UTF-8 with a byte-order mark, which Excel needs to read accents).
pub fn export_csv(cadres: &BTreeMap<String, Cadre>) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
    let mut header = vec!["STT"];
    header.extend(TEMPLATE_HEADERS);
    // Writing records into memory cannot fail.
    let _ = w.write_record(&header);
    for (n, (_, c)) in sorted(cadres).into_iter().enumerate() {
        let mut rec = vec![(n + 1).to_string()];
        rec.extend(template_row(c));
        let _ = w.write_record(&rec);
    }
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> UnitKey {
        "2025:03434".parse().expect("unit")
    }

    const GOOD_CSV: &str = "\
Danh sách cán bộ, công chức xã Nậm Hàng,,,,,,,,,
STT,Họ và tên,Giới tính,Năm sinh,Dân tộc,Chức danh,Loại,Trình độ chuyên môn,Lý luận chính trị,Quản lý nhà nước
1,Lò Thị Hoa,Nữ,1988,Thái,Công chức Văn phòng - Thống kê,Công chức,Đại học,Trung cấp,Chuyên viên
2,Giàng A Páo,nam,15/03/1979,08,Chủ tịch UBND xã,cán bộ,Cao đẳng,cao cấp,
3,  vàng  thị   mỷ ,NU,1995,H'Mông,,Người hoạt động không chuyên trách,,,
";

    #[test]
    fn the_template_parses_with_any_case_spacing_and_accents() {
        let r = parse(GOOD_CSV.as_bytes()).expect("parse");
        assert_eq!(r.errors, vec![]);
        assert_eq!(r.rows.len(), 3);
        let hoa = &r.rows[0];
        assert_eq!(hoa.row, 3, "spreadsheet row numbers, after the title row");
        assert_eq!(hoa.cadre.name, "Lò Thị Hoa");
        assert_eq!(hoa.cadre.gender, Gender::Female);
        assert_eq!(hoa.cadre.ethnicity.as_deref(), Some("03"));
        assert_eq!(hoa.cadre.category, Some(Category::CongChuc));
        assert_eq!(hoa.cadre.theory_level, Some(TheoryLevel::TrungCap));
        assert_eq!(hoa.cadre.state_management.as_deref(), Some("Chuyên viên"));
        let pao = &r.rows[1].cadre;
        assert_eq!((pao.birth_year, pao.ethnicity.as_deref()), (1979, Some("08")));
        assert_eq!(pao.theory_level, Some(TheoryLevel::CaoCap));
        let my = &r.rows[2].cadre;
        assert_eq!(my.name, "vàng thị mỷ");
        assert_eq!(my.ethnicity.as_deref(), Some("08"));
        assert_eq!(my.category, Some(Category::KhongChuyenTrach));

        let unaccented = "HO VA TEN;gioi tinh;Nam Sinh;dan toc\nLo Thi Hoa;nu;1988;thai\n";
        let r = parse(unaccented.as_bytes()).expect("parse");
        assert_eq!(r.errors, vec![]);
        assert_eq!(r.rows[0].cadre.ethnicity.as_deref(), Some("03"));
        assert_eq!(r.rows[0].row, 2);
    }

    #[test]
    fn every_bad_row_is_reported_with_its_number_and_reason_and_no_personal_data() {
        let csv = "Họ và tên,Giới tính,Năm sinh,Dân tộc,Loại,Lý luận chính trị\n\
                   Lò Thị Hoa,Nữ,1988,Thái,,\n\
                   ,Nam,1980,,,\n\
                   Vàng A Dình,X,1880,Xyz,sếp,tiến sĩ\n\
                   \n\
                   Lò Thị Hoa,Nữ,1988,,,\n\
                   Tòng Văn Minh,Nam,năm ngoái,99,,\n";
        let r = parse(csv.as_bytes()).expect("parse");
        assert_eq!(r.rows.len(), 1);
        let rows: Vec<u32> = r.errors.iter().map(|e| e.row).collect();
        assert_eq!(rows, vec![3, 4, 6, 7]);
        assert!(r.errors[0].reason.contains("Họ và tên: missing"));
        let four = &r.errors[1].reason;
        for why in ["Giới tính", "Năm sinh: outside", "Dân tộc", "Loại", "Lý luận chính trị"] {
            assert!(four.contains(why), "{four}");
        }
        assert_eq!(r.errors[2].reason, "same name and birth year as row 2");
        assert!(r.errors[3].reason.contains("Năm sinh: expected a year"));
        assert!(r.errors[3].reason.contains("Dân tộc"));
        for e in &r.errors {
            for secret in ["Dình", "Xyz", "1880", "Minh", "99"] {
                assert!(!e.reason.contains(secret), "{}", e.reason);
            }
        }
    }

    #[test]
    fn a_file_without_the_required_columns_or_of_another_kind_is_refused() {
        let e = parse("Tên,Tuổi\nHoa,30\n".as_bytes()).expect_err("no header");
        assert!(e.0.contains("Họ và tên"), "{e}");
        let e = parse("Họ và tên,Năm sinh\nHoa,1990\n".as_bytes()).expect_err("no gender");
        assert!(e.0.contains("Giới tính"), "{e}");
        let e = parse(&[0xff, 0xfe, 0x00, 0x41]).expect_err("utf-16");
        assert!(e.0.contains("UTF-8"), "{e}");
        let e = parse(b"PK\x03\x04garbage").expect_err("broken zip");
        assert!(e.0.contains("Excel"), "{e}");
    }

    #[test]
    fn ethnic_groups_match_by_code_or_name() {
        for (v, code) in [
            ("3", "03"),
            ("03", "03"),
            ("Thái", "03"),
            ("THAI", "03"),
            ("HMông", "08"),
            ("Mông", "08"),
            ("Hà Nhì", "35"),
            ("ha nhi", "35"),
            ("Khơ-mú", "29"),
            ("Khơ Mú", "29"),
            ("La Hủ", "41"),
            ("Cống", "48"),
            ("Si La", "50"),
            ("Dao", "09"),
            ("Kinh", "01"),
            ("Dân tộc Thái", "03"),
        ] {
            assert_eq!(ethnic_code(v).as_deref(), Some(code), "{v}");
        }
        for bad in ["55", "0", "Pháp", ""] {
            assert_eq!(ethnic_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn importing_twice_creates_nothing_twice_and_updates_in_place() {
        let rows = parse(GOOD_CSV.as_bytes()).expect("parse").rows;
        let first = plan(&unit(), &BTreeMap::new(), &rows);
        assert_eq!((first.created, first.updated, first.unchanged), (3, 0, 0));
        let roster: BTreeMap<String, Cadre> = first.puts.iter().cloned().collect();
        assert_eq!(roster.len(), 3);
        let again = plan(&unit(), &roster, &rows);
        assert_eq!((again.created, again.updated, again.unchanged), (0, 0, 3));
        assert!(again.puts.is_empty());
        // The same person written another way is the same cadre; a new title updates.
        let changed = "Ho va ten,Gioi tinh,Nam sinh,Chuc danh\nLÒ THỊ HOA,Nữ,1988,Phó Chủ tịch UBND xã\n";
        let rows2 = parse(changed.as_bytes()).expect("parse").rows;
        let p = plan(&unit(), &roster, &rows2);
        assert_eq!((p.created, p.updated), (0, 1));
        let (id, c) = &p.puts[0];
        assert!(roster.contains_key(id));
        assert_eq!(c.position.as_deref(), Some("Phó Chủ tịch UBND xã"));
        assert_eq!(
            c.ethnicity.as_deref(),
            Some("03"),
            "an absent column keeps the roster's value"
        );
        // Ids are stable across devices and differ across units.
        assert_eq!(
            stable_id(&unit(), "lo thi hoa|1988"),
            stable_id(&unit(), "lo thi hoa|1988")
        );
        assert_ne!(
            stable_id(&unit(), "lo thi hoa|1988"),
            stable_id(&"2025:03460".parse().expect("unit"), "lo thi hoa|1988")
        );
        assert!(crate::model::check_id("cadre", &stable_id(&unit(), "x")).is_ok());
    }

    #[test]
    fn exports_read_back_as_the_same_roster_in_vietnamese_order() {
        let rows = parse(GOOD_CSV.as_bytes()).expect("parse").rows;
        let roster: BTreeMap<String, Cadre> = plan(&unit(), &BTreeMap::new(), &rows).puts.into_iter().collect();
        for bytes in [export_xlsx(&roster).expect("xlsx"), export_csv(&roster)] {
            let back = parse(&bytes).expect("read back");
            assert_eq!(back.errors, vec![]);
            let names: Vec<&str> = back.rows.iter().map(|r| r.cadre.name.as_str()).collect();
            // By given name: Hoa, Mỷ, Páo.
            assert_eq!(names, vec!["Lò Thị Hoa", "vàng thị mỷ", "Giàng A Páo"]);
            let p = plan(&unit(), &roster, &back.rows);
            assert_eq!(
                (p.created, p.updated, p.unchanged),
                (0, 0, 3),
                "a round trip changes nothing"
            );
        }
    }
}

//! The benchmark workload, shared by `bench` (loopback) and `netbench` (emulated networks):
//! a realistic course recorded the way a commune's trainer records it, and automerge's own
//! sync protocol on the same documents for reference.
//!
//! One device of unit 2025:03434 adds 70 cadres, creates one course of 36 sessions and
//! enrols the 70 ([`setup`]); then every session is a roll call recorded offline:
//! `mark_all` present, then 5 single marks (late, absent, excused, ...) picked by a seeded
//! generator ([`record_roll_calls`]): 2,520 marks in 216 commits.

use std::collections::BTreeMap;
use std::path::Path;

use automerge::sync::{Message, State, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ROOT};
use sync_core::device::{Device, NewSession};
use sync_core::docs::{self, DocId};
use sync_core::model::{Cadre, Category, CourseMeta, Gender, HalfDay, Mark, MarkStatus, TheoryLevel};
use sync_core::store;

use crate::NAM_HANG;

pub const TRAINEES: usize = 70;
pub const SESSIONS: usize = 36;
pub const MARKS: usize = TRAINEES * SESSIONS;
/// Single marks after each session's `mark_all`: the people who came late, left, were excused.
pub const CHANGES_PER_SESSION: usize = 5;
/// Bound on the messages of one plain automerge sync (it needs a handful).
pub const MAX_AUTOMERGE_ROUNDS: usize = 100;
/// Seed of the roll calls' generator: every run records the same roll calls.
pub const ROLL_CALL_SEED: u64 = 2026;

/// A small deterministic generator so every run records the same roll calls.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

pub fn cadre(i: usize) -> Cadre {
    const FAMILY: &[&str] = &[
        "Lò", "Vàng", "Tòng", "Chảo", "Pờ", "Lường", "Giàng", "Sùng", "Lý", "Nguyễn", "Hoàng", "Tẩn",
    ];
    const GIVEN_F: &[&str] = &["Hoa", "Mai", "Dợ", "Xuân", "Lan", "Thu", "Hương", "Pham", "Mỷ"];
    const GIVEN_M: &[&str] = &["Dình", "Sính", "Tùng", "Páo", "Chư", "Quang", "Hùng", "Sử", "Lả"];
    const ETHNIC: &[&str] = &["03", "08", "09", "35", "48", "50", "01", "25"];
    const POSITION: &[&str] = &[
        "Chủ tịch UBND xã",
        "Phó Chủ tịch UBND xã",
        "Công chức Văn phòng - Thống kê",
        "Công chức Tài chính - Kế toán",
        "Công chức Tư pháp - Hộ tịch",
        "Công chức Địa chính - Xây dựng",
        "Chỉ huy trưởng Quân sự",
        "Trưởng bản",
    ];
    let female = i.is_multiple_of(3);
    let name = if female {
        format!("{} Thị {}", FAMILY[i % FAMILY.len()], GIVEN_F[(i * 7) % GIVEN_F.len()])
    } else {
        let middle = if i.is_multiple_of(2) { "A" } else { "Văn" };
        format!(
            "{} {middle} {}",
            FAMILY[i % FAMILY.len()],
            GIVEN_M[(i * 5) % GIVEN_M.len()]
        )
    };
    let qualification = if i.is_multiple_of(4) {
        "Trung cấp"
    } else {
        "Đại học"
    };
    Cadre {
        name,
        gender: if female { Gender::Female } else { Gender::Male },
        birth_year: 1968 + (i % 35) as u16,
        ethnicity: Some(ETHNIC[i % ETHNIC.len()].to_string()),
        category: Some(Category::ALL[i % Category::ALL.len()]),
        position: Some(POSITION[i % POSITION.len()].to_string()),
        qualification: Some(qualification.to_string()),
        theory_level: Some(TheoryLevel::ALL[i % 3]),
        state_management: None,
    }
}

/// `2026-12-01` plus `days`, for the first few months.
pub fn date(days: usize) -> String {
    const MONTHS: &[(&str, usize)] = &[("2026-12", 31), ("2027-01", 31), ("2027-02", 28), ("2027-03", 31)];
    let mut left = days;
    for (month, len) in MONTHS {
        if left < *len {
            return format!("{month}-{:02}", left + 1);
        }
        left -= len;
    }
    panic!("date {days} days after 2026-12-01 is past the table");
}

pub fn course_meta() -> CourseMeta {
    CourseMeta {
        title: "Bồi dưỡng kiến thức quản lý nhà nước cho cán bộ, công chức cấp xã năm 2026".into(),
        topic: Some("Quản lý nhà nước ở cấp xã sau sắp xếp đơn vị hành chính".into()),
        organiser: Some("Sở Nội vụ tỉnh Lai Châu".into()),
        form: Some("Tập trung".into()),
        venue: Some("Hội trường UBND xã Nậm Hàng".into()),
        start_date: None,
        end_date: None,
        min_ratio: 0.8,
        excused_counts: false,
        planned_trainees: TRAINEES as u32,
        programme: None,
    }
}

/// The roll call after everyone was marked present: who came late, left early, was away.
pub fn roll_call_change(rng: &mut Lcg) -> (MarkStatus, Option<String>) {
    const CHANGES: &[(MarkStatus, Option<&str>)] = &[
        (MarkStatus::Late, Some("đường sạt lở")),
        (MarkStatus::Late, None),
        (MarkStatus::Absent, None),
        (MarkStatus::Excused, Some("ốm, có giấy")),
        (MarkStatus::Excused, Some("đi công tác")),
        (MarkStatus::LeftEarly, Some("việc gia đình")),
    ];
    let (status, note) = CHANGES[rng.next(CHANGES.len())];
    (status, note.map(str::to_string))
}

/// The course of the workload as the device created it.
pub struct Course {
    pub id: String,
    pub sessions: Vec<String>,
    pub cadres: Vec<String>,
}

pub fn setup(device: &mut Device) -> Course {
    let cadres: Vec<String> = (0..TRAINEES)
        .map(|i| device.add_cadre(NAM_HANG, cadre(i)).expect("add cadre"))
        .collect();
    let sessions = (0..SESSIONS)
        .map(|i| NewSession {
            date: date(i),
            half_day: Some(HalfDay::Morning),
            periods: Some(4),
            topic: Some(format!("Chuyên đề {}", i / 2 + 1)),
        })
        .collect();
    let created = device
        .create_course(NAM_HANG, course_meta(), sessions)
        .expect("create course");
    for c in &cadres {
        device.enrol(&created.id, c).expect("enrol");
    }
    Course {
        id: created.id,
        sessions: created.sessions.into_iter().map(|s| s.id).collect(),
        cadres,
    }
}

/// Every session's roll call, offline: returns the number of commits.
pub fn record_roll_calls(device: &mut Device, course: &Course, rng: &mut Lcg) -> usize {
    let mut commits = 0;
    for session in &course.sessions {
        let n = device
            .mark_all(&course.id, session, MarkStatus::Present)
            .expect("mark all");
        assert_eq!(n, TRAINEES, "mark_all marks every enrolled trainee");
        commits += 1;
        for _ in 0..CHANGES_PER_SESSION {
            let who = &course.cadres[rng.next(course.cadres.len())];
            let (status, note) = roll_call_change(rng);
            device.mark(&course.id, session, who, status, note).expect("mark");
            commits += 1;
        }
    }
    commits
}

/// The workload's "one more mark" after the push: a trainee excused from the last session.
pub fn record_one_more_mark(device: &mut Device, course: &Course) {
    device
        .mark(
            &course.id,
            &course.sessions[SESSIONS - 1],
            &course.cadres[0],
            MarkStatus::Excused,
            Some("họp đột xuất".into()),
        )
        .expect("one more mark");
}

// ---------------------------------------------------------------------------------------
// Plain automerge sync, for reference.

#[derive(Debug, Default, Clone, Copy)]
pub struct Exchange {
    pub a_to_b: usize,
    pub b_to_a: usize,
    pub messages: usize,
}

impl Exchange {
    pub fn total(&self) -> usize {
        self.a_to_b + self.b_to_a
    }
    pub fn add(&mut self, other: Exchange) {
        self.a_to_b += other.a_to_b;
        self.b_to_a += other.b_to_a;
        self.messages += other.messages;
    }
}

/// Runs automerge's sync protocol between `a` (who starts) and `b` until neither has a
/// message to send. Every message goes through `encode`/`decode`, as on a wire.
pub fn automerge_sync(a: &mut Automerge, sa: &mut State, b: &mut Automerge, sb: &mut State) -> Exchange {
    let mut ex = Exchange::default();
    for _ in 0..MAX_AUTOMERGE_ROUNDS {
        let mut sent = false;
        if let Some(bytes) = sync_message(a, sa, b, sb) {
            ex.a_to_b += bytes;
            ex.messages += 1;
            sent = true;
        }
        if let Some(bytes) = sync_message(b, sb, a, sa) {
            ex.b_to_a += bytes;
            ex.messages += 1;
            sent = true;
        }
        if !sent {
            assert_same_heads(a, b);
            return ex;
        }
    }
    panic!("plain automerge sync did not finish in {MAX_AUTOMERGE_ROUNDS} rounds");
}

/// One message of automerge's sync protocol from `from` to `to`, through `encode`/`decode`
/// as on a wire: its size in bytes, or `None` when `from` has nothing to say.
pub fn sync_message(
    from: &Automerge,
    from_state: &mut State,
    to: &mut Automerge,
    to_state: &mut State,
) -> Option<usize> {
    let msg = from.generate_sync_message(from_state)?;
    let bytes = msg.encode();
    let msg = Message::decode(&bytes).expect("decode a sync message");
    to.receive_sync_message(to_state, msg).expect("receive a sync message");
    Some(bytes.len())
}

/// Panics unless both documents have the same heads.
pub fn assert_same_heads(a: &Automerge, b: &Automerge) {
    let (mut ha, mut hb) = (a.get_heads(), b.get_heads());
    ha.sort();
    hb.sort();
    assert_eq!(ha, hb, "plain automerge sync ended without converging");
}

/// Every document of a device, from its SQLite file.
pub fn device_docs(home: &Path) -> BTreeMap<DocId, Automerge> {
    let conn = store::open_connection(&home.join("device.sqlite")).expect("open device store");
    let mut stmt = conn
        .prepare("SELECT doc_id FROM docs ORDER BY doc_id")
        .expect("list docs");
    let ids: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("list docs")
        .collect::<Result<_, _>>()
        .expect("doc ids");
    ids.into_iter()
        .map(|key| {
            let id: DocId = key.parse().expect("document id");
            let doc = store::load_doc(&conn, &id).expect("load doc").expect("doc");
            (id, doc)
        })
        .collect()
}

pub fn mark_value(status: MarkStatus, device: &str) -> String {
    docs::encode(&Mark {
        status,
        note: None,
        periods: None,
        device: device.to_string(),
        at: 1_796_000_000,
    })
}

/// One more mark on `a`, as the device would commit it.
pub fn one_more_mark(a: &mut Automerge, key: &str, status: MarkStatus, device: &str) {
    let mut tx = a.transaction();
    tx.put(ROOT, key, mark_value(status, device)).expect("put a mark");
    tx.commit_with(
        CommitOptions::default()
            .with_message("mark")
            .with_time(1_796_000_000_000),
    );
}

/// `n` small courses of one unit, each with 4 trainees and 2 sessions both marked
/// present: a roster and 2n documents for "many documents of which one changed".
pub fn small_courses(device: &mut Device, n: usize) -> Vec<Course> {
    let cadres: Vec<String> = (0..4)
        .map(|i| device.add_cadre(NAM_HANG, cadre(i)).expect("add cadre"))
        .collect();
    (0..n)
        .map(|k| {
            let sessions = (0..2)
                .map(|i| NewSession {
                    date: date(i),
                    half_day: Some(HalfDay::Morning),
                    periods: Some(4),
                    topic: Some(format!("Chuyên đề {}", k + 1)),
                })
                .collect();
            let meta = CourseMeta {
                title: format!("Lớp bồi dưỡng {}", k + 1),
                planned_trainees: 4,
                ..course_meta()
            };
            let created = device.create_course(NAM_HANG, meta, sessions).expect("create course");
            for c in &cadres {
                device.enrol(&created.id, c).expect("enrol");
            }
            let sessions: Vec<String> = created.sessions.into_iter().map(|s| s.id).collect();
            for s in &sessions {
                device.mark_all(&created.id, s, MarkStatus::Present).expect("mark all");
            }
            Course {
                id: created.id,
                sessions,
                cadres: cadres.clone(),
            }
        })
        .collect()
}

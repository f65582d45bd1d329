//! Demo data for `serve --demo`: the five communes that took over the former Nậm Nhùn
//! district (Lai Châu) with rosters shaped by the field figures in data/README.md
//! (207 cadres; 54.1% university or higher; 7.2% advanced and 76.8% intermediate
//! political theory; the ethnic groups of Lai Châu) and courses like the real ones.
//! Seeded, so every run shows the same data. Written through the same store path as a
//! sync, so the projections and pages are exercised exactly as in the field.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ROOT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sync_core::docs::{self, DocId};
use sync_core::model::{
    Cadre, Category, CourseMeta, Enrolment, EvalKind, Evaluation, Gender, Mark, MarkStatus, Programme, Session,
    TheoryLevel,
};
use sync_core::units::UnitKey;

use crate::store::{DocTx, Store, StoreResult};

/// The web account `serve --demo` creates (its password is printed at start).
pub const ACCOUNT: &str = "demo";

/// The demo account's unit: the province of the demo communes (Lai Châu).
pub fn account_unit() -> &'static str {
    "2025:12"
}

pub const COMMUNES: &[(&str, usize)] = &[
    ("03434", 47),
    ("03460", 38),
    ("03472", 41),
    ("03487", 43),
    ("03503", 38),
];

const ETHNIC: &[(&str, u32)] = &[
    ("03", 35),
    ("08", 25),
    ("09", 10),
    ("35", 8),
    ("01", 10),
    ("29", 5),
    ("41", 3),
    ("48", 2),
    ("50", 2),
];

/// An id in the alphabet of `model::new_id`, drawn from the seeded generator so the
/// same seed gives the same data set, ids included.
fn seeded_id(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    (0..10)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn family(ethnicity: &str) -> &'static [&'static str] {
    match ethnicity {
        "03" => &["Lò", "Lường", "Tòng", "Quàng", "Cầm", "Điêu"],
        "08" => &["Giàng", "Vàng", "Sùng", "Lầu", "Thào", "Lý"],
        "09" => &["Chảo", "Tẩn", "Phàn", "Lý"],
        "35" => &["Pờ", "Chu", "Lỳ", "Lò"],
        "29" => &["Vì", "Lò", "Cầm"],
        "41" => &["Lò", "Chà", "Phì"],
        "48" => &["Lò", "Vàng", "Pạc"],
        "50" => &["Lò", "Hù", "Pờ"],
        _ => &["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Đỗ"],
    }
}

fn cadre(rng: &mut StdRng) -> Cadre {
    let roll = rng.random_range(0..100);
    let mut acc = 0;
    let mut ethnicity = "01";
    for (code, w) in ETHNIC {
        acc += w;
        if roll < acc {
            ethnicity = code;
            break;
        }
    }
    let female = rng.random_bool(0.38);
    let middle = match (ethnicity, female) {
        ("08", false) => "A",
        (_, true) => "Thị",
        _ => "Văn",
    };
    let given = if female {
        pick(
            rng,
            &[
                "Hoa", "Lan", "Mai", "Hương", "Dung", "Thu", "Xuân", "Nga", "Pà", "Mỷ", "Dợ", "Ngọc",
            ],
        )
    } else {
        pick(
            rng,
            &[
                "Dình", "Sính", "Pao", "Chứ", "Tùng", "Hải", "Minh", "Quân", "Thắng", "Dũng", "Chiến", "Páo",
            ],
        )
    };
    let q = rng.random_range(0.0..1.0);
    let t = rng.random_range(0.0..1.0);
    Cadre {
        name: format!("{} {} {}", pick(rng, family(ethnicity)), middle, given),
        gender: if female { Gender::Female } else { Gender::Male },
        birth_year: rng.random_range(1968..=2001),
        ethnicity: Some(ethnicity.to_string()),
        category: Some(*pick(
            rng,
            &[
                Category::CanBo,
                Category::CanBo,
                Category::CongChuc,
                Category::CongChuc,
                Category::CongChuc,
                Category::KhongChuyenTrach,
            ],
        )),
        position: Some(
            pick(
                rng,
                &[
                    "Chủ tịch UBND xã",
                    "Công chức Văn phòng - Thống kê",
                    "Công chức Tư pháp - Hộ tịch",
                    "Công chức Địa chính - Xây dựng",
                    "Công chức Văn hóa - Xã hội",
                    "Phó Bí thư Đảng ủy",
                    "Chủ tịch Hội Phụ nữ",
                    "Bí thư Đoàn Thanh niên",
                ],
            )
            .to_string(),
        ),
        qualification: Some(
            if q < 0.541 {
                "Đại học"
            } else if q < 0.8 {
                "Cao đẳng"
            } else {
                "Trung cấp"
            }
            .to_string(),
        ),
        theory_level: Some(if t < 0.072 {
            TheoryLevel::CaoCap
        } else if t < 0.84 {
            TheoryLevel::TrungCap
        } else {
            TheoryLevel::SoCap
        }),
        state_management: None,
    }
}

fn commit(doc: &mut Automerge, msg: &str, time: i64, entries: Vec<(String, String)>) {
    let mut tx = doc.transaction();
    for (k, v) in entries {
        // Puts on the root map of a fresh transaction cannot fail.
        let _ = tx.put(ROOT, k, v);
    }
    tx.commit_with(CommitOptions::default().with_message(msg).with_time(time * 1000));
}

fn store_doc(tx: &mut dyn DocTx, id: &DocId, doc: &Automerge, course: Option<&docs::CourseDoc>) -> StoreResult<()> {
    let contents = docs::read(id, doc, course).map_err(|e| crate::store::StoreError::Other(e.reason))?;
    tx.store(
        id,
        doc,
        &doc.get_changes(&[]),
        &crate::store::Projection::Whole(contents),
        "demo",
    )
}

fn status(rng: &mut StdRng) -> MarkStatus {
    match rng.random_range(0..100) {
        0..=88 => MarkStatus::Present,
        89..=92 => MarkStatus::Late,
        93..=94 => MarkStatus::LeftEarly,
        95..=96 => MarkStatus::Excused,
        _ => MarkStatus::Absent,
    }
}

/// A course with its sessions, enrolments and marks (and `conflicts` concurrent marks).
#[allow(clippy::too_many_arguments)]
fn course(
    tx: &mut dyn DocTx,
    rng: &mut StdRng,
    unit: &UnitKey,
    title: &str,
    dates: &[String],
    trainees: &[String],
    conflicts: usize,
    months: &[&str],
    t0: i64,
) -> StoreResult<()> {
    let actor = ActorId::from(b"diemdanh-demo-01".to_vec());
    let cid = seeded_id(rng);
    let meta = CourseMeta {
        title: title.to_string(),
        topic: None,
        organiser: Some("Sở Nội vụ tỉnh Lai Châu".into()),
        form: Some("Tập trung".into()),
        venue: Some("Hội trường UBND xã".into()),
        start_date: dates.first().cloned(),
        end_date: dates.last().cloned(),
        min_ratio: 0.8,
        excused_counts: false,
        planned_trainees: trainees.len().max(1) as u32,
        programme: Some(if title.contains("lý luận chính trị") {
            Programme::PoliticalTheory
        } else if title.contains("quản lý nhà nước") {
            Programme::StateManagement
        } else {
            Programme::PositionSkills
        }),
    };
    let mut cdoc = Automerge::new().with_actor(actor.clone());
    let mut course = docs::CourseDoc {
        meta: Some(meta.clone()),
        ..Default::default()
    };
    let mut entries = vec![(docs::META_KEY.to_string(), docs::encode(&meta))];
    let mut sessions = Vec::new();
    for d in dates {
        let s = Session {
            date: d.clone(),
            half_day: None,
            periods: Some(4),
            topic: None,
            part: docs::part_for_new_session(&course),
        };
        let sid = seeded_id(rng);
        entries.push((docs::session_key(&sid), docs::encode(&s)));
        sessions.push((sid.clone(), s.part));
        course.sessions.insert(sid, s);
    }
    for t in trainees {
        entries.push((docs::enrolment_key(t), docs::encode(&Enrolment { at: t0 })));
        course.enrolments.insert(t.clone(), Enrolment { at: t0 });
        // Monthly evaluations, scored out of 10; about one in twelve falls below 5.
        for m in months {
            let score = if rng.random_bool(1.0 / 12.0) {
                f64::from(rng.random_range(30..50u32)) / 10.0
            } else {
                f64::from(rng.random_range(55..=95u32)) / 10.0
            };
            let e = Evaluation {
                kind: EvalKind::Monthly,
                period: Some(m.to_string()),
                score: Some(score),
                passed: None,
                device: "demo".into(),
                at: t0,
            };
            entries.push((docs::evaluation_key(t, &e.slot()), docs::encode(&e)));
        }
    }
    commit(&mut cdoc, "create course", t0, entries);
    let cid_doc = DocId::course(unit, &cid);
    store_doc(tx, &cid_doc, &cdoc, None)?;
    let parts: std::collections::BTreeSet<u32> = sessions.iter().map(|(_, p)| *p).collect();
    for part in parts {
        let aid = DocId::attendance(unit, &cid, part);
        let mut adoc = Automerge::new().with_actor(actor.clone());
        for (i, (sid, _)) in sessions.iter().filter(|(_, p)| *p == part).enumerate() {
            let at = t0 + i as i64 * 86_400;
            let entries = trainees
                .iter()
                .map(|t| {
                    (
                        docs::mark_key(sid, t),
                        docs::encode(&Mark {
                            status: status(rng),
                            note: None,
                            periods: None,
                            device: "demo".into(),
                            at,
                        }),
                    )
                })
                .collect();
            commit(&mut adoc, "roll call", at, entries);
        }
        // Two officers marked the same trainee differently while offline.
        for (sid, _) in sessions.iter().filter(|(_, p)| *p == part).take(conflicts) {
            let t = &trainees[rng.random_range(0..trainees.len())];
            let key = docs::mark_key(sid, t);
            let mut a = adoc.fork().with_actor(ActorId::from(b"diemdanh-demo-02".to_vec()));
            let mut b = adoc.fork().with_actor(ActorId::from(b"diemdanh-demo-03".to_vec()));
            commit(
                &mut a,
                "mark",
                t0,
                vec![(
                    key.clone(),
                    docs::encode(&Mark {
                        status: MarkStatus::Present,
                        note: None,
                        periods: None,
                        device: "demo-a".into(),
                        at: t0,
                    }),
                )],
            );
            commit(
                &mut b,
                "mark",
                t0,
                vec![(
                    key,
                    docs::encode(&Mark {
                        status: MarkStatus::Absent,
                        note: Some("không thấy đến".into()),
                        periods: None,
                        device: "demo-b".into(),
                        at: t0,
                    }),
                )],
            );
            adoc.merge(&mut a).map_err(crate::store::StoreError::Doc)?;
            adoc.merge(&mut b).map_err(crate::store::StoreError::Doc)?;
        }
        store_doc(tx, &aid, &adoc, Some(&course))?;
    }
    Ok(())
}

fn dates(start: time::Date, n: usize, every_days: i64) -> Vec<String> {
    (0..n)
        .map(|i| (start + time::Duration::days(i as i64 * every_days)).to_string())
        .collect()
}

/// How much demo data: the five communes of the former Nậm Nhùn district (207 cadres,
/// the field figures), or every commune of Lai Châu province at the same shape (for
/// benchmarks and the province's pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    District,
    Province,
}

/// The communes and roster sizes of a scale, seeded and deterministic.
pub fn communes(scale: Scale) -> Vec<(String, usize)> {
    match scale {
        Scale::District => COMMUNES.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
        Scale::Province => {
            let tree = sync_core::units::UnitTree::reference();
            let province = UnitKey::new(sync_core::units::Scheme::S2025, "12");
            let mut rng = StdRng::seed_from_u64(12);
            let mut codes: Vec<String> = tree.children(&province).iter().map(|k| k.code.clone()).collect();
            codes.sort();
            codes
                .into_iter()
                .map(|c| {
                    // The district's communes keep their field sizes; others 35-48 (the
                    // district's range).
                    let n = COMMUNES
                        .iter()
                        .find(|(k, _)| *k == c)
                        .map(|(_, n)| *n)
                        .unwrap_or_else(|| rng.random_range(35..=48));
                    (c, n)
                })
                .collect()
        }
    }
}

/// Fills an empty store with the district demo data set. Returns false when it was not empty.
pub fn seed(store: &dyn Store) -> StoreResult<bool> {
    seed_scaled(store, Scale::District)
}

/// Fills an empty store with the demo data of `scale`: rosters, a state-management
/// course per commune (12 sessions), a 3-month attachment of 10 trainees 2-3 days a
/// week with monthly evaluations, and a 70-trainee intermediate political-theory class
/// of the province (36 sessions). Returns false when the store was not empty.
pub fn seed_scaled(store: &dyn Store, scale: Scale) -> StoreResult<bool> {
    if store.counts()?.iter().any(|(k, n)| k == "changes" && *n > 0) {
        return Ok(false);
    }
    let mut rng = StdRng::seed_from_u64(3434);
    let t0 = 1_764_547_200; // 2025-12-01
    let start = time::macros::date!(2025 - 12 - 01);
    let communes = communes(scale);
    store.write(&mut |tx| {
        let actor = ActorId::from(b"diemdanh-demo-01".to_vec());
        let mut all = Vec::new();
        let mut per_commune = Vec::new();
        for (code, n) in &communes {
            let unit = UnitKey::new(sync_core::units::Scheme::S2025, code.clone());
            let mut doc = Automerge::new().with_actor(actor.clone());
            let mut ids = Vec::new();
            let entries = (0..*n)
                .map(|_| {
                    let id = seeded_id(&mut rng);
                    ids.push(id.clone());
                    (docs::cadre_key(&id), docs::encode(&cadre(&mut rng)))
                })
                .collect();
            commit(&mut doc, "roster", t0, entries);
            store_doc(tx, &DocId::roster(&unit), &doc, None)?;
            all.extend(ids.iter().cloned());
            per_commune.push((unit, ids));
        }
        for (i, (unit, ids)) in per_commune.iter().enumerate() {
            let title = "Bồi dưỡng kiến thức, kỹ năng quản lý nhà nước cho cán bộ, công chức cấp xã";
            course(
                tx,
                &mut rng,
                unit,
                title,
                &dates(start, 12, 2),
                ids,
                usize::from(i == 0) * 2,
                &[],
                t0,
            )?;
        }
        let (unit, ids) = &per_commune[0];
        course(
            tx,
            &mut rng,
            unit,
            "Tập sự tại cơ quan cấp tỉnh (3 tháng, 2-3 ngày/tuần)",
            &dates(start, 30, 3),
            &ids[..10],
            0,
            &["2025-12", "2026-01", "2026-02"],
            t0,
        )?;
        let province = UnitKey::new(sync_core::units::Scheme::S2025, "12");
        course(
            tx,
            &mut rng,
            &province,
            "Trung cấp lý luận chính trị - hành chính",
            &dates(start, 36, 2),
            &all[..70],
            1,
            &[],
            t0,
        )?;
        Ok(())
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_district_has_the_field_count_and_the_province_every_commune() {
        let district = communes(Scale::District);
        assert_eq!(district.iter().map(|(_, n)| n).sum::<usize>(), 207);
        let province = communes(Scale::Province);
        assert!(province.len() > district.len());
        for (code, n) in &district {
            assert!(province.contains(&(code.clone(), *n)), "{code}");
        }
        assert_eq!(communes(Scale::Province), province, "deterministic");
    }
}

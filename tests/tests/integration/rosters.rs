//! Rosters and the 2025 unit reform through the real sync: a sheet imported on a device
//! and on the server, the legacy-to-2025 mapping applied while devices of both schemes
//! hold data, and the field command line's roster contract.

use std::process::Command;

use diemdanh_tests::{bin, TestServer};
use serde_json::Value;
use sync_core::device::NewSession;
use sync_core::model::MarkStatus;

use crate::common::meta;

const NAM_MANH_LEGACY: &str = "legacy:03474";
const NAM_HANG_2025: &str = "2025:03434";

const SHEET: &str =
    "STT,Họ và tên,Giới tính,Năm sinh,Dân tộc,Chức danh,Loại,Trình độ chuyên môn,Lý luận chính trị,Quản lý nhà nước
1,Lò Thị Hoa,Nữ,1988,Thái,Công chức Văn phòng - Thống kê,Công chức,Đại học,Trung cấp,Chuyên viên
2,Giàng A Páo,Nam,1979,HMông,Chủ tịch UBND xã,Cán bộ,Cao đẳng,Cao cấp,
";

fn names(rows: &[sync_core::device::CadreRow]) -> Vec<&str> {
    rows.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn the_reform_moves_rosters_once_and_a_legacy_device_keeps_syncing() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    // An officer of legacy Nậm Manh, and one of 2025 Nậm Hàng (which took it over).
    let mut old = server.enrolled_device(&dir.path().join("old"), NAM_MANH_LEGACY);
    let mut new = server.enrolled_device(&dir.path().join("new"), NAM_HANG_2025);

    let r = old
        .import_roster(NAM_MANH_LEGACY, SHEET.as_bytes(), false)
        .expect("import");
    assert_eq!((r.created, r.applied), (2, true));
    let ids: Vec<String> = old.list_cadres(None).expect("list").into_iter().map(|c| c.id).collect();
    let course = old
        .create_course(
            NAM_MANH_LEGACY,
            meta("Bồi dưỡng quản lý nhà nước"),
            vec![NewSession {
                date: "2026-12-01".into(),
                ..Default::default()
            }],
        )
        .expect("course");
    for id in &ids {
        old.enrol(&course.id, id).expect("enrol");
    }
    old.mark_all(&course.id, "2026-12-01", MarkStatus::Present)
        .expect("mark");
    assert!(server.sync(&mut old).expect("sync").refused.is_empty());
    server.sync(&mut new).expect("sync");
    assert_eq!(
        new.list_cadres(Some(NAM_MANH_LEGACY)).expect("list").len(),
        2,
        "2025 scope sees legacy data"
    );

    let store = server.store();
    let first = diemdanh_server::roster::apply_reform(&store).expect("reform");
    assert_eq!((first.cadres_moved, first.devices_rescoped), (2, 1));
    assert_eq!(
        first.moved,
        vec![(NAM_MANH_LEGACY.to_string(), NAM_HANG_2025.to_string(), 2)]
    );
    let again = diemdanh_server::roster::apply_reform(&store).expect("reform again");
    assert_eq!((again.cadres_moved, again.devices_rescoped), (0, 0), "idempotent");

    for d in [&mut old, &mut new] {
        let stats = server.sync(d).expect("sync after the reform");
        assert!(stats.refused.is_empty(), "{:?}", stats.refused);
        let moved = d.list_cadres(Some(NAM_HANG_2025)).expect("list");
        assert_eq!(names(&moved), vec!["Lò Thị Hoa", "Giàng A Páo"]);
        let mut moved_ids: Vec<String> = moved.iter().map(|c| c.id.clone()).collect();
        moved_ids.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(moved_ids, want, "cadres keep their ids");
        assert!(d.list_cadres(Some(NAM_MANH_LEGACY)).expect("list").is_empty());
        assert_eq!(d.list_cadres(None).expect("list").len(), 2, "nothing on two rosters");
    }
    // The legacy device keeps recording into its course and writing the new roster.
    old.mark(&course.id, "2026-12-01", &ids[0], MarkStatus::Late, None)
        .expect("mark");
    let r = old
        .import_roster(
            NAM_HANG_2025,
            "Họ và tên,Giới tính,Năm sinh\nTòng Văn Minh,Nam,1990\n".as_bytes(),
            false,
        )
        .expect("import into the 2025 roster");
    assert_eq!(r.created, 1);
    assert!(server.sync(&mut old).expect("sync").refused.is_empty());
    server.sync(&mut new).expect("sync");
    assert_eq!(new.list_cadres(Some(NAM_HANG_2025)).expect("list").len(), 3);
    let report = server.report(&course.id);
    assert_eq!(report.marks.len(), 2);
    assert!(report.trainees.iter().all(|t| t.name.is_some()), "names still resolve");
    assert_eq!(new.show_course(&course.id).expect("show").marks, report.marks);

    // A cadre added offline under the legacy code after the reform moves at the next run.
    old.add_cadre(NAM_MANH_LEGACY, crate::common::cadre("Lường Thị Dung"))
        .expect("add");
    server.sync(&mut old).expect("sync");
    let third = diemdanh_server::roster::apply_reform(&store).expect("reform");
    assert_eq!(third.cadres_moved, 1);
    server.sync(&mut new).expect("sync");
    assert_eq!(new.list_cadres(Some(NAM_HANG_2025)).expect("list").len(), 4);
    assert!(new.list_cadres(Some(NAM_MANH_LEGACY)).expect("list").is_empty());
}

fn diemdanh(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("diemdanh"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("run diemdanh")
}

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn roster_import_list_and_export_through_both_command_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let home = dir.path().join("tablet");
    let code = server.enroll_code(NAM_HANG_2025);
    let out = diemdanh(&home, &["enroll", "--server", &server.url, "--code", &code]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // One bad row: reported with its number, and nothing imported.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("{SHEET}3,,Nữ,1990,,,,,,\n4,Chảo Thị Mai,X,1990,,,,,,\n")).expect("write");
    let out = diemdanh(
        &home,
        &["import", "roster", bad.to_str().expect("utf8"), "--unit", NAM_HANG_2025],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("row 4: Họ và tên: missing"), "{stderr}");
    assert!(stderr.contains("row 5: Giới tính"), "{stderr}");
    assert!(stderr.contains("nothing imported"), "{stderr}");
    let listed = json(&diemdanh(&home, &["roster", "list", "--unit", NAM_HANG_2025, "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(0));

    // With --skip-invalid the good rows go in; the same file again creates nothing.
    let args = [
        "import",
        "roster",
        bad.to_str().expect("utf8"),
        "--unit",
        NAM_HANG_2025,
        "--skip-invalid",
        "--json",
    ];
    let r = json(&diemdanh(&home, &args));
    assert_eq!((r["created"].as_u64(), r["skipped"].as_u64()), (Some(2), Some(2)));
    let r = json(&diemdanh(&home, &args));
    assert_eq!((r["created"].as_u64(), r["unchanged"].as_u64()), (Some(0), Some(2)));

    let found = json(&diemdanh(
        &home,
        &[
            "roster",
            "list",
            "--unit",
            NAM_HANG_2025,
            "--search",
            "lo thi hoa",
            "--json",
        ],
    ));
    let found = found.as_array().expect("array");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["name"], "Lò Thị Hoa");
    assert!(found[0]["id"].as_str().is_some_and(|s| !s.is_empty()));

    // The server imports a sheet (in Excel form, exported by the device) as a server
    // change; the device receives it at its next sync and nothing is doubled.
    let xlsx = dir.path().join("roster.xlsx");
    let out = diemdanh(
        &home,
        &[
            "roster",
            "export",
            "--unit",
            NAM_HANG_2025,
            "--out",
            xlsx.to_str().expect("utf8"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let extra = dir.path().join("extra.csv");
    std::fs::write(&extra, "ho va ten;GIOI TINH;nam sinh\nPờ Thị Dợ;nữ;1992\n").expect("write");
    let data = server.data.to_str().expect("utf8").to_string();
    // The server had none of them: the sheet creates them with the same stable ids the
    // device gave them, so the sync below merges instead of doubling.
    for (file, created) in [(&xlsx, 2), (&extra, 1), (&extra, 0)] {
        let out = Command::new(bin("diemdanh-server"))
            .args([
                "import",
                "roster",
                file.to_str().expect("utf8"),
                "--unit",
                NAM_HANG_2025,
                "--data",
                &data,
                "--json",
            ])
            .output()
            .expect("server import");
        let r = json(&out);
        assert_eq!(r["created"].as_u64(), Some(created), "{}", file.display());
    }
    let out = diemdanh(&home, &["sync", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = json(&diemdanh(&home, &["roster", "list", "--unit", NAM_HANG_2025, "--json"]));
    let got: Vec<&str> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        got,
        vec!["Pờ Thị Dợ", "Lò Thị Hoa", "Giàng A Páo"],
        "Vietnamese order by given name"
    );
}

#[test]
fn evaluations_sync_and_decide_who_gets_a_certificate_number() {
    use sync_core::model::EvalKind;
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut d = server.enrolled_device(&dir.path().join("tablet"), NAM_HANG_2025);
    let sheet = "Họ và tên,Giới tính,Năm sinh\nLò Thị Hoa,Nữ,1988\nGiàng A Páo,Nam,1979\nTòng Văn Minh,Nam,1990\n";
    d.import_roster(NAM_HANG_2025, sheet.as_bytes(), false).expect("import");
    let cadres = d.list_cadres(None).expect("list");
    let ids: Vec<String> = cadres.iter().map(|c| c.id.clone()).collect();
    let id_of = |name: &str| {
        cadres
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.id.clone())
            .expect(name)
    };
    let (hoa, pao, minh) = (&id_of("Lò Thị Hoa"), &id_of("Giàng A Páo"), &id_of("Tòng Văn Minh"));
    let dates = ["2026-11-02", "2026-12-01"].map(|date| NewSession {
        date: date.into(),
        ..Default::default()
    });
    let course = d
        .create_course(NAM_HANG_2025, meta("Tập sự tại cơ quan cấp tỉnh"), dates.to_vec())
        .expect("course");
    for id in &ids {
        d.enrol(&course.id, id).expect("enrol");
    }
    for s in ["2026-11-02", "2026-12-01"] {
        d.mark_all(&course.id, s, MarkStatus::Present).expect("mark");
        d.mark(&course.id, s, minh, MarkStatus::Absent, None).expect("mark");
    }
    let monthly = || Some("2026-12".to_string());
    d.evaluate(&course.id, hoa, EvalKind::Monthly, monthly(), Some(8.5), None)
        .expect("hoa");
    d.evaluate(&course.id, pao, EvalKind::Monthly, monthly(), Some(4.0), None)
        .expect("pao");
    d.evaluate(&course.id, minh, EvalKind::Monthly, monthly(), None, Some(true))
        .expect("minh");
    // The device checks before it commits.
    for (kind, period, score, passed) in [
        (EvalKind::Monthly, monthly(), Some(11.0), None),
        (EvalKind::Monthly, None, Some(8.0), None),
        (EvalKind::Final, None, None, None),
        (EvalKind::Final, monthly(), Some(8.0), None),
    ] {
        assert!(d.evaluate(&course.id, hoa, kind, period, score, passed).is_err());
    }
    assert!(d
        .evaluate(&course.id, "notenrolled", EvalKind::Final, None, Some(9.0), None)
        .is_err());
    assert!(server.sync(&mut d).expect("sync").refused.is_empty());

    let report = server.report(&course.id);
    assert_eq!(report.evaluations.len(), 3);
    let row = |id: &str| report.completion.iter().find(|c| c.cadre == id).expect("row").clone();
    assert!(row(hoa).completed);
    assert!(row(pao).attendance_ok && !row(pao).evaluations_ok && !row(pao).completed);
    assert!(!row(minh).attendance_ok && !row(minh).completed);
    assert_eq!(
        d.show_course(&course.id).expect("show").completion,
        report.completion,
        "same rule on both sides"
    );

    let store = server.store();
    let first = diemdanh_server::certificates::issue(&store, &course.id, 2026, 1).expect("issue");
    assert_eq!((first.completed, first.newly_issued), (1, 1));
    assert_eq!(first.certificates[0].number, "03434/2026/00001");
    let again = diemdanh_server::certificates::issue(&store, &course.id, 2026, 2).expect("issue again");
    assert_eq!(again.newly_issued, 0, "idempotent");
    // Páo is evaluated again and passes: the next number; Hoa keeps hers.
    d.evaluate(&course.id, pao, EvalKind::Monthly, monthly(), Some(6.0), None)
        .expect("again");
    server.sync(&mut d).expect("sync");
    let third = diemdanh_server::certificates::issue(&store, &course.id, 2026, 3).expect("issue");
    assert_eq!(third.newly_issued, 1);
    let numbers: Vec<(&str, &str)> = third
        .certificates
        .iter()
        .map(|l| (l.number.as_str(), l.name.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        numbers,
        vec![("03434/2026/00001", "Lò Thị Hoa"), ("03434/2026/00002", "Giàng A Páo")]
    );
    let csv =
        diemdanh_server::certificates::to_csv(&diemdanh_server::certificates::list(&store, &course.id).expect("list"));
    assert!(String::from_utf8_lossy(&csv).contains("03434/2026/00002,Giàng A Páo"));

    // A bad evaluation that skipped the device's checks is refused by the server.
    let doc = sync_core::DocId::course(&NAM_HANG_2025.parse().expect("unit"), &course.id);
    let key = sync_core::docs::evaluation_key(hoa, "final");
    d.write_unchecked(&doc, &key, r#"{"kind":"final","score":12.0,"d":"x","t":1}"#)
        .expect("write");
    let stats = server.sync(&mut d).expect("sync");
    assert_eq!(stats.refused.len(), 1);
    assert!(stats.refused[0].reason.contains("score"), "{}", stats.refused[0].reason);
    assert_eq!(server.report(&course.id).evaluations.len(), 3);
}

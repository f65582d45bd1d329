"""The field scenario through the generated Python bindings, against a real server.

Run by client-ffi/tests/run-bindings-tests.sh, which starts `diemdanh-server serve` on
loopback and passes, in the environment:
  DIEMDANH_SERVER_URL   the server's URL (first line of its stdout)
  DIEMDANH_SERVER_DATA  its data folder (for `diemdanh-server device revoke --data`)
  DIEMDANH_SERVER_BIN   the diemdanh-server binary
  DIEMDANH_CODE_A, DIEMDANH_CODE_B   two one-time enrolment codes for unit 2025:03434
  DIEMDANH_TEST_TMP     a scratch folder for the tablets' homes (optional)
and puts the generated `diemdanh` module (with libdiemdanh.so beside it) on PYTHONPATH.

Plain Python, no test framework: the steps share one story (two tablets of one commune),
run in order, and stop at the first failure. The last line is "N passed, M failed".
"""

import os
import subprocess
import sys
import tempfile
import threading
import traceback

import diemdanh
from diemdanh import FieldClient, FieldError, MarkStatus, NewCadre, NewCourse, NewSession, Gender

UNIT = "2025:03434"
SERVER_URL = os.environ["DIEMDANH_SERVER_URL"]
SERVER_DATA = os.environ["DIEMDANH_SERVER_DATA"]
SERVER_BIN = os.environ["DIEMDANH_SERVER_BIN"]
CODES = (os.environ["DIEMDANH_CODE_A"], os.environ["DIEMDANH_CODE_B"])

tmp = tempfile.TemporaryDirectory(prefix="diemdanh-py-", dir=os.environ.get("DIEMDANH_TEST_TMP"))
ctx = {}


def expect_error(kind, fn, *args, **kwargs):
    """Calls fn and returns the FieldError of class `kind` it raised."""
    try:
        fn(*args, **kwargs)
    except kind as e:
        return e
    except FieldError as e:  # another variant: show which
        raise AssertionError(f"expected {kind.__name__}, got {e!r}")
    raise AssertionError(f"expected {kind.__name__}, got no error")


class Progress(diemdanh.SyncListener):
    """Counts exchanges; cancels at `cancel_at` (by returning False) if given."""

    def __init__(self, cancel_at=None, on_call=None):
        self.calls = []
        self.cancel_at = cancel_at
        self.on_call = on_call

    def on_progress(self, progress):
        self.calls.append(progress)
        if self.on_call:
            self.on_call()
        return self.cancel_at is None or len(self.calls) < self.cancel_at


def step_open_two_tablets():
    a = FieldClient.open(os.path.join(tmp.name, "tablet-a"))
    b = FieldClient.open(os.path.join(tmp.name, "tablet-b"))
    assert a.device_id() != b.device_id()
    st = a.status()
    assert st.unit is None and st.pending_changes == 0 and st.last_sync is None, st
    expect_error(FieldError.NotEnrolled, a.sync)
    ctx.update(a=a, b=b)


def step_enrol_both():
    a, b = ctx["a"], ctx["b"]
    # Nothing listens on port 1: offline, and the code is not spent.
    e = expect_error(FieldError.Offline, a.enroll, "http://127.0.0.1:1", CODES[0])
    assert "connection" in e.reason, e.reason
    expect_error(FieldError.InvalidInput, a.enroll, "not a url", CODES[0])
    for client, code in zip((a, b), CODES):
        enrolled = client.enroll(SERVER_URL, code)
        assert enrolled.unit == UNIT and enrolled.device_id == client.device_id(), enrolled
    expect_error(FieldError.InvalidInput, a.enroll, SERVER_URL, CODES[0])
    st = a.status()
    assert st.unit == UNIT and st.server_url == SERVER_URL, st


def step_record_offline():
    a = ctx["a"]
    hoa = a.add_cadre(UNIT, NewCadre(name="Lò Thị Hoa", gender=Gender.FEMALE, birth_year=1994, ethnicity="03"))
    dinh = a.add_cadre(UNIT, NewCadre(name="Vàng A Dình", gender=Gender.MALE, birth_year=1988))
    names = sorted(c.name for c in a.list_cadres())
    assert names == ["Lò Thị Hoa", "Vàng A Dình"], names
    course = a.create_course(
        UNIT,
        NewCourse(title="Bồi dưỡng kiến thức QLNN"),
        [NewSession(date="2026-12-01"), NewSession(date="2026-12-02")],
    )
    assert [s.date for s in course.sessions] == ["2026-12-01", "2026-12-02"], course
    a.enrol_trainees(course.id, [hoa, dinh])
    assert a.mark_all(course.id, "2026-12-01", MarkStatus.PRESENT) == 2
    a.mark(course.id, "2026-12-02", hoa, MarkStatus.LATE, note="xe hỏng")
    a.mark(course.id, "2026-12-02", dinh, MarkStatus.EXCUSED)
    e = expect_error(FieldError.InvalidInput, a.mark, course.id, "2027-01-01", hoa, MarkStatus.PRESENT)
    assert "Hoa" not in e.reason, e.reason
    bad = expect_error(FieldError.InvalidInput, a.add_cadre, UNIT, NewCadre(name="Lò Thị Hoa", gender=Gender.FEMALE, birth_year=1850))
    assert "Hoa" not in bad.reason and "Hoa" not in str(bad), bad
    assert a.status().pending_changes > 0
    [summary] = a.list_courses()
    assert (summary.sessions, summary.trainees) == (2, 2), summary
    ctx.update(course=course.id, s1=course.sessions[0].id, s2=course.sessions[1].id, hoa=hoa, dinh=dinh)


def step_sync_and_read_back():
    a, b = ctx["a"], ctx["b"]
    progress = Progress()
    report = a.sync(progress)
    assert report.requests >= 1 and report.bytes_up > 0 and report.bytes_down > 0, report
    assert report.docs_sent >= 3 and report.changes_sent >= 3 and report.seconds >= 0, report
    assert report.refused == [], report
    assert len(progress.calls) == report.requests, (progress.calls, report)
    st = a.status()
    assert st.pending_changes == 0 and st.last_sync, st
    got = b.sync()
    assert got.docs_received >= 3, got
    view_a, view_b = a.show_course(ctx["course"]), b.show_course(ctx["course"])
    marks = {(m.session_id, m.cadre_id): (m.status, m.note) for m in view_b.marks}
    assert marks == {
        (ctx["s1"], ctx["hoa"]): (MarkStatus.PRESENT, None),
        (ctx["s1"], ctx["dinh"]): (MarkStatus.PRESENT, None),
        (ctx["s2"], ctx["hoa"]): (MarkStatus.LATE, "xe hỏng"),
        (ctx["s2"], ctx["dinh"]): (MarkStatus.EXCUSED, None),
    }, marks
    assert view_a == view_b, (view_a, view_b)
    done = {c.cadre_id: (c.attended, c.completed) for c in view_b.completion}
    assert done == {ctx["hoa"]: (2, True), ctx["dinh"]: (1, False)}, done


def step_conflict_seen_and_resolved():
    a, b = ctx["a"], ctx["b"]
    course, s2, dinh = ctx["course"], ctx["s2"], ctx["dinh"]
    a.mark(course, s2, dinh, MarkStatus.ABSENT)
    b.mark(course, s2, dinh, MarkStatus.PRESENT)
    a.sync()
    b.sync()
    a.sync()
    for client in (a, b):
        [c] = client.conflicts()
        assert (c.course_id, c.session_id, c.cadre_id) == (course, s2, dinh), c
        assert sorted(v.name for v in c.values) == ["ABSENT", "PRESENT"], c
        assert len(client.show_course(course).conflicts) == 1
    a.resolve(course, s2, dinh, MarkStatus.EXCUSED)
    assert a.conflicts() == []
    a.sync()
    b.sync()
    assert b.conflicts() == []
    [m] = [m for m in b.show_course(course).marks if (m.session_id, m.cadre_id) == (s2, dinh)]
    assert m.status == MarkStatus.EXCUSED, m


def step_cancel_keeps_the_store_consistent():
    a, b = ctx["a"], ctx["b"]
    course, hoa = ctx["course"], ctx["hoa"]
    # Three documents with changes (roster, course, attendance), one per request.
    b.set_batch_limits(1, 1024 * 1024)
    tam = b.add_cadre(UNIT, NewCadre(name="Lò Văn Tâm", gender=Gender.MALE, birth_year=1990))
    s3 = b.add_session(course, NewSession(date="2026-12-03"))
    b.mark(course, s3.id, hoa, MarkStatus.PRESENT)
    before = b.status().pending_changes
    progress = Progress(cancel_at=1)
    expect_error(FieldError.Cancelled, b.sync, progress)
    assert len(progress.calls) == 1, progress.calls
    assert 0 < b.status().pending_changes < before, (b.status(), before)
    # cancel_sync from inside the listener (any thread may call it; it does not wait).
    progress = Progress(on_call=b.cancel_sync)
    expect_error(FieldError.Cancelled, b.sync, progress)
    assert len(progress.calls) == 1, progress.calls
    view = b.show_course(course)
    assert any(m.session_id == s3.id and m.status == MarkStatus.PRESENT for m in view.marks), view
    report = b.sync()
    assert report.requests >= 1, report
    assert b.status().pending_changes == 0
    a.sync()
    # The server may hold other scenarios' cadres of the same commune: look for ours.
    assert {ctx["hoa"], ctx["dinh"], tam} <= {c.id for c in a.list_cadres(UNIT)}
    assert a.show_course(course) == b.show_course(course)


def step_a_failing_listener_is_an_error_not_a_crash():
    b = ctx["b"]

    class Boom(diemdanh.SyncListener):
        def on_progress(self, progress):
            raise RuntimeError("a bug in the app's listener")

    e = expect_error(FieldError.Internal, b.sync, Boom())
    assert "listener" in e.reason and "bug in the app" not in e.reason, e.reason
    b.sync()  # the client goes on


def step_threads_share_one_client():
    b = ctx["b"]
    course, s3 = ctx["course"], b.show_course(ctx["course"]).sessions[2].id
    errors = []

    def mark_many(cadre, status):
        try:
            for _ in range(20):
                b.mark(course, s3, cadre, status)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=mark_many, args=(ctx["hoa"], MarkStatus.LATE)),
        threading.Thread(target=mark_many, args=(ctx["dinh"], MarkStatus.ABSENT)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads), errors
    marks = {m.cadre_id: m.status for m in b.show_course(course).marks if m.session_id == s3}
    assert marks == {ctx["hoa"]: MarkStatus.LATE, ctx["dinh"]: MarkStatus.ABSENT}, marks
    b.sync()


def step_bundles_when_there_is_no_network():
    a, b = ctx["a"], ctx["b"]
    course, s1, dinh = ctx["course"], ctx["s1"], ctx["dinh"]
    a.sync()
    b.sync()
    # Tablet B records with no network and carries its data on an SD card.
    b.mark(course, s1, dinh, MarkStatus.EXCUSED, note="ốm")
    to_district = os.path.join(tmp.name, "b-to-district.ddb")
    report = b.export_bundle(to_district)
    assert report.documents >= 1 and report.changes >= 1 and report.bytes > 0, report
    out = subprocess.run(
        [SERVER_BIN, "bundle", "import", to_district, "--data", SERVER_DATA],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert "accepted" in out.stdout, out.stdout
    # Back in signal, B learns the bundle arrived and sends no data again.
    assert b.sync().changes_sent == 0
    # The reverse: tablet A brought up to date by a file the server wrote for it.
    to_a = os.path.join(tmp.name, "server-to-a.dds")
    subprocess.run(
        [SERVER_BIN, "bundle", "export", "--device", a.device_id(), "--out", to_a, "--data", SERVER_DATA],
        capture_output=True, text=True, timeout=60, check=True,
    )
    a.import_bundle(to_a)
    marks = {(m.session_id, m.cadre_id): m.status for m in a.show_course(course).marks}
    assert marks[(s1, dinh)] == MarkStatus.EXCUSED, marks
    # A file made for another device, or altered, is refused.
    expect_error(FieldError.InvalidInput, b.import_bundle, to_a)
    with open(to_a, "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 0xFF]))
    expect_error(FieldError.InvalidInput, a.import_bundle, to_a)


def step_refused_after_revocation():
    a = ctx["a"]
    out = subprocess.run(
        [SERVER_BIN, "device", "revoke", "--data", SERVER_DATA, "--device", a.device_id()],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert "revoked" in out.stdout, out.stdout
    a.mark(ctx["course"], ctx["s1"], ctx["hoa"], MarkStatus.LEFT_EARLY)  # recording still works offline
    e = expect_error(FieldError.Unauthorized, a.sync)
    assert "revoked" in e.reason, e.reason
    st = a.status()
    assert st.pending_changes > 0, st  # the data stays on the tablet
    marks = {(m.session_id, m.cadre_id): m.status for m in a.show_course(ctx["course"]).marks}
    assert marks[(ctx["s1"], ctx["hoa"])] == MarkStatus.LEFT_EARLY


STEPS = [
    step_open_two_tablets,
    step_enrol_both,
    step_record_offline,
    step_sync_and_read_back,
    step_conflict_seen_and_resolved,
    step_cancel_keeps_the_store_consistent,
    step_a_failing_listener_is_an_error_not_a_crash,
    step_threads_share_one_client,
    step_bundles_when_there_is_no_network,
    step_refused_after_revocation,
]


def main():
    passed = 0
    for step in STEPS:
        try:
            step()
        except Exception:  # noqa: BLE001 - every failure is reported the same way
            print(f"FAIL {step.__name__}", flush=True)
            traceback.print_exc()
            break
        passed += 1
        print(f"ok   {step.__name__}", flush=True)
    # A step that did not run after a failure counts as failed.
    print(f"{passed} passed, {len(STEPS) - passed} failed")
    return 0 if passed == len(STEPS) else 1


if __name__ == "__main__":
    sys.exit(main())

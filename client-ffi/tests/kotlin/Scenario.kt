// The field scenario through the generated Kotlin bindings, on a JVM, against a real
// server: what an Android app does, minus the UI. Run by
// client-ffi/tests/run-bindings-tests.sh, which starts `diemdanh-server serve` on
// loopback and passes DIEMDANH_SERVER_URL, DIEMDANH_SERVER_DATA, DIEMDANH_SERVER_BIN,
// DIEMDANH_CODE_A and DIEMDANH_CODE_B (and DIEMDANH_TEST_TMP, a scratch folder) in the
// environment.
//
// The steps share one story (two tablets of one commune), run in order and stop at the
// first failure. The last line is "N passed, M failed".

import java.nio.file.Files
import java.util.concurrent.TimeUnit
import kotlin.concurrent.thread
import uniffi.diemdanh.*

const val UNIT = "2025:03434"

val serverUrl: String = env("DIEMDANH_SERVER_URL")
val serverData: String = env("DIEMDANH_SERVER_DATA")
val serverBin: String = env("DIEMDANH_SERVER_BIN")
val codes = listOf(env("DIEMDANH_CODE_A"), env("DIEMDANH_CODE_B"))

fun env(name: String): String = System.getenv(name) ?: error("$name is not set")

fun check(ok: Boolean, what: () -> Any?) {
    if (!ok) throw AssertionError(what().toString())
}

inline fun <reified E : FieldException> expectError(block: () -> Unit): E {
    try {
        block()
    } catch (e: FieldException) {
        if (e is E) return e
        throw AssertionError("expected ${E::class.simpleName}, got $e (${e.message})")
    }
    throw AssertionError("expected ${E::class.simpleName}, got no error")
}

/** Counts exchanges; cancels (returns false) at call `cancelAt` if given. */
class Progress(val cancelAt: Int? = null, val onCall: () -> Unit = {}) : SyncListener {
    val calls = mutableListOf<SyncProgress>()
    override fun onProgress(progress: SyncProgress): Boolean {
        calls.add(progress)
        onCall()
        return cancelAt == null || calls.size < cancelAt
    }
}

class Story {
    // Under the driver's work folder when it gives one, so a failed run leaves nothing behind.
    val home = (System.getenv("DIEMDANH_TEST_TMP")?.let { Files.createTempDirectory(java.nio.file.Path.of(it), "kt-") }
        ?: Files.createTempDirectory("diemdanh-kt-")).toFile()
    lateinit var a: FieldClient
    lateinit var b: FieldClient
    lateinit var course: String
    lateinit var s1: String
    lateinit var s2: String
    lateinit var hoa: String
    lateinit var dinh: String

    fun openTwoTablets() {
        a = FieldClient.open(home.resolve("tablet-a").path)
        b = FieldClient.open(home.resolve("tablet-b").path)
        check(a.deviceId() != b.deviceId()) { "device ids" }
        val st = a.status()
        check(st.unit == null && st.pendingChanges == 0uL && st.lastSync == null) { st }
        expectError<FieldException.NotEnrolled> { a.sync() }
    }

    fun enrolBoth() {
        val offline = expectError<FieldException.Offline> { a.enroll("http://127.0.0.1:1", codes[0]) }
        check("connection" in offline.reason) { offline.reason }
        expectError<FieldException.InvalidInput> { a.enroll("not a url", codes[0]) }
        for ((client, code) in listOf(a, b).zip(codes)) {
            val e = client.enroll(serverUrl, code)
            check(e.unit == UNIT && e.deviceId == client.deviceId()) { e }
        }
        expectError<FieldException.InvalidInput> { a.enroll(serverUrl, codes[0]) }
        check(a.status().unit == UNIT) { a.status() }
    }

    fun recordOffline() {
        hoa = a.addCadre(UNIT, NewCadre(name = "Lò Thị Hoa", gender = Gender.FEMALE, birthYear = 1994u, ethnicity = "03"))
        dinh = a.addCadre(UNIT, NewCadre(name = "Vàng A Dình", gender = Gender.MALE, birthYear = 1988u))
        check(a.listCadres().map { it.name }.sorted() == listOf("Lò Thị Hoa", "Vàng A Dình")) { a.listCadres() }
        val created = a.createCourse(
            UNIT,
            NewCourse(title = "Bồi dưỡng kiến thức QLNN"),
            listOf(NewSession(date = "2026-12-01"), NewSession(date = "2026-12-02")),
        )
        course = created.id
        s1 = created.sessions[0].id
        s2 = created.sessions[1].id
        a.enrolTrainees(course, listOf(hoa, dinh))
        check(a.markAll(course, "2026-12-01", MarkStatus.PRESENT) == 2u) { "mark all" }
        a.mark(course, "2026-12-02", hoa, MarkStatus.LATE, note = "xe hỏng")
        a.mark(course, "2026-12-02", dinh, MarkStatus.EXCUSED)
        val bad = expectError<FieldException.InvalidInput> {
            a.addCadre(UNIT, NewCadre(name = "Lò Thị Hoa", gender = Gender.FEMALE, birthYear = 1850u))
        }
        check("Hoa" !in bad.reason) { bad.reason }
        check(a.status().pendingChanges > 0uL) { a.status() }
    }

    fun syncAndReadBack() {
        val progress = Progress()
        val report = a.sync(progress)
        check(report.requests >= 1u && report.bytesUp > 0uL && report.bytesDown > 0uL) { report }
        check(report.docsSent >= 3u && report.changesSent >= 3uL && report.refused.isEmpty()) { report }
        check(progress.calls.size.toUInt() == report.requests) { progress.calls }
        val st = a.status()
        check(st.pendingChanges == 0uL && st.lastSync != null) { st }
        check(b.sync().docsReceived >= 3u) { "b received" }
        val view = b.showCourse(course)
        val marks = view.marks.associate { (it.sessionId to it.cadreId) to (it.status to it.note) }
        check(
            marks == mapOf(
                (s1 to hoa) to (MarkStatus.PRESENT to null),
                (s1 to dinh) to (MarkStatus.PRESENT to null),
                (s2 to hoa) to (MarkStatus.LATE to "xe hỏng"),
                (s2 to dinh) to (MarkStatus.EXCUSED to null),
            )
        ) { marks }
        check(view == a.showCourse(course)) { "views differ" }
    }

    fun conflictSeenAndResolved() {
        a.mark(course, s2, dinh, MarkStatus.ABSENT)
        b.mark(course, s2, dinh, MarkStatus.PRESENT)
        a.sync(); b.sync(); a.sync()
        for (client in listOf(a, b)) {
            val conflicts = client.conflicts()
            check(conflicts.size == 1) { conflicts }
            val c = conflicts[0]
            check(c.cadreId == dinh && c.sessionId == s2) { c }
            check(c.values.toSet() == setOf(MarkStatus.ABSENT, MarkStatus.PRESENT)) { c }
        }
        a.resolve(course, s2, dinh, MarkStatus.EXCUSED)
        a.sync(); b.sync()
        check(b.conflicts().isEmpty()) { b.conflicts() }
        val m = b.showCourse(course).marks.first { it.sessionId == s2 && it.cadreId == dinh }
        check(m.status == MarkStatus.EXCUSED) { m }
    }

    fun cancelKeepsTheStoreConsistent() {
        b.setBatchLimits(1u, 1024u * 1024u)
        val tam = b.addCadre(UNIT, NewCadre(name = "Lò Văn Tâm", gender = Gender.MALE, birthYear = 1990u))
        val s3 = b.addSession(course, NewSession(date = "2026-12-03"))
        b.mark(course, s3.id, hoa, MarkStatus.PRESENT)
        val before = b.status().pendingChanges
        val p1 = Progress(cancelAt = 1)
        expectError<FieldException.Cancelled> { b.sync(p1) }
        val after = b.status().pendingChanges
        check(p1.calls.size == 1 && after > 0uL && after < before) { "$before -> $after" }
        // A Cancel button: cancelSync from another thread while the sync runs.
        val p2 = Progress(onCall = { thread { b.cancelSync() }.join() })
        expectError<FieldException.Cancelled> { b.sync(p2) }
        check(b.showCourse(course).marks.any { it.sessionId == s3.id && it.status == MarkStatus.PRESENT }) { "s3" }
        b.sync()
        check(b.status().pendingChanges == 0uL) { b.status() }
        a.sync()
        // The server may hold other scenarios' cadres of the same commune: look for ours.
        check(a.listCadres(UNIT).map { it.id }.containsAll(listOf(hoa, dinh, tam))) { a.listCadres() }
        check(a.showCourse(course) == b.showCourse(course)) { "views differ" }
    }

    fun aFailingListenerIsAnErrorNotACrash() {
        val boom = object : SyncListener {
            override fun onProgress(progress: SyncProgress): Boolean = throw IllegalStateException("a bug in the app")
        }
        val e = expectError<FieldException.Internal> { b.sync(boom) }
        check("listener" in e.reason && "bug in the app" !in e.reason) { e.reason }
        b.sync() // the client goes on
    }

    fun threadsShareOneClient() {
        val s3 = b.showCourse(course).sessions[2].id
        val errors = java.util.Collections.synchronizedList(mutableListOf<Throwable>())
        val threads = listOf(hoa to MarkStatus.LATE, dinh to MarkStatus.ABSENT).map { (cadre, status) ->
            thread {
                try {
                    repeat(20) { b.mark(course, s3, cadre, status) }
                } catch (e: Throwable) {
                    errors.add(e)
                }
            }
        }
        threads.forEach { it.join(60_000) }
        check(errors.isEmpty() && threads.none { it.isAlive }) { errors }
        val marks = b.showCourse(course).marks.filter { it.sessionId == s3 }.associate { it.cadreId to it.status }
        check(marks == mapOf(hoa to MarkStatus.LATE, dinh to MarkStatus.ABSENT)) { marks }
        b.sync()
    }

    fun refusedAfterRevocation() {
        val proc = ProcessBuilder(serverBin, "device", "revoke", "--data", serverData, "--device", a.deviceId())
            .redirectErrorStream(true)
            .start()
        check(proc.waitFor(60, TimeUnit.SECONDS) && proc.exitValue() == 0) { "revoke failed" }
        a.mark(course, s1, hoa, MarkStatus.LEFT_EARLY) // still records offline
        val e = expectError<FieldException.Unauthorized> { a.sync() }
        check("revoked" in e.reason) { e.reason }
        check(a.status().pendingChanges > 0uL) { a.status() } // the data stays on the tablet
        a.close()
        b.close()
        home.deleteRecursively()
    }
}

fun main() {
    val story = Story()
    val steps: List<Pair<String, () -> Unit>> = listOf(
        "open two tablets" to story::openTwoTablets,
        "enrol both" to story::enrolBoth,
        "record offline" to story::recordOffline,
        "sync and read back" to story::syncAndReadBack,
        "conflict seen and resolved" to story::conflictSeenAndResolved,
        "cancel keeps the store consistent" to story::cancelKeepsTheStoreConsistent,
        "a failing listener is an error, not a crash" to story::aFailingListenerIsAnErrorNotACrash,
        "threads share one client" to story::threadsShareOneClient,
        "refused after revocation" to story::refusedAfterRevocation,
    )
    var passed = 0
    for ((name, step) in steps) {
        try {
            step()
        } catch (e: Throwable) {
            println("FAIL $name")
            e.printStackTrace(System.out)
            break
        }
        passed++
        println("ok   $name")
    }
    // A step that did not run after a failure counts as failed.
    println("$passed passed, ${steps.size - passed} failed")
    kotlin.system.exitProcess(if (passed == steps.size) 0 else 1)
}

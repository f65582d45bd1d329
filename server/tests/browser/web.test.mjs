// The web pages in a real browser: headless Chromium (Debian) driven by playwright-core.
// A real diemdanh-server on 127.0.0.1 (a free port), two `diemdanh` CLI devices that
// make a conflict; a province official signs in, sees the synced marks, resolves the
// conflict (and the devices get the resolution at their next sync), downloads the CSV
// and the XLSX reports (course, and unit report for a period) and reads their cells.
// Run by server/tests/browser/run.sh, which installs what is missing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';

const root = resolve(import.meta.dirname, '../../..');
const bin = process.env.DIEMDANH_BIN_DIR ?? join(root, 'target/debug');
const artefacts = join(root, 'target/browser-artifacts');
const require = createRequire(process.env.PLAYWRIGHT_CORE ?? join(root, 'target/browser/node_modules/'));
const { chromium } = require('playwright-core');

const PASSWORD = 'mật khẩu của tỉnh 2026';
const work = mkdtempSync(join(tmpdir(), 'diemdanh-browser-'));
const data = join(work, 'server');
let server;
let base;
let browser;
let course;
let cadre;

// Reads every sheet of an XLSX file with Python's standard library (zipfile + ElementTree):
// {sheet name: rows of cells}, strings as strings, numbers as numbers. No npm package.
const XLSX_CELLS = `
import json, re, sys, zipfile
import xml.etree.ElementTree as ET
ns = {'m': 'http://schemas.openxmlformats.org/spreadsheetml/2006/main',
      'r': 'http://schemas.openxmlformats.org/officeDocument/2006/relationships'}
z = zipfile.ZipFile(sys.argv[1])
shared = []
if 'xl/sharedStrings.xml' in z.namelist():
    for si in ET.fromstring(z.read('xl/sharedStrings.xml')).findall('m:si', ns):
        shared.append(''.join(t.text or '' for t in si.iter('{%s}t' % ns['m'])))
rels = {r.get('Id'): r.get('Target') for r in ET.fromstring(z.read('xl/_rels/workbook.xml.rels'))}
out = {}
for sheet in ET.fromstring(z.read('xl/workbook.xml')).find('m:sheets', ns):
    target = rels[sheet.get('{%s}id' % ns['r'])].lstrip('/')
    path = target if target.startswith('xl/') else 'xl/' + target
    rows = []
    for row in ET.fromstring(z.read(path)).iter('{%s}row' % ns['m']):
        cells = {}
        for c in row.findall('m:c', ns):
            col = 0
            for ch in re.match('[A-Z]+', c.get('r')).group(0):
                col = col * 26 + ord(ch) - 64
            v = c.find('m:v', ns)
            t = c.get('t')
            if t == 's':
                value = shared[int(v.text)]
            elif t == 'inlineStr':
                value = ''.join(x.text or '' for x in c.iter('{%s}t' % ns['m']))
            elif v is not None:
                value = float(v.text)
            else:
                value = None
            cells[col - 1] = value
        width = max(cells) + 1 if cells else 0
        rows.append([cells.get(i) for i in range(width)])
    out[sheet.get('name')] = rows
print(json.dumps(out, ensure_ascii=False))
`;
const xlsxCells = (file) => JSON.parse(execFileSync('python3', ['-c', XLSX_CELLS, file], { encoding: 'utf8', timeout: 30_000 }));

function run(cmd, args, input) {
  return execFileSync(join(bin, cmd), args, { input, encoding: 'utf8', timeout: 60_000 });
}
const device = (home, ...args) => run('diemdanh', ['--home', join(work, home), ...args]);
const code = (unit) => run('diemdanh-server', ['enroll-code', '--data', data, '--unit', unit]).trim().split('\n').pop();

async function startServer() {
  server = spawn(join(bin, 'diemdanh-server'), ['serve', '--data', data, '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn', NO_COLOR: '1' },
  });
  const started = Date.now();
  let out = '';
  for await (const chunk of server.stdout) {
    out += chunk;
    const m = out.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
    if (m) return m[1];
    if (Date.now() - started > 30_000) break;
  }
  throw new Error(`the server did not start: ${out}`);
}

before(async () => {
  mkdirSync(artefacts, { recursive: true });
  run('diemdanh-server', ['user', 'add', '--data', data, '--name', 'laichau', '--unit', '2025:12', '--password-stdin'], PASSWORD + '\n');
  run('diemdanh-server', ['user', 'add', '--data', data, '--name', 'namtin', '--unit', '2025:03460', '--password-stdin'], PASSWORD + '\n');
  base = await startServer();
  // Two tablets of Xã Nậm Hàng.
  device('tab-a', 'enroll', '--server', base, '--code', code('2025:03434'));
  device('tab-b', 'enroll', '--server', base, '--code', code('2025:03434'));
  cadre = JSON.parse(device('tab-a', 'cadre', 'add', '--unit', '2025:03434', '--name', 'Lò Thị Hoa', '--gender', 'female',
    '--birth-year', '1994', '--ethnicity', '03', '--json')).id;
  course = JSON.parse(device('tab-a', 'course', 'create', '--unit', '2025:03434', '--title', 'Bồi dưỡng kiến thức QLNN',
    '--sessions', '2026-12-01,2026-12-02', '--json')).id;
  device('tab-a', 'course', 'enrol', '--course', course, '--cadre', cadre);
  device('tab-a', 'mark', '--course', course, '--session', '2026-12-01', '--all', '--status', 'present');
  device('tab-a', 'sync');
  device('tab-b', 'sync');
  // Offline on both tablets, two different statuses for the same trainee and day.
  device('tab-a', 'mark', '--course', course, '--session', '2026-12-02', '--cadre', cadre, '--status', 'late');
  device('tab-b', 'mark', '--course', course, '--session', '2026-12-02', '--cadre', cadre, '--status', 'absent');
  device('tab-a', 'sync');
  device('tab-b', 'sync');
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    // Playwright runs it headless with a fresh profile of its own (the --user-data-dir
    // of TOOLCHAIN.md); the rest keeps Chromium off the closed network.
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  rmSync(work, { recursive: true, force: true });
});

async function signIn(name, lang = 'vi') {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1024, height: 768 } });
  const page = await context.newPage();
  await page.goto(`${base}/courses/${course}?lang=${lang}`);
  assert.match(page.url(), /\/login/, 'a page without an account sends to sign-in');
  await page.getByLabel(lang === 'en' ? 'Account name' : 'Tên tài khoản').fill(name);
  await page.getByLabel(lang === 'en' ? 'Password' : 'Mật khẩu').fill(PASSWORD);
  await page.keyboard.press('Enter');
  await page.waitForURL(`${base}/`);
  return { context, page };
}

test('a province official sees synced marks, resolves a conflict, the tablets get it', async () => {
  const { context, page } = await signIn('laichau');
  assert.equal(await page.getAttribute('html', 'lang'), 'vi');
  await page.screenshot({ path: join(artefacts, 'overview.png'), fullPage: true });
  // Drill down province -> commune -> course.
  await page.getByRole('link', { name: 'Xã Nậm Hàng' }).first().click();
  await page.getByRole('link', { name: 'Bồi dưỡng kiến thức QLNN' }).click();
  assert.equal(new URL(page.url()).pathname, `/courses/${course}`);
  const row = page.getByRole('row', { name: /Lò Thị Hoa/ });
  await assert.doesNotReject(row.waitFor());
  const cells = row.getByRole('cell');
  assert.equal(await cells.nth(0).getAttribute('class'), 'pr', 'the mark tablet A synced (present)');
  assert.match(await cells.nth(1).getAttribute('class'), /\bcf\b/, 'the two tablets disagree');
  await page.screenshot({ path: join(artefacts, 'course.png'), fullPage: true });

  await page.getByRole('navigation').getByRole('link', { name: 'Xung đột' }).click();
  await page.screenshot({ path: join(artefacts, 'conflicts.png'), fullPage: true });
  await page.getByLabel('Giá trị đúng').first().selectOption('excused');
  await page.getByRole('button', { name: 'Ghi' }).first().click();
  await page.getByRole('status').waitFor();
  assert.match(await page.getByRole('status').innerText(), /lần đồng bộ tới/);
  assert.match(await page.content(), /Không có xung đột nào/);

  // Both tablets receive the server's resolution at their next sync.
  for (const tab of ['tab-a', 'tab-b']) {
    device(tab, 'sync');
    const shown = JSON.parse(device(tab, 'show', 'course', course, '--json'));
    assert.deepEqual(shown.conflicts, [], tab);
    const second = shown.sessions.find((s) => s.date === '2026-12-02').id;
    const mark = shown.marks.find((m) => m.cadre === cadre && m.session === second);
    assert.equal(mark.status, 'excused', tab);
  }

  // Download the course's CSV and read its cells.
  await page.goto(`${base}/courses/${course}`);
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: /CSV/ }).click(),
  ]);
  const file = join(artefacts, 'course.csv');
  await download.saveAs(file);
  const csv = readFileSync(file, 'utf8');
  assert.equal(csv.charCodeAt(0), 0xfeff, 'a BOM so Excel reads UTF-8');
  const lines = csv.slice(1).trim().split('\n').map((l) => l.trim().split(','));
  assert.deepEqual(lines[0], ['Học viên', '2026-12-01', '2026-12-02', 'Tỷ lệ (%)', 'Hoàn thành']);
  assert.deepEqual(lines[1], ['Lò Thị Hoa', 'có mặt', 'vắng có phép', '50.0', 'Chưa đạt']);

  // Download the course report as XLSX and read its cells: the trainee, each day's
  // status as the tablets synced it (and as resolved), the ratio as a number.
  const [xlsx] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'Tải báo cáo lớp (Excel)' }).click(),
  ]);
  assert.equal(xlsx.suggestedFilename(), 'Báo cáo lớp Bồi dưỡng kiến thức QLNN.xlsx', 'the Vietnamese file name');
  const xlsxFile = join(artefacts, 'course.xlsx');
  await xlsx.saveAs(xlsxFile);
  const book = xlsxCells(xlsxFile);
  assert.deepEqual(Object.keys(book), ['Điểm danh', 'Buổi học', 'Xung đột chờ xử lý', 'Thông tin lớp']);
  const [head, hoa] = book['Điểm danh'];
  assert.deepEqual(head, ['STT', 'Mã học viên', 'Họ và tên', '01/12/2026', '02/12/2026', 'Số buổi dự', 'Tổng số buổi',
    'Tỷ lệ dự (%)', 'Hoàn thành']);
  assert.deepEqual(hoa, [1, cadre, 'Lò Thị Hoa', 'Có mặt', 'Vắng có phép', 1, 2, 50, 'Chưa đạt']);
  assert.equal(book['Xung đột chờ xử lý'].length, 1, 'no conflict left: the header row only');

  // The unit report of the commune for December, from the downloads page's form.
  await page.getByRole('navigation').getByRole('link', { name: 'Tải về' }).click();
  await page.screenshot({ path: join(artefacts, 'downloads.png'), fullPage: true });
  await page.getByLabel('Đơn vị').first().selectOption('2025:03434');
  await page.getByLabel('Từ ngày').fill('2026-12-01');
  await page.getByLabel('Đến ngày').fill('2026-12-31');
  const [unitReport] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Tải báo cáo đơn vị (Excel)' }).click(),
  ]);
  assert.equal(unitReport.suggestedFilename(), 'Báo cáo Xã Nậm Hàng từ 2026-12-01 đến 2026-12-31.xlsx');
  const unitFile = join(artefacts, 'unit.xlsx');
  await unitReport.saveAs(unitFile);
  const [uhead, totals] = xlsxCells(unitFile)['Tổng hợp'];
  assert.equal(uhead[0], 'Đơn vị');
  // Xã Nậm Hàng, 1 course, 1 trainee, 1 place, 2 trainee-sessions, 1 attended, 50%, 1 finished, 0 completed.
  assert.deepEqual(totals, ['Xã Nậm Hàng', '2026-12-01', '2026-12-31', 1, 1, 1, 2, 1, 50, 1, 0]);

  // Devices page: both tablets with their last sync; issue a code with its QR image.
  await page.getByRole('navigation').getByRole('link', { name: 'Thiết bị' }).click();
  assert.equal(await page.getByRole('button', { name: /^Thu hồi/ }).count(), 2);
  await page.getByLabel('Đơn vị').selectOption('2025:03434');
  await page.getByRole('button', { name: 'Cấp mã' }).click();
  const text = (await page.locator('.code').innerText()).trim();
  assert.match(text, /^[0-9A-Z]{5}(-[0-9A-Z]{1,5}){5}$/);
  assert.equal(await page.locator('div[role=img] svg').count(), 1, 'the QR code');
  await page.screenshot({ path: join(artefacts, 'code.png'), fullPage: true });
  // The code the page showed enrols a third tablet.
  device('tab-c', 'enroll', '--server', base, '--code', text);
  await context.close();
});

test('English on request; another commune cannot open this course', async () => {
  const { context, page } = await signIn('namtin', 'en');
  assert.equal(await page.getAttribute('html', 'lang'), 'en');
  assert.ok(await page.getByRole('button', { name: 'Sign out' }).isVisible());
  const resp = await page.goto(`${base}/courses/${course}`);
  assert.equal(resp.status(), 404);
  assert.doesNotMatch(await page.content(), /Lò Thị Hoa/);
  await page.screenshot({ path: join(artefacts, 'not-found-en.png') });
  // Keyboard only: tab to the sign-out button and press it.
  await page.goto(`${base}/`);
  await page.getByRole('button', { name: 'Sign out' }).focus();
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/login/);
  await context.close();
});

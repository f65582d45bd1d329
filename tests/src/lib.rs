//! Shared harness for the cross-crate tests and the benchmark: a real `diemdanh-server`
//! (axum on a real loopback socket, port 0, its own SQLite store in a temp folder) and
//! devices as library clients over the real HTTP transport.

pub mod netem;
pub mod pgtest;
pub mod rawhttp;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use diemdanh::HttpTransport;
use diemdanh_server::api::{canonical_code, hash_secret, new_code, now};
use diemdanh_server::{SqliteStore, Store};
use sync_core::device::Device;
use sync_core::report::CourseReport;

pub const NAM_HANG: &str = "2025:03434";
pub const HUA_BUM: &str = "2025:03460";

/// A server running in this process on 127.0.0.1:0 until dropped.
pub struct TestServer {
    pub url: String,
    pub data: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(data: &Path) -> TestServer {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data).expect("open server store"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                diemdanh_server::serve_until(listener, store, async {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
            });
        });
        let addr = addr_rx.recv().expect("server address");
        TestServer {
            url: format!("http://{addr}"),
            data: data.to_path_buf(),
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// A second handle on the store, as the admin commands open it.
    pub fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.data).expect("open store")
    }

    pub fn enroll_code(&self, unit: &str) -> String {
        let code = new_code();
        self.store()
            .create_enroll_code(unit, &hash_secret(&canonical_code(&code)), now() + 86_400)
            .expect("code");
        code
    }

    pub fn revoke(&self, device: &str) {
        assert!(self.store().revoke_device(device, now()).expect("revoke"));
    }

    pub fn report(&self, course: &str) -> CourseReport {
        let rows = self
            .store()
            .course_rows(course)
            .expect("rows")
            .expect("course on server");
        CourseReport::assemble(rows)
    }

    pub fn transport(&self) -> HttpTransport {
        HttpTransport::new(&self.url).expect("transport")
    }

    /// Opens a device in `home` and enrols it for `unit`.
    pub fn enrolled_device(&self, home: &Path, unit: &str) -> Device {
        let mut d = Device::open(home).expect("open device");
        let code = self.enroll_code(unit);
        d.enroll(&mut self.transport(), &self.url, &code).expect("enrol");
        d
    }

    pub fn sync(&self, device: &mut Device) -> sync_core::Result<sync_core::device::SyncStats> {
        device.sync(&mut self.transport(), &mut |_| true)
    }

    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// The bearer token a device keeps in its store (`HOME/device.sqlite`), for tests that
/// speak to the server with bodies of their own.
pub fn device_token(home: &Path) -> String {
    let conn = rusqlite::Connection::open(home.join("device.sqlite")).expect("device store");
    conn.query_row("SELECT value FROM meta WHERE key = 'token'", [], |r| r.get(0))
        .expect("the device is enrolled")
}

/// The compact body of an exchange that pushes nothing, from cursor 0.
pub fn empty_exchange() -> Vec<u8> {
    sync_core::protocol::SyncRequest {
        cursor: 0,
        docs: Vec::new(),
        pending_changes: 0,
        app_version: String::new(),
        max_response_bytes: 0,
    }
    .encode_compact()
}

/// Path of a workspace binary built next to the running test (`cargo build --bins`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// What the in-process link does to the next exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Delivered both ways.
    None,
    /// The request never reaches the server.
    DropRequest,
    /// The server processes the request; the answer is lost.
    DropResponse,
    /// The request reaches the server twice; the device sees the second answer.
    Duplicate,
    /// Before this request, an old request of this device is replayed to the server.
    ReplayOld,
}

/// A transport that hands requests to the server's router in this process (no socket),
/// with faults chosen per exchange by `next_fault`. Used by the seeded simulation.
pub struct InProcessTransport {
    router: axum::Router,
    rt: Arc<tokio::runtime::Runtime>,
    pub next_fault: Box<dyn FnMut() -> Fault + Send>,
    sent: Vec<(String, Vec<u8>, Option<String>)>,
    pub log: Vec<Fault>,
}

impl InProcessTransport {
    pub fn new(store: Arc<dyn Store>, rt: Arc<tokio::runtime::Runtime>) -> Self {
        InProcessTransport {
            router: diemdanh_server::app(store),
            rt,
            next_fault: Box::new(|| Fault::None),
            sent: Vec::new(),
            log: Vec::new(),
        }
    }

    fn deliver(
        &self,
        path: &str,
        content_type: &str,
        bearer: Option<&str>,
        body: Vec<u8>,
    ) -> sync_core::protocol::Reply {
        use tower::ServiceExt;
        let mut req = axum::http::Request::post(path).header("content-type", content_type);
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(axum::body::Body::from(body)).expect("request");
        let router = self.router.clone();
        self.rt.block_on(async move {
            let resp = router.oneshot(req).await.expect("infallible router");
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .expect("body")
                .to_bytes()
                .to_vec();
            sync_core::protocol::Reply { status, body }
        })
    }
}

impl sync_core::protocol::Transport for InProcessTransport {
    fn post(
        &mut self,
        path: &str,
        content_type: &str,
        bearer: Option<&str>,
        body: Vec<u8>,
    ) -> Result<sync_core::protocol::Reply, String> {
        let fault = (self.next_fault)();
        self.log.push(fault);
        let token = bearer.map(str::to_string);
        match fault {
            Fault::DropRequest => return Err("link dropped the request".into()),
            Fault::ReplayOld => {
                if let Some((p, b, t)) = self.sent.first().cloned() {
                    let _ = self.deliver(&p, content_type, t.as_deref(), b);
                }
            }
            _ => {}
        }
        self.sent.push((path.to_string(), body.clone(), token.clone()));
        if self.sent.len() > 8 {
            self.sent.remove(1);
        }
        let mut reply = self.deliver(path, content_type, token.as_deref(), body.clone());
        match fault {
            Fault::DropResponse => Err("link dropped the response".into()),
            Fault::Duplicate => {
                reply = self.deliver(path, content_type, token.as_deref(), body);
                Ok(reply)
            }
            _ => Ok(reply),
        }
    }
}

//! Shared harness for the cross-crate tests and the benchmark: a real `diemdanh-server`
//! (axum on a real loopback socket, port 0, its own SQLite store in a temp folder) and
//! devices as library clients over the real HTTP transport.

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

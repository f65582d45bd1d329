//! HTTPS end to end on 127.0.0.1: `diemdanh-server serve --tls-cert --tls-key` with a
//! certificate from a private CA made here (rcgen), a device that enrols with
//! `diemdanh enroll --ca-cert` and then syncs trusting that CA, devices that do not trust
//! it refused at the handshake, bad certificate files refused with a clear error, and a
//! graceful stop on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use diemdanh::HttpTransport;
use diemdanh_tests::{bin, NAM_HANG};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use sync_core::device::Device;
use sync_core::Error;

/// A private CA and a server certificate it signed for 127.0.0.1, as PEM files.
struct Pki {
    ca_pem: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} district CA"));
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca cert")
}

fn make_pki(dir: &Path) -> Pki {
    let ca = make_ca("Nam Nhun");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("leaf params");
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "diemdanh district server");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");
    let pki = Pki {
        ca_pem: ca.pem(),
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, &pki.ca_pem).expect("write ca");
    // The chain as an administrator would install it: leaf, then the CA.
    std::fs::write(
        &pki.cert,
        format!("{}\n{}\n", leaf.pem().trim_end(), ca.pem().trim_end()),
    )
    .expect("write cert");
    std::fs::write(&pki.key, leaf_key.serialize_pem()).expect("write key");
    pki
}

/// `diemdanh-server serve` over HTTPS, killed on drop if it did not stop by itself.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_tls(data: &Path, cert: &Path, key: &Path) -> (Server, String) {
    let mut child = Command::new(bin("diemdanh-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("DIEMDANH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let mut line = String::new();
    let stdout = child.stdout.as_mut().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("first line");
    let url = line.trim().rsplit(' ').next().expect("url").to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");
    (Server(child), url)
}

fn diemdanh(home: &Path, args: &[&str]) -> Output {
    Command::new(bin("diemdanh"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("run diemdanh")
}

fn enroll_code(data: &Path) -> String {
    let out = Command::new(bin("diemdanh-server"))
        .args(["enroll-code", "--unit", NAM_HANG, "--data"])
        .arg(data)
        .output()
        .expect("enroll-code");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("code")
        .trim()
        .to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_device_enrols_and_syncs_over_https_trusting_the_district_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = make_pki(dir.path());
    let data = dir.path().join("server");
    let (mut server, url) = serve_tls(&data, &pki.cert, &pki.key);

    // A device that trusts only the public web roots is refused at the handshake, and
    // stays unenrolled: the code is still good for the next try.
    let code = enroll_code(&data);
    let stranger = dir.path().join("stranger");
    let out = diemdanh(&stranger, &["enroll", "--server", &url, "--code", &code]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate is not trusted"), "{}", stderr(&out));

    // The same code with the district CA: enrolled, and the CA is remembered.
    let home = dir.path().join("tablet");
    let ca = pki.ca.to_str().expect("utf8");
    let out = diemdanh(&home, &["enroll", "--server", &url, "--code", &code, "--ca-cert", ca]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = diemdanh(
        &home,
        &[
            "cadre",
            "add",
            "--unit",
            NAM_HANG,
            "--name",
            "Lò Thị Hoa",
            "--gender",
            "female",
            "--birth-year",
            "1994",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // No --ca-cert here: sync uses the CA stored at enrolment.
    let out = diemdanh(&home, &["sync", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(stats["docs_sent"], 1, "{stats}");
    let out = diemdanh(&home, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["pending_changes"], 0, "{status}");

    // SIGTERM: the server stops by itself, cleanly, saying so.
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let mut rest = String::new();
    server
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut rest)
        .expect("read");
    assert!(rest.contains("diemdanh-server stopped"), "{rest}");
}

#[test]
fn a_device_trusting_another_ca_is_refused_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = make_pki(dir.path());
    let data = dir.path().join("server");
    let (_server, url) = serve_tls(&data, &pki.cert, &pki.key);

    // Enrolled properly, then the stored CA is not the server's (a forged server in
    // between would look the same from the device).
    let home = dir.path().join("tablet");
    let mut device = Device::open(&home).expect("open");
    let mut t = HttpTransport::with_ca(&url, Some(&pki.ca_pem)).expect("transport");
    device
        .enroll_trusting(&mut t, &url, &enroll_code(&data), Some(&pki.ca_pem))
        .expect("enrol over https");
    assert_eq!(device.ca_cert().expect("meta").as_deref(), Some(pki.ca_pem.as_str()));
    device
        .add_cadre(NAM_HANG, crate::common::cadre("Vàng A Dình"))
        .expect("record offline");

    let other = make_ca("Muong Te").pem();
    let mut wrong = HttpTransport::with_ca(&url, Some(&other)).expect("transport");
    match device.sync(&mut wrong, &mut |_| true) {
        Err(Error::Offline(reason)) => assert!(reason.contains("certificate is not trusted"), "{reason}"),
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    assert!(
        device.status().expect("status").pending_changes > 0,
        "the record is kept"
    );

    // With the right CA the same device syncs everything.
    let mut right = HttpTransport::with_ca(&url, device.ca_cert().expect("meta").as_deref()).expect("transport");
    device.sync(&mut right, &mut |_| true).expect("sync over https");
    assert_eq!(device.status().expect("status").pending_changes, 0);
}

#[test]
fn bad_certificate_files_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = make_pki(dir.path());
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, KeyPair::generate().expect("key").serialize_pem()).expect("write");
    let missing = dir.path().join("missing.pem");
    let data = dir.path().join("server");
    let serve = |cert: &Path, key: &Path| {
        Command::new(bin("diemdanh-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdout(Stdio::null())
            .output()
            .expect("run serve")
    };
    let cases: [(&Path, &Path, &str); 4] = [
        (&missing, &pki.key, "cannot read the TLS certificate"),
        (&pki.key, &pki.key, "holds no `-----BEGIN CERTIFICATE` block"),
        (&pki.cert, &pki.cert, "holds no `-----BEGIN PRIVATE KEY` block"),
        (&pki.cert, &other_key, "cannot be used together"),
    ];
    for (cert, key, expected) in cases {
        let out = serve(cert, key);
        assert_eq!(out.status.code(), Some(1), "{expected}");
        let err = stderr(&out);
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
        assert!(!err.contains("BEGIN PRIVATE KEY-----\n"), "no key material in errors");
    }
    // --tls-cert alone is an error, not a plain-HTTP server (the key could have come
    // from DIEMDANH_TLS_KEY or the settings file, so it is checked after they are read).
    let out = Command::new(bin("diemdanh-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&pki.cert)
        .env_remove("DIEMDANH_TLS_KEY")
        .env_remove("DIEMDANH_CONFIG")
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--tls-key"), "{}", stderr(&out));
}

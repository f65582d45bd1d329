//! The one HTTP transport for devices (the field command line and the app bindings):
//! ureq on rustls, one agent per device so connections are reused across the requests
//! of a sync. Timeouts are generous because EDGE links are slow, not dead.
//!
//! A district server may use a certificate from its own private CA: the device then
//! trusts exactly that CA ([`HttpTransport::with_ca`], the PEM given at enrolment and
//! remembered in the device store), instead of the public web roots.
//!
//! A failed exchange is described in a few plain words ([`describe`]): the person
//! holding the tablet and the app both read that text, so it carries no driver dump.

use std::time::Duration;

use sync_core::protocol::{self, Reply, Transport};

/// Largest reply read into memory.
const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

pub struct HttpTransport {
    base: String,
    agent: ureq::Agent,
    /// The same configuration with no idle connections kept: one connection per exchange.
    fresh_agent: ureq::Agent,
    fresh: bool,
    /// Reply bytes read before the last exchange failed.
    partial: u64,
    /// Those bytes, until the device takes them to resume the reply after them.
    partial_body: Vec<u8>,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport").field("base", &self.base).finish()
    }
}

impl HttpTransport {
    pub fn new(base: &str) -> Result<HttpTransport, String> {
        HttpTransport::with_ca(base, None)
    }

    /// A transport that trusts only the CA certificate(s) in `ca_pem` for https://
    /// servers (the public web roots when `None`).
    pub fn with_ca(base: &str, ca_pem: Option<&str>) -> Result<HttpTransport, String> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("server URL `{base}` must start with http:// or https://"));
        }
        let roots = match ca_pem {
            Some(pem) => Some(ca_certificates(pem)?),
            None => None,
        };
        // No `user-agent`, `accept` or `accept-encoding`: 60 bytes on every request that
        // serve nothing here (the bodies are compressed already, and versioned).
        let agent = |idle: Option<usize>| -> ureq::Agent {
            let mut config = ureq::Agent::config_builder()
                .user_agent(ureq::config::AutoHeaderValue::None)
                .accept(ureq::config::AutoHeaderValue::None)
                .accept_encoding(ureq::config::AutoHeaderValue::None)
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(20)))
                .timeout_global(Some(Duration::from_secs(300)));
            if let Some(idle) = idle {
                config = config.max_idle_connections(idle).max_idle_connections_per_host(idle);
            }
            if let Some(roots) = &roots {
                config = config.tls_config(
                    ureq::tls::TlsConfig::builder()
                        .root_certs(ureq::tls::RootCerts::new_with_certs(roots))
                        .build(),
                );
            }
            config.build().into()
        };
        Ok(HttpTransport {
            base,
            agent: agent(None),
            fresh_agent: agent(Some(0)),
            fresh: false,
            partial: 0,
            partial_body: Vec::new(),
        })
    }
}

impl Transport for HttpTransport {
    fn post(&mut self, path: &str, content_type: &str, bearer: Option<&str>, body: Vec<u8>) -> Result<Reply, String> {
        self.partial = 0;
        self.partial_body.clear();
        let agent = if self.fresh { &self.fresh_agent } else { &self.agent };
        let mut req = agent.post(format!("{}{}", self.base, path));
        // A sync body names itself (kind, version): no content type is sent for it.
        if content_type != protocol::CONTENT_TYPE {
            req = req.header("Content-Type", content_type);
        }
        if let Some(token) = bearer {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let mut resp = req.send(&body[..]).map_err(|e| describe(&e))?;
        sync_core::failpoint::hit("device.after_send");
        let status = resp.status().as_u16();
        // Read by hand so a cut reply still tells how much of it arrived.
        let mut reader = resp.body_mut().with_config().limit(MAX_REPLY_BYTES).reader();
        let mut body = Vec::new();
        let mut buf = [0u8; 8192];
        // Bounded by the reply: every turn reads at least one byte or ends.
        loop {
            match std::io::Read::read(&mut reader, &mut buf) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e) => {
                    self.partial = body.len() as u64;
                    // Only an answer's bytes are worth going on from.
                    if status == 200 {
                        self.partial_body = body;
                    }
                    return Err(describe(&ureq::Error::Io(e)));
                }
            }
        }
        Ok(Reply { status, body })
    }

    fn partial_reply_bytes(&self) -> u64 {
        self.partial
    }

    fn take_partial_reply(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.partial_body)
    }

    fn fresh_connections(&mut self, fresh: bool) {
        self.fresh = fresh;
    }
}

/// The certificates of a PEM text: at least one, each one parsed.
pub fn ca_certificates(pem: &str) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem.as_bytes()) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(_) => return Err("the CA certificate is not valid PEM".into()),
        }
    }
    if certs.is_empty() {
        return Err("the CA file holds no certificate (expected a `-----BEGIN CERTIFICATE-----` block)".into());
    }
    Ok(certs)
}

/// Why nothing (or only part of a reply) came back, in plain words.
pub fn describe(e: &ureq::Error) -> String {
    use ureq::Error as E;
    match e {
        E::Timeout(t) => format!("the connection timed out ({t})"),
        E::HostNotFound => "the server's address was not found (no network, or a wrong URL)".into(),
        E::ConnectionFailed => "the connection to the server failed".into(),
        // rustls reports a refused handshake (a certificate from a CA this device does
        // not trust, a wrong name) as invalid data on the stream.
        E::Io(io) if io.kind() == std::io::ErrorKind::InvalidData && io.to_string().contains("certificate") => {
            "the secure connection (TLS) to the server failed: its certificate is not trusted by this device (check the CA certificate given at enrolment)".into()
        }
        E::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            "the secure connection (TLS) to the server failed, or its reply was not valid".into()
        }
        E::Io(io) => format!("the connection failed: {}", io.kind()),
        E::Tls(_) => "the secure connection (TLS) to the server failed".into(),
        E::BodyExceedsLimit(n) => format!("the server's reply is larger than {n} bytes"),
        E::BadUri(_) | E::Http(_) => "the server URL is not valid".into(),
        E::TooManyRedirects | E::RedirectFailed => "the server redirected too often or badly".into(),
        E::Protocol(_) => "the server's reply was not valid HTTP".into(),
        _ => "the exchange with the server failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_described_plainly() {
        // Port 1 on loopback has no listener: the connection is refused at once.
        let mut t = HttpTransport::new("http://127.0.0.1:1").expect("transport");
        let err = t
            .post("/x", "application/json", None, vec![])
            .expect_err("nothing listens");
        assert_eq!(err, "the connection failed: connection refused");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_plainly() {
        let err = HttpTransport::with_ca("https://127.0.0.1:1", Some("not a certificate")).expect_err("no cert");
        assert!(err.contains("holds no certificate"), "{err}");
    }

    #[test]
    fn a_url_without_scheme_is_refused() {
        assert!(HttpTransport::new("127.0.0.1:8080").is_err());
    }
}

//! The one HTTP transport for devices (the field command line and the app bindings):
//! ureq on rustls, one agent per device so connections are reused across the requests
//! of a sync. Timeouts are generous because EDGE links are slow, not dead.

use std::time::Duration;

use sync_core::protocol::{Reply, Transport};

/// Largest reply read into memory.
const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

pub struct HttpTransport {
    base: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport").field("base", &self.base).finish()
    }
}

impl HttpTransport {
    pub fn new(base: &str) -> Result<HttpTransport, String> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("server URL `{base}` must start with http:// or https://"));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Ok(HttpTransport { base, agent })
    }
}

impl Transport for HttpTransport {
    fn post(&mut self, path: &str, content_type: &str, bearer: Option<&str>, body: Vec<u8>) -> Result<Reply, String> {
        let mut req = self
            .agent
            .post(format!("{}{}", self.base, path))
            .header("Content-Type", content_type);
        if let Some(token) = bearer {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let mut resp = req.send(&body[..]).map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok(Reply { status, body })
    }
}

//! The settings of `diemdanh-server serve`, from four places in this order of precedence:
//! command-line flags, `DIEMDANH_*` environment variables, a TOML file (`--config FILE`),
//! defaults. Every setting has all four; docs/OPERATIONS.md has the table.
//!
//! One struct, [`Layer`], is both the clap arguments (flag and variable: clap takes a
//! flag over the variable) and the file's schema, so a setting cannot exist in one place
//! and be missing in another. A key the file does not know is an error that names it
//! (a misspelt `shutdown_timout` must not silently leave the default in force). Paths in
//! the file are relative to the file's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event (the request's span fields included), for a log shipper.
    Json,
}

impl LogFormat {
    fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The log filter when none is set: the server's own lines at info, libraries' warnings.
pub const DEFAULT_LOG: &str = "info,tower_http=warn";

/// One source of settings: each one unset unless this source sets it.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Address and port to serve on [default: 127.0.0.1:8080].
    #[arg(long, env = "DIEMDANH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Folder of the SQLite store (created if missing) [default: diemdanh-data].
    #[arg(long, env = "DIEMDANH_DATA")]
    pub data: Option<PathBuf>,
    /// A PostgreSQL database instead of the folder (`postgres://user@host/db`), shared
    /// by any number of server nodes.
    #[arg(long, env = "DIEMDANH_DATABASE")]
    pub database: Option<String>,
    /// Most connections this process opens to PostgreSQL [default: 8].
    #[arg(long, env = "DIEMDANH_DB_CONNECTIONS")]
    pub db_connections: Option<u32>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs tls_key.
    #[arg(long, env = "DIEMDANH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of tls_cert.
    #[arg(long, env = "DIEMDANH_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Log lines as `text` or `json` [default: text].
    #[arg(long, env = "DIEMDANH_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to log, as a tracing filter [default: info,tower_http=warn].
    #[arg(long = "log", env = "DIEMDANH_LOG")]
    pub log: Option<String>,
    /// How long a shutdown (SIGTERM, Ctrl-C) waits for requests in flight before it
    /// cuts them: `30s`, `2m`, `500ms` or seconds [default: 30s].
    #[arg(long, env = "DIEMDANH_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub shutdown_timeout: Option<Duration>,
    /// Longest a request may take, body upload included [default: 120s].
    #[arg(long, env = "DIEMDANH_REQUEST_TIMEOUT", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub request_timeout: Option<Duration>,
    /// Largest request body accepted, in bytes [default: 8388608].
    #[arg(long, env = "DIEMDANH_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Sync requests per second per device, sustained [default: 10].
    #[arg(long, env = "DIEMDANH_SYNC_PER_SECOND")]
    pub sync_per_second: Option<u32>,
    /// Sync requests one device may send at once [default: 60].
    #[arg(long, env = "DIEMDANH_SYNC_BURST")]
    pub sync_burst: Option<u32>,
    /// Enrolment attempts per minute for the whole node [default: 60].
    #[arg(long, env = "DIEMDANH_ENROLL_PER_MINUTE")]
    pub enroll_per_minute: Option<u32>,
    /// A bearer token /metrics then asks for (prefer the variable or the file: a flag
    /// shows in `ps`) [default: none, /metrics open].
    #[arg(long, env = "DIEMDANH_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub database: Option<String>,
    pub db_connections: u32,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub log_format: LogFormat,
    pub log: String,
    pub shutdown_timeout: Duration,
    pub limits: Limits,
    pub metrics_token: Option<String>,
}

/// Reads a settings file. Its errors name the file and, for a bad key or value, the key
/// and line.
pub fn read_file(path: &Path) -> Result<Layer, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the settings file {}: {e}", path.display()))?;
    let mut layer: Layer =
        toml::from_str(&text).map_err(|e| format!("the settings file {} is not valid: {e}", path.display()))?;
    // Paths in the file are relative to the file's folder, not to where the server starts.
    let base = path.parent().unwrap_or(Path::new(""));
    for p in [&mut layer.data, &mut layer.tls_cert, &mut layer.tls_key]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok(layer)
}

impl Settings {
    /// `cli` (flags, and variables clap read for unset flags) over `file` over defaults.
    pub fn resolve(cli: Layer, file: Layer) -> Result<Settings, String> {
        let defaults = Limits::default();
        let tls = match (cli.tls_cert.or(file.tls_cert), cli.tls_key.or(file.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err("tls_cert and tls_key go together (--tls-cert and --tls-key, their DIEMDANH_TLS_* variables or the settings file): set both or neither".into())
            }
        };
        let shutdown_timeout = cli
            .shutdown_timeout
            .or(file.shutdown_timeout)
            .unwrap_or(crate::tls::DRAIN);
        if shutdown_timeout > Duration::from_secs(3600) {
            return Err("shutdown_timeout must be at most 1 hour".into());
        }
        let request_timeout = cli
            .request_timeout
            .or(file.request_timeout)
            .unwrap_or(defaults.request_timeout);
        if request_timeout < Duration::from_secs(1) || request_timeout > Duration::from_secs(3600) {
            return Err("request_timeout must be between 1 second and 1 hour".into());
        }
        let max_body_bytes = cli
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(defaults.max_body_bytes);
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&max_body_bytes) {
            return Err("max_body_bytes must be between 65536 (64 KiB) and 1073741824 (1 GiB)".into());
        }
        let positive = |name: &str, v: Option<u32>, d: u32| match v.unwrap_or(d) {
            0 => Err(format!("{name} must be at least 1")),
            n => Ok(n),
        };
        let limits = Limits {
            sync_per_second: positive(
                "sync_per_second",
                cli.sync_per_second.or(file.sync_per_second),
                defaults.sync_per_second,
            )?,
            sync_burst: positive("sync_burst", cli.sync_burst.or(file.sync_burst), defaults.sync_burst)?,
            enroll_per_minute: positive(
                "enroll_per_minute",
                cli.enroll_per_minute.or(file.enroll_per_minute),
                defaults.enroll_per_minute,
            )?,
            request_timeout,
            max_body_bytes,
        };
        let db_connections = positive("db_connections", cli.db_connections.or(file.db_connections), 8)?;
        let metrics_token = cli.metrics_token.or(file.metrics_token).filter(|t| !t.is_empty());
        if metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err("metrics_token must be at least 16 characters".into());
        }
        let log = cli.log.or(file.log).unwrap_or_else(|| DEFAULT_LOG.to_string());
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| format!("log `{log}` is not a log filter: {e}"))?;
        Ok(Settings {
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data: cli.data.or(file.data).unwrap_or_else(|| PathBuf::from("diemdanh-data")),
            database: cli.database.or(file.database),
            db_connections,
            tls,
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            log,
            shutdown_timeout,
            limits,
            metrics_token,
        })
    }

    /// The settings as a TOML file would set them, the metrics token hidden
    /// (`serve --print-config`). A PostgreSQL URL may hold a password: hidden too.
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml_string(s);
        let path = |p: &Path| q(&p.display().to_string());
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
        line("listen", q(&self.listen.to_string()));
        line("data", path(&self.data));
        if let Some(db) = &self.database {
            line("database", q(&hide_password(db)));
        }
        line("db_connections", self.db_connections.to_string());
        if let Some((cert, key)) = &self.tls {
            line("tls_cert", path(cert));
            line("tls_key", path(key));
        }
        line("log_format", q(self.log_format.as_str()));
        line("log", q(&self.log));
        line("shutdown_timeout", q(&format_duration(self.shutdown_timeout)));
        line("request_timeout", q(&format_duration(self.limits.request_timeout)));
        line("max_body_bytes", self.limits.max_body_bytes.to_string());
        line("sync_per_second", self.limits.sync_per_second.to_string());
        line("sync_burst", self.limits.sync_burst.to_string());
        line("enroll_per_minute", self.limits.enroll_per_minute.to_string());
        if self.metrics_token.is_some() {
            line("metrics_token", q("(set, hidden)"));
        }
        out
    }
}

fn toml_string(s: &str) -> String {
    // serde_json's string escaping is valid TOML basic-string escaping.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `postgres://user:secret@host/db` shown as `postgres://user:***@host/db`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// `30s`, `500ms`, `2m`, `1h`, or a whole number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write 30s, 500ms, 2m, 1h or a number of seconds"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" | "min" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        other => Err(format!("`{other}` in `{s}` is not a unit of time: use ms, s, m or h")),
    }
}

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(n) => Ok(Some(Duration::from_secs(n))),
        Raw::Text(s) => parse_duration(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Layer, String> {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("server.toml");
        std::fs::write(&path, text).expect("write");
        read_file(&path).map(|mut l| {
            // Keep the test independent of the temporary folder's name.
            l.data = l
                .data
                .map(|d| d.strip_prefix(dir.path()).map(Path::to_path_buf).unwrap_or(d));
            l
        })
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let f = file("listen = \"127.0.0.1:9001\"\nshutdown_timeout = \"5s\"\nlog_format = \"json\"\ndata = \"store\"\nsync_burst = 7\n")
            .expect("valid");
        let cli = Layer {
            listen: Some("127.0.0.1:9002".parse().expect("addr")),
            ..Layer::default()
        };
        let s = Settings::resolve(cli, f).expect("resolve");
        assert_eq!(s.listen.port(), 9002, "flag over file");
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5), "file over default");
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.data, PathBuf::from("store"), "relative to the file's folder");
        assert_eq!(s.limits.sync_burst, 7);
        assert_eq!(s.limits.sync_per_second, Limits::default().sync_per_second, "default");
        assert_eq!(s.limits.request_timeout, Duration::from_secs(120));
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it() {
        let err = file("listen = \"127.0.0.1:9001\"\nshutdown_timout = \"5s\"\n").expect_err("unknown key");
        assert!(err.contains("shutdown_timout"), "{err}");
        assert!(err.contains("server.toml"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_that_say_what_is_wrong() {
        let err = file("shutdown_timeout = \"5 parsecs\"\n").expect_err("bad duration");
        assert!(err.contains("parsecs"), "{err}");
        let err = file("listen = \"not an address\"\n").expect_err("bad address");
        assert!(err.contains("listen") || err.contains("address"), "{err}");
        let half_tls = Layer {
            tls_cert: Some("cert.pem".into()),
            ..Layer::default()
        };
        let err = Settings::resolve(half_tls, Layer::default()).expect_err("half tls");
        assert!(err.contains("tls_key"), "{err}");
        let zero = Layer {
            sync_per_second: Some(0),
            ..Layer::default()
        };
        assert!(Settings::resolve(zero, Layer::default())
            .expect_err("zero")
            .contains("sync_per_second"));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5d").is_err());
        let f = file("shutdown_timeout = 12\n").expect("seconds as a number");
        assert_eq!(f.shutdown_timeout, Some(Duration::from_secs(12)));
    }

    #[test]
    fn printed_settings_hide_secrets_and_read_back() {
        let cli = Layer {
            metrics_token: Some("a-long-enough-secret-token".into()),
            database: Some("postgres://app:hunter2@127.0.0.1/db".into()),
            ..Layer::default()
        };
        let s = Settings::resolve(cli, Layer::default()).expect("resolve");
        let text = s.to_toml();
        assert!(!text.contains("a-long-enough-secret-token"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let back: Layer = toml::from_str(&text).expect("the printed settings are a valid file");
        assert_eq!(back.shutdown_timeout, Some(s.shutdown_timeout));
        assert_eq!(back.listen, Some(s.listen));
    }
}

//! The audit stream (contract §6): one JSON line per decision, to `audit.path` or stderr.
//! Never a whole token: incoming tokens are named by `jti` or SHA-256.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// One decision.
#[derive(Debug, Default, Serialize)]
pub struct AuditRecord<'a> {
    pub time: String,
    pub event: &'static str,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    /// The requested target(s): a string when one, else a list (like `aud`).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub target: serde_json::Value,
    /// Instead of `target` for a request refused before its subject token verified:
    /// SHA-256 (hex) of the JSON array of the requested targets, so an unauthenticated
    /// caller cannot write what it likes, at any length, into the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<&'a str>,
    /// The issuer's kind, and the claims that kind says are worth recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// The cloud native credentials were requested from (`aws`, `gcp`, `azure`); its
    /// answer is never recorded, its refusal is in `reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<&'a str>,
}

enum Sink {
    Stderr,
    File(Mutex<File>),
}

pub struct AuditLog {
    sink: Sink,
}

impl AuditLog {
    pub fn stderr() -> Self {
        AuditLog { sink: Sink::Stderr }
    }

    pub fn file(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditLog {
            sink: Sink::File(Mutex::new(f)),
        })
    }

    pub fn record(&self, rec: &AuditRecord) {
        self.write_line(serde_json::to_vec(rec));
    }

    /// Any other audited event (admin changes), as one JSON line.
    pub fn record_value(&self, value: &serde_json::Value) {
        self.write_line(serde_json::to_vec(value));
    }

    fn write_line(&self, line: serde_json::Result<Vec<u8>>) {
        let Ok(mut line) = line else {
            return;
        };
        line.push(b'\n');
        let result = match &self.sink {
            Sink::Stderr => std::io::stderr().lock().write_all(&line),
            Sink::File(f) => f.lock().unwrap_or_else(|e| e.into_inner()).write_all(&line),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "writing the audit log failed");
        }
    }
}

/// RFC 3339 UTC time with milliseconds.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_900_000_123);
        assert_eq!(rfc3339(t), "2026-11-28T21:06:40.123Z");
    }

    #[test]
    fn writes_one_json_line_per_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/audit.jsonl");
        let log = AuditLog::file(&path).expect("open");
        log.record(&AuditRecord {
            outcome: "allow",
            event: "token_exchange",
            rule: Some("r"),
            ..Default::default()
        });
        log.record(&AuditRecord {
            outcome: "deny",
            event: "token_exchange",
            reason: Some("x"),
            ..Default::default()
        });
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["outcome"], "allow");
        assert_eq!(lines[1]["reason"], "x");
    }
}

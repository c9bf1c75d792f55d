//! The slice's audit trail: one JSON object per line, fsynced before the call returns.
//!
//! `append` returning `Ok` means the record is on disk; callers treat an error as "fail
//! closed" (the held action is denied). The hash-chained, signed log replaces the writer
//! behind this same interface.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write audit log {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl AuditLog {
    /// Opens (creating if needed, mode 0600) the log for appending.
    ///
    /// # Errors
    /// [`AuditError::Open`] naming the path.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let open_err = |source| AuditError::Open { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode_0600()
            .open(path)
            .map_err(open_err)?;
        Ok(Self { path: path.to_owned(), file: Arc::new(Mutex::new(file)) })
    }

    /// Appends one record of `kind` with `fields`, durably.
    ///
    /// # Errors
    /// [`AuditError::Write`] when the record could not be written and synced.
    pub fn append(&self, kind: &str, correlation_id: &str, fields: Value) -> Result<(), AuditError> {
        let mut record = json!({
            "time_ms": crate::unix_ms(),
            "kind": kind,
            "correlation_id": correlation_id,
        });
        if let (Some(obj), Value::Object(extra)) = (record.as_object_mut(), fields) {
            obj.extend(extra);
        }
        let mut line = record.to_string();
        line.push('\n');
        let write_err = |source| AuditError::Write { path: self.path.clone(), source };
        // A poisoned lock only means another append panicked mid-write; the file is still
        // usable and append-only, so keep going rather than lose records.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(line.as_bytes()).map_err(write_err)?;
        file.sync_data().map_err(write_err)
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_one_json_object_per_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        log.append("attempt", "req-1", json!({"pid": 7})).expect("append");
        log.append("decision", "req-1", json!({"verdict": "allow"})).expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["kind"], "attempt");
        assert_eq!(lines[0]["pid"], 7);
        assert_eq!(lines[1]["correlation_id"], "req-1");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).expect("meta").permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unwritable_location_is_an_open_error() {
        let err = AuditLog::open(Path::new("/proc/airlock/audit.jsonl")).err().expect("fails");
        assert!(err.to_string().starts_with("cannot open audit log /proc/airlock/audit.jsonl"));
    }
}

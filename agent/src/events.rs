//! Decodes ring buffer records into owned, validated events.

use agent_common::{EventHeader, EventKind, ExecEvent, HoldKey, InodeKey, ARGV_BUF_LEN};

use crate::procinfo::split_nul;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("ring buffer record has unknown kind {0}")]
    UnknownKind(u32),
}

/// An exec the kernel is holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldExec {
    pub key: HoldKey,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub ktime_ns: u64,
    pub comm: String,
    pub binary: InodeKey,
    /// The resolved path of the file being executed.
    pub path: String,
    /// The name the caller passed to execve.
    pub filename: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exec(HeldExec),
}

/// Decodes one ring buffer record.
///
/// # Errors
/// [`DecodeError`] for records that are too short or of an unknown kind.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; EventHeader is plain integers, any bit pattern is valid.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    match EventKind::from_raw(header.kind) {
        Some(EventKind::ExecHeld) => {
            if bytes.len() < size_of::<ExecEvent>() {
                return Err(DecodeError::Short(bytes.len()));
            }
            // SAFETY: as above, for the whole ExecEvent.
            let raw: ExecEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            Ok(Event::Exec(exec(&raw)))
        }
        None => Err(DecodeError::UnknownKind(header.kind)),
    }
}

fn exec(raw: &ExecEvent) -> HeldExec {
    let h = &raw.header;
    let argv_len = (raw.argv_len as usize).min(ARGV_BUF_LEN);
    HeldExec {
        key: h.hold,
        tgid: h.hold.tgid,
        tid: h.tid,
        uid: h.uid,
        gid: h.gid,
        cgroup_id: h.cgroup_id,
        ktime_ns: h.ktime_ns,
        comm: c_string(&h.comm),
        binary: raw.binary,
        path: c_string(&raw.path),
        filename: c_string(&raw.filename),
        argv: split_nul(&raw.argv[..argv_len]),
        argv_truncated: raw.argv_truncated != 0,
    }
}

fn c_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(argv: &[u8]) -> Vec<u8> {
        // SAFETY: all-zero is a valid ExecEvent (plain integers and byte arrays).
        let mut raw: ExecEvent = unsafe { std::mem::zeroed() };
        raw.header.kind = EventKind::ExecHeld as u32;
        raw.header.hold = HoldKey::exec(42, InodeKey::new(7, 99));
        raw.header.tid = 43;
        raw.header.comm[..4].copy_from_slice(b"bash");
        raw.binary = InodeKey::new(7, 99);
        raw.path[..12].copy_from_slice(b"/usr/bin/aws");
        raw.argv[..argv.len()].copy_from_slice(argv);
        raw.argv_len = argv.len() as u32;
        raw.argc = 3;
        // SAFETY: viewing a plain-old-data struct as bytes.
        unsafe { std::slice::from_raw_parts((&raw as *const ExecEvent).cast::<u8>(), size_of::<ExecEvent>()) }
            .to_vec()
    }

    #[test]
    fn decodes_an_exec_record() {
        let Event::Exec(e) = decode(&record(b"aws\0s3\0cp\0")).expect("decodes");
        assert_eq!(e.tgid, 42);
        assert_eq!(e.tid, 43);
        assert_eq!(e.comm, "bash");
        assert_eq!(e.path, "/usr/bin/aws");
        assert_eq!(e.argv, ["aws", "s3", "cp"]);
        assert_eq!(e.binary, InodeKey::new(7, 99));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[0; 10]), Err(DecodeError::Short(10)));
        let mut bad = record(b"");
        bad[0] = 77;
        assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(77)));
        let full = record(b"x\0");
        assert_eq!(decode(&full[..100]), Err(DecodeError::Short(100)));
    }
}

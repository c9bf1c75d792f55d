//! Kernel structure offsets read from the running kernel's BTF (DESIGN.md §5).
//!
//! Rust BPF has no CO-RE relocations and these layouts move between kernels, so the loader
//! looks each member up here and hands the numbers to the programs as frozen constants.

use std::path::Path;

use agent_common::KernelOffsets;
use btf_rs::{Btf, Type};

/// Where the kernel publishes its own type information.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF from {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(&'static str),
    #[error("kernel BTF: struct `{strukt}` has no member `{member}`")]
    NoMember {
        strukt: &'static str,
        member: &'static str,
    },
    #[error("kernel BTF: `{strukt}.{member}` is a bitfield or not byte-aligned")]
    Unaligned {
        strukt: &'static str,
        member: &'static str,
    },
    #[error("kernel BTF is malformed: {0}")]
    Malformed(#[from] btf_rs::Error),
}

/// Reads every offset the programs need from the BTF at `path`.
///
/// # Errors
/// [`BtfError::Read`] when the file is missing or unreadable; `NoStruct`/`NoMember` when the
/// kernel lacks a structure the gates rely on (an unsupported kernel).
pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let reader = Reader { btf: &btf };
    Ok(KernelOffsets {
        bprm_file: reader.offset("linux_binprm", "file")?,
        bprm_filename: reader.offset("linux_binprm", "filename")?,
        file_f_path: reader.offset("file", "f_path")?,
        file_f_inode: reader.offset("file", "f_inode")?,
        inode_i_ino: reader.offset("inode", "i_ino")?,
        inode_i_sb: reader.offset("inode", "i_sb")?,
        sb_s_dev: reader.offset("super_block", "s_dev")?,
        tp_fork_child_pid: reader.offset("trace_event_raw_sched_process_fork", "child_pid")?,
        socket_type: reader.offset("socket", "type")?,
        file_f_flags: reader.offset("file", "f_flags")?,
        file_f_mode: reader.offset("file", "f_mode")?,
        task_tgid: reader.offset("task_struct", "tgid")?,
        task_flags: reader.offset("task_struct", "flags")?,
        msghdr_msg_name: reader.offset("msghdr", "msg_name")?,
        msghdr_msg_namelen: reader.offset("msghdr", "msg_namelen")?,
        inode_i_nlink: reader.offset("inode", "i_nlink")?,
        dentry_d_inode: reader.offset("dentry", "d_inode")?,
        dentry_d_parent: reader.offset("dentry", "d_parent")?,
        dentry_d_name: reader.offset("dentry", "d_name")?,
        socket_file: reader.offset("socket", "file")?,
    })
}

struct Reader<'a> {
    btf: &'a Btf,
}

impl Reader<'_> {
    /// Byte offset of `member` in `struct strukt`, looking inside anonymous unions/structs.
    fn offset(&self, strukt: &'static str, member: &'static str) -> Result<u32, BtfError> {
        let ty = self
            .btf
            .resolve_types_by_name(strukt)
            .map_err(|_| BtfError::NoStruct(strukt))?
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
            .ok_or(BtfError::NoStruct(strukt))?;
        let bits = self
            .find_member(&ty, member, 0, 0)?
            .ok_or(BtfError::NoMember { strukt, member })?;
        if bits % 8 != 0 {
            return Err(BtfError::Unaligned { strukt, member });
        }
        Ok(bits / 8)
    }

    fn find_member(
        &self,
        ty: &Type,
        wanted: &str,
        base_bits: u32,
        depth: u32,
    ) -> Result<Option<u32>, BtfError> {
        let (Type::Struct(s) | Type::Union(s)) = ty else {
            return Ok(None);
        };
        // Anonymous nesting in the kernel is shallow; the bound only guards malformed BTF.
        if depth > 8 {
            return Ok(None);
        }
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == wanted {
                if m.bitfield_size().is_some_and(|size| size != 0) {
                    return Ok(Some(u32::MAX)); // rejected as unaligned by the caller
                }
                return Ok(Some(base_bits + m.bit_offset()));
            }
            if name.is_empty() {
                let inner = self.skip_modifiers(self.btf.resolve_chained_type(m)?)?;
                if let Some(found) =
                    self.find_member(&inner, wanted, base_bits + m.bit_offset(), depth + 1)?
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    fn skip_modifiers(&self, mut ty: Type) -> Result<Type, BtfError> {
        for _ in 0..16 {
            match &ty {
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) => {
                    let next = match ty.as_btf_type() {
                        Some(inner) => self.btf.resolve_chained_type(inner)?,
                        None => return Ok(ty),
                    };
                    ty = next;
                }
                _ => return Ok(ty),
            }
        }
        Ok(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads this machine's own kernel BTF: the offsets must exist and look like pointers
    /// inside their structs. (Different kernels give different numbers, which is the point.)
    #[test]
    fn offsets_from_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            panic!("{VMLINUX_BTF} missing: airlock needs a kernel built with BTF");
        }
        let off = kernel_offsets(path).expect("offsets");
        for (name, value) in [
            ("bprm_file", off.bprm_file),
            ("file_f_inode", off.file_f_inode),
            ("inode_i_sb", off.inode_i_sb),
            ("inode_i_ino", off.inode_i_ino),
        ] {
            assert_eq!(
                value % 8,
                0,
                "{name} should be pointer-aligned, got {value}"
            );
        }
        assert!(off.file_f_path < 512 && off.file_f_inode < 512);
        assert_ne!(off.file_f_path, off.file_f_inode);
        // The tracepoint record starts with the 8-byte common header.
        assert!(off.tp_fork_child_pid >= 8);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = kernel_offsets(Path::new("/nonexistent/vmlinux")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("cannot read kernel BTF from /nonexistent/vmlinux")
        );
    }
}

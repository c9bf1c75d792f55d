//! Checks that the host can run airlock at all, before anything is loaded.
//!
//! The product promise is "never half-attached": a host that cannot hold actions must refuse
//! to start with one clear sentence rather than run a gate that silently lets things through.

use std::path::Path;

/// Where the kernel lists its active LSMs (securityfs).
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    #[error(
        "airlock must run as root (it loads BPF programs and stops processes); effective uid is {0}"
    )]
    NotRoot(u32),
    #[error(
        "this kernel does not run the BPF LSM (active LSMs: {active}); boot with `lsm=` including `bpf`, e.g. lsm={active},bpf"
    )]
    NoBpfLsm { active: String },
    #[error(
        "cannot read {LSM_LIST} ({reason}); mount securityfs (mount -t securityfs none /sys/kernel/security) or use a kernel with BPF LSM"
    )]
    LsmListUnreadable { reason: String },
    #[error("kernel {release} is too old: airlock needs Linux 5.15 or newer with BPF LSM")]
    KernelTooOld { release: String },
    #[error(
        "this kernel publishes no BTF at /sys/kernel/btf/vmlinux; airlock needs CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
}

/// What [`check`] looks at; fields are injectable so the logic is testable without root.
pub struct HostFacts {
    pub euid: u32,
    pub kernel_release: String,
    pub lsm_list: Result<String, String>,
    pub has_btf: bool,
}

impl HostFacts {
    /// Reads the facts from the running host.
    pub fn read() -> Self {
        let kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            euid: nix::unistd::geteuid().as_raw(),
            kernel_release,
            lsm_list: std::fs::read_to_string(LSM_LIST).map_err(|e| e.to_string()),
            has_btf: Path::new(crate::btf::VMLINUX_BTF).exists(),
        }
    }
}

/// Returns the first reason this host cannot run airlock.
///
/// # Errors
/// The first failing [`PreflightError`], in the order a user can fix them.
pub fn check(facts: &HostFacts) -> Result<(), PreflightError> {
    if facts.euid != 0 {
        return Err(PreflightError::NotRoot(facts.euid));
    }
    if !kernel_at_least(&facts.kernel_release, 5, 15) {
        return Err(PreflightError::KernelTooOld {
            release: facts.kernel_release.clone(),
        });
    }
    let lsms = facts
        .lsm_list
        .as_ref()
        .map_err(|reason| PreflightError::LsmListUnreadable {
            reason: reason.clone(),
        })?;
    if !lsms.trim().split(',').any(|l| l == "bpf") {
        return Err(PreflightError::NoBpfLsm {
            active: lsms.trim().to_owned(),
        });
    }
    if !facts.has_btf {
        return Err(PreflightError::NoBtf);
    }
    Ok(())
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let got_major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let got_minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (got_major, got_minor) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> HostFacts {
        HostFacts {
            euid: 0,
            kernel_release: "6.1.0-47-amd64".into(),
            lsm_list: Ok("lockdown,capability,landlock,yama,apparmor,bpf".into()),
            has_btf: true,
        }
    }

    #[test]
    fn accepts_a_bpf_lsm_host() {
        assert_eq!(check(&good()), Ok(()));
    }

    type Breakage = fn(&mut HostFacts);

    #[test]
    fn each_refusal_is_one_sentence() {
        let cases: [(Breakage, &str); 5] = [
            (|f| f.euid = 1000, "must run as root"),
            (|f| f.kernel_release = "5.10.0-28-amd64".into(), "too old"),
            (
                |f| f.lsm_list = Ok("lockdown,capability,apparmor".into()),
                "does not run the BPF LSM",
            ),
            (
                |f| f.lsm_list = Err("No such file or directory".into()),
                "cannot read /sys/kernel/security/lsm",
            ),
            (|f| f.has_btf = false, "publishes no BTF"),
        ];
        for (spoil, expected) in cases {
            let mut facts = good();
            spoil(&mut facts);
            let msg = check(&facts).expect_err(expected).to_string();
            assert!(msg.contains(expected), "{msg}");
            assert!(!msg.contains('\n'));
        }
    }

    #[test]
    fn bpf_must_be_a_whole_entry() {
        let mut facts = good();
        facts.lsm_list = Ok("capability,notbpf".into());
        assert!(check(&facts).is_err());
    }

    #[test]
    fn kernel_versions_compare_numerically() {
        assert!(kernel_at_least("5.15.0", 5, 15));
        assert!(kernel_at_least("6.12.107+deb12-amd64", 5, 15));
        assert!(!kernel_at_least("5.4.0", 5, 15));
        assert!(!kernel_at_least("garbage", 5, 15));
    }
}

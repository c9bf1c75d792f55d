//! `aya::Pod` impls so the daemon can use these types as map keys and values.

use crate::{AllowKey, DnsKey, HoldKey, HostName, InodeKey, KernelOffsets, NetKey};

// SAFETY: all three are `#[repr(C)]`, made only of integers, with explicit padding fields,
// so every bit pattern is valid and there are no uninitialised bytes.
unsafe impl aya::Pod for InodeKey {}
// SAFETY: as above.
unsafe impl aya::Pod for HoldKey {}
// SAFETY: as above.
unsafe impl aya::Pod for KernelOffsets {}
// SAFETY: as above.
unsafe impl aya::Pod for NetKey {}
// SAFETY: as above (packed, no padding at all).
unsafe impl aya::Pod for AllowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for DnsKey {}
// SAFETY: as above (a byte array).
unsafe impl aya::Pod for HostName {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::Settings {}

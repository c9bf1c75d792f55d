//! `cargo xtask`: toolchain bootstrap (`setup`) and the QEMU kernel matrix (`vm`).
//!
//! A library as well as a binary so the test and demo runners can call [`vm::run_in_guest`]
//! and use the same [`paths`].

pub mod bench;
pub mod paths;
pub mod setup;
pub mod util;
pub mod vm;

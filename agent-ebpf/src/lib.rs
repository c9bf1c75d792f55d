//! Empty on purpose: the programs live in the `agent-ebpf` binary target (src/main.rs).
#![no_std]

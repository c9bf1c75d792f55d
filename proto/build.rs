//! Compiles `airlock/v1/airlock.proto` with the vendored `protoc`, so building needs no
//! system protobuf compiler, and writes the file descriptor set tonic-reflection serves.

use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().context("locating vendored protoc")?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR not set")?);

    let mut config = prost_build::Config::new();
    // Handing prost the path avoids setting PROTOC in the environment (unsafe in 2024).
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("airlock_v1_descriptor.bin"))
        .compile_with_config(config, &["airlock/v1/airlock.proto"], &["."])
        .context("compiling airlock/v1/airlock.proto")?;
    println!("cargo:rerun-if-changed=airlock/v1/airlock.proto");
    Ok(())
}

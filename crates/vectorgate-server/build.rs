//! Compiles `proto/vectorgate/v1/vectorgate.proto` with the protoc shipped by
//! `protoc-bin-vendored` (no system protoc needed) and writes the file
//! descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("../../proto");
    let proto = proto_root.join("vectorgate/v1/vectorgate.proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = tonic_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_build::configure()
        // `connect()` helpers need tonic-build's `transport` feature, which
        // the workspace leaves off; clients build a Channel themselves.
        .build_transport(false)
        .file_descriptor_set_path(out_dir.join("vectorgate_descriptor.bin"))
        .compile_protos_with_config(config, &[proto], &[proto_root])?;
    Ok(())
}

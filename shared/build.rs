//! Generates the `blixard.v1` gRPC types from `proto/` with protox, so no
//! system `protoc` is needed, and keeps the encoded descriptor set for
//! server reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "blixard/v1/types.proto",
    "blixard/v1/cluster.proto",
    "blixard/v1/node.proto",
    "blixard/v1/vm.proto",
    "blixard/v1/watch.proto",
    "blixard/v1/raft.proto",
    "blixard/v1/token.proto",
    "blixard/v1/policy.proto",
    "blixard/v1/audit.proto",
    "blixard/v1/quota.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    for proto in PROTOS {
        println!(
            "cargo:rerun-if-changed={}",
            proto_root.join(proto).display()
        );
    }
    let fds = protox::compile(PROTOS, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("blixard_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

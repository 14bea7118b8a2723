// The gRPC code is generated from a file descriptor set made by `protox`, a pure-Rust
// protobuf compiler that ships the well-known types: building needs no `protoc` and no
// system `.proto` files (fedbroker change, see PATCHED.md).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/plugin.proto", "proto/tfplugin6.5.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_build::configure()
        .build_client(false)
        .compile_fds(fds)?;
    Ok(())
}

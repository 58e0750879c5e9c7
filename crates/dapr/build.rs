//! Compiles the gRPC API's .proto files (proto/: daprd's published names and field
//! numbers) with protox, a protobuf compiler in Rust, so no `protoc` is needed, and
//! generates the tonic server (Dapr) and client (AppCallback) code from them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["dapr/proto/runtime/v1/dapr.proto", "dapr/proto/runtime/v1/appcallback.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    println!("cargo:rerun-if-changed=proto/dapr/proto/common/v1/common.proto");
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}

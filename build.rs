//! Compiles this project's own protobuf API (`proto/`) with a pure-Rust compiler (protox), so
//! no system `protoc` is needed. Envoy's protos come from envoy-types, never from here.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/ai_extproc/usage/v1/usage.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

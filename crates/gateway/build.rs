//! Generates the gRPC server API (`proto/api.proto`, Centrifugo's service and
//! messages). protox parses the .proto, so no system `protoc` is needed.

fn main() -> std::io::Result<()> {
    let proto_dir = "../../proto";
    println!("cargo:rerun-if-changed={proto_dir}/api.proto");
    let fds = protox::compile([format!("{proto_dir}/api.proto")], [proto_dir])
        .map_err(std::io::Error::other)?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)
}

fn main() -> std::io::Result<()> {
    let proto_dir = "../../proto";
    println!("cargo:rerun-if-changed={proto_dir}/presence.proto");
    // protox parses the .proto in Rust: the build needs no system `protoc`.
    let fds = protox::compile([format!("{proto_dir}/presence.proto")], [proto_dir])
        .map_err(std::io::Error::other)?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)
}

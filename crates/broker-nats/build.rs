fn main() -> std::io::Result<()> {
    let proto_dir = "../../proto";
    println!("cargo:rerun-if-changed={proto_dir}/broker.proto");
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    // Tags are a BTreeMap in the core's types: no conversion on the way through.
    config.btree_map(["."]);
    // protox parses the .proto in Rust: the build needs no system `protoc`.
    let fds = protox::compile([format!("{proto_dir}/broker.proto")], [proto_dir])
        .map_err(std::io::Error::other)?;
    config.compile_fds(fds)
}

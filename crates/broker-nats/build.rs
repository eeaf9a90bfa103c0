fn main() -> std::io::Result<()> {
    let proto_dir = "../../proto";
    println!("cargo:rerun-if-changed={proto_dir}/broker.proto");
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    config.compile_protos(&[format!("{proto_dir}/broker.proto")], &[proto_dir])
}

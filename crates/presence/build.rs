fn main() -> std::io::Result<()> {
    let proto_dir = "../../proto";
    println!("cargo:rerun-if-changed={proto_dir}/presence.proto");
    tonic_prost_build::configure().bytes(".").compile_protos(
        &[format!("{proto_dir}/presence.proto")],
        &[proto_dir.to_owned()],
    )
}

//! Generates the Centrifugo client protocol types from `proto/client.proto`.
//!
//! The same generated structs serve both encodings: prost derives the protobuf
//! codec, and serde attributes added here give the JSON encoding its shape
//! (field names as in the .proto, default values left out, application data
//! carried as raw JSON instead of base64 bytes).

fn main() -> std::io::Result<()> {
    let proto_dir = "../../proto";
    println!("cargo:rerun-if-changed={proto_dir}/client.proto");
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    config.type_attribute(
        ".",
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
    );
    config.field_attribute(
        ".",
        "#[serde(skip_serializing_if = \"crate::json::is_default\")]",
    );
    for field in ["data", "conn_info", "chan_info"] {
        config.field_attribute(field, "#[serde(with = \"crate::json::raw\")]");
    }
    config.compile_protos(&[format!("{proto_dir}/client.proto")], &[proto_dir])
}

//! Generates the Centrifugo client protocol types from `proto/client.proto`.
//!
//! The same generated structs serve both encodings: prost derives the protobuf
//! codec, and serde attributes added here give the JSON encoding its shape
//! (field names as in the .proto, default values left out, application data
//! carried as raw JSON instead of base64 bytes). protox parses the .proto, so
//! no system `protoc` is needed.

fn main() -> std::io::Result<()> {
    let proto_dir = "../../proto";
    println!("cargo:rerun-if-changed={proto_dir}/client.proto");
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    config.type_attribute(
        ".",
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
    );
    // Default values are left out of JSON, except ClientInfo's user and client,
    // which Centrifugo always writes (an anonymous user is "", not absent).
    const SKIP_DEFAULT: &str =
        "#[serde(skip_serializing_if = \"crate::centrifugo::json::is_default\")]";
    let proto = std::fs::read_to_string(format!("{proto_dir}/client.proto"))?;
    for message in proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("message "))
        .filter_map(|l| l.split_whitespace().next())
    {
        if message == "ClientInfo" {
            for field in ["conn_info", "chan_info"] {
                config.field_attribute(
                    format!(".switchboard.client.ClientInfo.{field}"),
                    SKIP_DEFAULT,
                );
            }
        } else {
            config.field_attribute(format!(".switchboard.client.{message}"), SKIP_DEFAULT);
        }
    }
    for field in ["data", "conn_info", "chan_info"] {
        config.field_attribute(field, "#[serde(with = \"crate::centrifugo::json::raw\")]");
    }
    let fds = protox::compile([format!("{proto_dir}/client.proto")], [proto_dir])
        .map_err(std::io::Error::other)?;
    config.compile_fds(fds)
}

//! Serde helpers for the JSON encoding of the protocol.

/// True when `value` equals its type's default: such fields are left out of JSON
/// replies, as Centrifugo does.
pub fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Application data (`data`, `conn_info`, `chan_info`) travels as raw JSON in the
/// JSON encoding and as opaque bytes in protobuf; in memory it is always bytes.
pub mod raw {
    use bytes::Bytes;
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(data: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(data).map_err(|_| S::Error::custom(NOT_JSON))?;
        let raw: &RawValue = serde_json::from_str(text).map_err(|_| S::Error::custom(NOT_JSON))?;
        raw.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer).map_err(D::Error::custom)?;
        let text: Box<str> = raw.into();
        Ok(Bytes::from(text.into_boxed_bytes()))
    }

    /// The message a JSON encoding failure carries when data is not JSON.
    pub const NOT_JSON: &str = "data is not valid JSON";
}

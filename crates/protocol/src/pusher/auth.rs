//! The HMAC-SHA256 signatures of Pusher Channels.
//!
//! Every signature is the lowercase hex HMAC-SHA256 of a string, keyed with the
//! app's secret; a client presents it as `<app key>:<hex>`. What is signed:
//! - a private or presence subscription: `socket_id:channel` or
//!   `socket_id:channel:channel_data` ([`channel_auth`]);
//! - a user sign-in: `socket_id::user::user_data` ([`user_auth`]);
//! - an HTTP API request: method, path and sorted query ([`request_string`]),
//!   checked whole by [`verify_request`].
//!
//! Signatures are checked in constant time ([`ring::hmac::verify`]), so the time
//! a refusal takes tells nothing about how close a forgery came.

mod api;

use md5::{Digest, Md5};
use ring::hmac;

pub use api::{
    parse_query, request_signature, request_string, verify_request, ApiAuthError, AUTH_VERSION,
    TIMESTAMP_TOLERANCE_SECS,
};

fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

/// The lowercase hex HMAC-SHA256 of `message` keyed with `secret`.
pub fn sign(secret: &str, message: &str) -> String {
    hex::encode(hmac::sign(&key(secret), message.as_bytes()))
}

/// Whether `signature_hex` is the HMAC-SHA256 of `message` keyed with `secret`,
/// compared in constant time. Anything that is not hex is simply wrong.
pub fn verify(secret: &str, message: &str, signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(signature) => hmac::verify(&key(secret), message.as_bytes(), &signature).is_ok(),
        Err(_) => false,
    }
}

/// The string a subscription signature covers, byte for byte: `channel_data` is
/// the exact JSON text the client sends, never a re-serialization of it.
fn channel_string(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    let mut message = format!("{socket_id}:{channel}");
    if let Some(data) = channel_data {
        message.push(':');
        message.push_str(data);
    }
    message
}

fn user_string(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Whether `auth` is `<key>:<hex>` with this app's key and a signature of
/// `message`. The key is public; only the signature needs the constant-time check.
fn check_key_and_signature(key: &str, secret: &str, message: &str, auth: &str) -> bool {
    match auth.split_once(':') {
        Some((presented_key, signature)) => {
            presented_key == key && verify(secret, message, signature)
        }
        None => false,
    }
}

/// The `auth` an app's server hands a client for subscribing `socket_id` to
/// `channel`: `"<key>:<hex signature>"`. Presence channels sign `channel_data` too.
pub fn channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let signature = sign(secret, &channel_string(socket_id, channel, channel_data));
    format!("{key}:{signature}")
}

/// Whether `auth` (from a `pusher:subscribe`) is the app's signature of this
/// subscription: `<key>:<hex>` with this app's key and a valid signature.
pub fn check_channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let message = channel_string(socket_id, channel, channel_data);
    check_key_and_signature(key, secret, &message, auth)
}

/// The `auth` an app's server hands a client for signing `socket_id` in as the
/// user described by `user_data` (a JSON object with at least an `id`).
pub fn user_auth(key: &str, secret: &str, socket_id: &str, user_data: &str) -> String {
    let signature = sign(secret, &user_string(socket_id, user_data));
    format!("{key}:{signature}")
}

/// Whether `auth` (from a `pusher:signin`) is the app's signature of `user_data`
/// for this socket.
pub fn check_user_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> bool {
    check_key_and_signature(key, secret, &user_string(socket_id, user_data), auth)
}

/// The lowercase hex MD5 of an HTTP API request body (its `body_md5` parameter).
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // The worked examples of Pusher's "auth signatures" reference.
    pub const KEY: &str = "278d425bdf160c739803";
    pub const SECRET: &str = "7ad3773142a6692b25b8";
    const SOCKET: &str = "1234.1234";
    const PRIVATE_SIGNATURE: &str =
        "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
    const PRESENCE_DATA: &str = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
    const PRESENCE_SIGNATURE: &str =
        "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c";
    const USER_DATA: &str = r#"{"id":"12345"}"#;
    const USER_SIGNATURE: &str = "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba";

    #[test]
    fn private_channel_vector() {
        let auth = channel_auth(KEY, SECRET, SOCKET, "private-foobar", None);
        assert_eq!(auth, format!("{KEY}:{PRIVATE_SIGNATURE}"));
        assert!(check_channel_auth(
            KEY,
            SECRET,
            SOCKET,
            "private-foobar",
            None,
            &auth
        ));
    }

    #[test]
    fn presence_channel_vector() {
        let data = Some(PRESENCE_DATA);
        let auth = channel_auth(KEY, SECRET, SOCKET, "presence-foobar", data);
        assert_eq!(auth, format!("{KEY}:{PRESENCE_SIGNATURE}"));
        assert!(check_channel_auth(
            KEY,
            SECRET,
            SOCKET,
            "presence-foobar",
            data,
            &auth
        ));
        // The signature covers the exact bytes: other member data, other signature.
        let other = Some(r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#);
        assert!(!check_channel_auth(
            KEY,
            SECRET,
            SOCKET,
            "presence-foobar",
            other,
            &auth
        ));
        assert!(!check_channel_auth(
            KEY,
            SECRET,
            SOCKET,
            "presence-foobar",
            None,
            &auth
        ));
    }

    #[test]
    fn user_signin_vector() {
        let auth = user_auth(KEY, SECRET, SOCKET, USER_DATA);
        assert_eq!(auth, format!("{KEY}:{USER_SIGNATURE}"));
        assert!(check_user_auth(KEY, SECRET, SOCKET, USER_DATA, &auth));
        assert!(!check_user_auth(KEY, SECRET, "1234.1235", USER_DATA, &auth));
    }

    #[test]
    fn channel_auth_refuses_anything_else() {
        let good = format!("{KEY}:{PRIVATE_SIGNATURE}");
        let check =
            |auth: &str| check_channel_auth(KEY, SECRET, SOCKET, "private-foobar", None, auth);
        assert!(check(&good));
        assert!(!check(PRIVATE_SIGNATURE), "no key");
        assert!(
            !check(&format!("otherkey:{PRIVATE_SIGNATURE}")),
            "another app's key"
        );
        assert!(
            !check(&format!("{KEY}:{}", &PRIVATE_SIGNATURE[1..])),
            "truncated"
        );
        assert!(
            !check(&format!("{KEY}:zz{}", &PRIVATE_SIGNATURE[2..])),
            "not hex"
        );
        assert!(!check(&format!("{KEY}:")), "empty signature");
        assert!(!check(""), "empty");
        assert!(!check_channel_auth(
            KEY,
            "othersecret",
            SOCKET,
            "private-foobar",
            None,
            &good
        ));
        assert!(!check_channel_auth(
            KEY,
            SECRET,
            "1.2",
            "private-foobar",
            None,
            &good
        ));
        assert!(!check_channel_auth(
            KEY,
            SECRET,
            SOCKET,
            "private-foobaz",
            None,
            &good
        ));
    }

    #[test]
    fn verify_accepts_uppercase_hex_and_refuses_junk() {
        let message = "1234.1234:private-foobar";
        assert!(verify(SECRET, message, PRIVATE_SIGNATURE));
        assert!(verify(SECRET, message, &PRIVATE_SIGNATURE.to_uppercase()));
        assert!(!verify(SECRET, message, "not hex at all"));
        assert!(!verify(SECRET, message, ""));
        assert_eq!(sign(SECRET, message), PRIVATE_SIGNATURE);
    }

    #[test]
    fn body_md5_vector() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
        assert_eq!(body_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}

//! Signed requests of the Pusher HTTP API (`/apps/<id>/events` and the rest).
//!
//! A request carries `auth_key`, `auth_timestamp`, `auth_version=1.0`, for a
//! non-empty body `body_md5`, and `auth_signature`: the HMAC-SHA256 of
//! `METHOD\nPATH\nSORTED_QUERY` ([`request_string`]). The query in that string
//! is the decoded parameters, keys lowercased, sorted by key, joined with `&`
//! and `=` and not re-encoded, so a value `Something else` is signed with its
//! space.

use thiserror::Error;

use super::{body_md5, sign, verify};

/// The only `auth_version` there is.
pub const AUTH_VERSION: &str = "1.0";
/// How far `auth_timestamp` may be from the server's clock, either way.
pub const TIMESTAMP_TOLERANCE_SECS: u64 = 600;

/// Why an HTTP API request was refused. Each message is meant for the body of
/// the 401 reply, so it names the parameter at fault but never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApiAuthError {
    #[error("missing {0} parameter")]
    Missing(&'static str),
    #[error("parameter {0} appears more than once")]
    Duplicate(String),
    #[error("unknown auth_key")]
    UnknownKey,
    #[error("auth_timestamp is not a Unix time in seconds")]
    Malformed,
    #[error(
        "auth_timestamp is {skew_secs} s away from the server's clock; at most {TIMESTAMP_TOLERANCE_SECS} s is accepted"
    )]
    Expired { skew_secs: u64 },
    #[error("auth_version must be {AUTH_VERSION}")]
    Version,
    #[error("body_md5 must be the MD5 hex digest of the request body")]
    BodyMd5,
    #[error("invalid auth_signature")]
    Signature,
}

/// The string an API request's signature covers: the uppercase method, the path,
/// and every parameter but `auth_signature`, keys lowercased and sorted, values
/// as given, joined as `k=v&k2=v2`; the three parts joined by `\n`.
pub fn request_string(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .map(|(key, value)| (key.to_lowercase(), value.as_str()))
        .filter(|(key, _)| key != "auth_signature")
        .collect();
    pairs.sort_unstable();
    let mut out = format!("{}\n{path}\n", method.to_ascii_uppercase());
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// The `auth_signature` of an API request: the hex HMAC-SHA256 of its
/// [`request_string`] keyed with the app's secret.
pub fn request_signature(
    secret: &str,
    method: &str,
    path: &str,
    params: &[(String, String)],
) -> String {
    sign(secret, &request_string(method, path, params))
}

/// Checks an API request's authentication and returns the app key it is signed
/// with. `query` is the decoded query string ([`parse_query`]); `key_secret`
/// finds an app's secret by key; `now_unix` is the server's clock in seconds.
pub fn verify_request<'q>(
    method: &str,
    path: &str,
    query: &'q [(String, String)],
    body: &[u8],
    key_secret: impl Fn(&str) -> Option<String>,
    now_unix: u64,
) -> Result<&'q str, ApiAuthError> {
    reject_duplicates(query)?;
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };

    let key = param("auth_key").ok_or(ApiAuthError::Missing("auth_key"))?;
    let secret = key_secret(key).ok_or(ApiAuthError::UnknownKey)?;

    let timestamp = param("auth_timestamp").ok_or(ApiAuthError::Missing("auth_timestamp"))?;
    let timestamp: u64 = timestamp.parse().map_err(|_| ApiAuthError::Malformed)?;
    let skew_secs = now_unix.abs_diff(timestamp);
    if skew_secs > TIMESTAMP_TOLERANCE_SECS {
        return Err(ApiAuthError::Expired { skew_secs });
    }

    let version = param("auth_version").ok_or(ApiAuthError::Missing("auth_version"))?;
    if version != AUTH_VERSION {
        return Err(ApiAuthError::Version);
    }

    // Required with a body; checked without one too when a client sends it anyway.
    match param("body_md5") {
        Some(md5) if md5.eq_ignore_ascii_case(&body_md5(body)) => {}
        None if body.is_empty() => {}
        _ => return Err(ApiAuthError::BodyMd5),
    }

    let signature = param("auth_signature").ok_or(ApiAuthError::Missing("auth_signature"))?;
    if !verify(&secret, &request_string(method, path, query), signature) {
        return Err(ApiAuthError::Signature);
    }
    Ok(key)
}

/// A key twice would make the signed string ambiguous (which value counts?), so
/// such a request is refused before anything is looked up.
fn reject_duplicates(query: &[(String, String)]) -> Result<(), ApiAuthError> {
    let mut keys: Vec<String> = query.iter().map(|(key, _)| key.to_lowercase()).collect();
    keys.sort_unstable();
    match keys.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(ApiAuthError::Duplicate(pair[0].clone())),
        None => Ok(()),
    }
}

/// Splits a URL's query (with or without its leading `?`) into decoded pairs:
/// `%XX` sequences and `+` (a space) are decoded in keys and values alike. It
/// never fails: a malformed escape stays as written, invalid UTF-8 becomes U+FFFD,
/// and then the signature simply does not match.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    let query = query.strip_prefix('?').unwrap_or(query);
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{KEY, SECRET};
    use super::*;

    const BODY: &[u8] = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    const BODY_MD5: &str = "ec365a775a4cd0599faeb73354201b6f";
    const TIMESTAMP: u64 = 1353088179;
    const SIGNATURE: &str = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The worked example of Pusher's HTTP API reference, in the order a client
    /// might send it (the signature sorts).
    fn example_query() -> Vec<(String, String)> {
        pairs(&[
            ("body_md5", BODY_MD5),
            ("auth_version", "1.0"),
            ("auth_key", KEY),
            ("auth_timestamp", "1353088179"),
            ("auth_signature", SIGNATURE),
        ])
    }

    fn secrets(key: &str) -> Option<String> {
        (key == KEY).then(|| SECRET.to_string())
    }

    fn check(query: &[(String, String)], body: &[u8]) -> Result<String, ApiAuthError> {
        verify_request(
            "POST",
            "/apps/3/events",
            query,
            body,
            secrets,
            TIMESTAMP + 5,
        )
        .map(str::to_string)
    }

    fn with(name: &str, value: Option<&str>) -> Vec<(String, String)> {
        let mut query: Vec<_> = example_query()
            .into_iter()
            .filter(|(k, _)| k != name)
            .collect();
        if let Some(value) = value {
            query.push((name.to_string(), value.to_string()));
        }
        query
    }

    #[test]
    fn http_api_vector() {
        let expected = format!(
            "POST\n/apps/3/events\nauth_key={KEY}&auth_timestamp=1353088179&auth_version=1.0&body_md5={BODY_MD5}"
        );
        assert_eq!(
            request_string("POST", "/apps/3/events", &example_query()),
            expected
        );
        let signature = request_signature(SECRET, "post", "/apps/3/events", &example_query());
        assert_eq!(signature, SIGNATURE);
        assert_eq!(check(&example_query(), BODY), Ok(KEY.to_string()));
    }

    #[test]
    fn request_string_lowercases_keys_and_keeps_values_raw() {
        let params = pairs(&[
            ("Name", "Something else"),
            ("auth_key", "foo"),
            ("Auth_Signature", "x"),
        ]);
        assert_eq!(
            request_string("GET", "/apps/1/channels", &params),
            "GET\n/apps/1/channels\nauth_key=foo&name=Something else"
        );
        assert_eq!(request_string("GET", "/", &[]), "GET\n/\n");
    }

    #[test]
    fn parse_query_decodes_escapes_and_plus() {
        let query = parse_query("?info=user_count%2Csubscription_count&filter_by_prefix=presence-&name=a+b&k%20ey=v%3D1");
        assert_eq!(
            query,
            pairs(&[
                ("info", "user_count,subscription_count"),
                ("filter_by_prefix", "presence-"),
                ("name", "a b"),
                ("k ey", "v=1"),
            ])
        );
        assert_eq!(parse_query(""), Vec::new());
        // Never panics on junk.
        assert_eq!(
            parse_query("a=%zz&=&b"),
            pairs(&[("a", "%zz"), ("", ""), ("b", "")])
        );
    }

    #[test]
    fn a_parsed_url_verifies() {
        let url_query = format!(
            "auth_key={KEY}&auth_timestamp=1353088179&auth_version=1.0&body_md5={BODY_MD5}&auth_signature={SIGNATURE}"
        );
        assert_eq!(check(&parse_query(&url_query), BODY), Ok(KEY.to_string()));
    }

    #[test]
    fn get_without_body_needs_no_body_md5() {
        let mut query = pairs(&[
            ("auth_key", KEY),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("info", "user_count"),
        ]);
        let signature = request_signature(SECRET, "GET", "/apps/3/channels/presence-x", &query);
        query.push(("auth_signature".into(), signature));
        let verified = verify_request(
            "GET",
            "/apps/3/channels/presence-x",
            &query,
            b"",
            secrets,
            TIMESTAMP,
        );
        assert_eq!(verified, Ok(KEY));
    }

    #[test]
    fn missing_parameters() {
        for name in [
            "auth_key",
            "auth_timestamp",
            "auth_version",
            "auth_signature",
        ] {
            assert_eq!(
                check(&with(name, None), BODY),
                Err(ApiAuthError::Missing(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_key() {
        assert_eq!(
            check(&with("auth_key", Some("nokey")), BODY),
            Err(ApiAuthError::UnknownKey)
        );
    }

    #[test]
    fn malformed_and_expired_timestamps() {
        for bad in ["", "soon", "-5", "1353088179.5"] {
            let query = with("auth_timestamp", Some(bad));
            assert_eq!(check(&query, BODY), Err(ApiAuthError::Malformed), "{bad:?}");
        }
        let query = example_query();
        let at = |now| verify_request("POST", "/apps/3/events", &query, BODY, secrets, now);
        assert_eq!(at(TIMESTAMP + 600), Ok(KEY));
        assert_eq!(at(TIMESTAMP - 600), Ok(KEY));
        assert_eq!(
            at(TIMESTAMP + 601),
            Err(ApiAuthError::Expired { skew_secs: 601 })
        );
        assert_eq!(
            at(TIMESTAMP - 601),
            Err(ApiAuthError::Expired { skew_secs: 601 })
        );
        assert_eq!(
            at(0),
            Err(ApiAuthError::Expired {
                skew_secs: TIMESTAMP
            })
        );
    }

    #[test]
    fn wrong_version() {
        assert_eq!(
            check(&with("auth_version", Some("2.0")), BODY),
            Err(ApiAuthError::Version)
        );
    }

    #[test]
    fn body_md5_must_match_a_body() {
        assert_eq!(
            check(&with("body_md5", None), BODY),
            Err(ApiAuthError::BodyMd5)
        );
        let wrong = with("body_md5", Some("d41d8cd98f00b204e9800998ecf8427e"));
        assert_eq!(check(&wrong, BODY), Err(ApiAuthError::BodyMd5));
        // The signature still covers the original body_md5, so a different body
        // fails on its MD5 first.
        assert_eq!(check(&example_query(), b"{}"), Err(ApiAuthError::BodyMd5));
        assert_eq!(check(&example_query(), b""), Err(ApiAuthError::BodyMd5));
    }

    #[test]
    fn bad_signatures() {
        for bad in ["", "zz", &SIGNATURE[..63], &"0".repeat(64)] {
            let query = with("auth_signature", Some(bad));
            assert_eq!(check(&query, BODY), Err(ApiAuthError::Signature), "{bad:?}");
        }
        let query = example_query();
        let signed = |method, path| verify_request(method, path, &query, BODY, secrets, TIMESTAMP);
        assert_eq!(
            signed("POST", "/apps/4/events"),
            Err(ApiAuthError::Signature)
        );
        assert_eq!(
            signed("PUT", "/apps/3/events"),
            Err(ApiAuthError::Signature)
        );
        let mut extra = example_query();
        extra.push(("socket_id".into(), "1.1".into()));
        assert_eq!(check(&extra, BODY), Err(ApiAuthError::Signature));
    }

    #[test]
    fn duplicate_parameters() {
        let mut query = example_query();
        query.push(("AUTH_KEY".into(), KEY.into()));
        assert_eq!(
            check(&query, BODY),
            Err(ApiAuthError::Duplicate("auth_key".into()))
        );
    }

    #[test]
    fn messages_read_well() {
        assert_eq!(
            ApiAuthError::Missing("auth_key").to_string(),
            "missing auth_key parameter"
        );
        assert_eq!(
            ApiAuthError::Expired { skew_secs: 601 }.to_string(),
            "auth_timestamp is 601 s away from the server's clock; at most 600 s is accepted"
        );
        assert_eq!(
            ApiAuthError::Version.to_string(),
            "auth_version must be 1.0"
        );
    }
}

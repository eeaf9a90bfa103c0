//! The WebSocket opening handshake, client side (RFC 6455 §4.1), written straight
//! over the TCP stream: one request, one response head parsed with `httparse`.
//!
//! Why not a hyper client connection: per upgrade it spawned a task, built a
//! channel pair and 8 KiB buffers, and left a boxed, rewinding stream under every
//! later frame; that was about a fifth of the tool's CPU per connection set-up,
//! and the tool shares the cores with the gateway it measures. Like the
//! fastwebsockets client it replaces, it checks the status, `Upgrade` and
//! `Connection`, not `Sec-WebSocket-Accept`.
//!
//! Only the response head is consumed: each pass peeks at what has arrived and
//! reads no further than the head's end. Whatever the server sends right behind
//! it (a Pusher server's `pusher:connection_established` may share the segment)
//! stays in the socket for the WebSocket, so no read-ahead buffer (and no
//! rewinding stream) sits under every later frame.

use fastwebsockets::{Role, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ClientError;
use crate::target::Target;

/// Bound on the response head; a gateway's 101 is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// Sends the upgrade request for `path` (path and query) on `stream`, naming
/// `subprotocol` if any, and reads the response head.
pub async fn upgrade(
    target: &Target,
    mut stream: TcpStream,
    path: &str,
    subprotocol: Option<&str>,
) -> Result<WebSocket<TcpStream>, ClientError> {
    let key = fastwebsockets::handshake::generate_key();
    stream
        .write_all(request(target, path, &key, subprotocol).as_bytes())
        .await
        .map_err(ClientError::Tcp)?;
    let mut head = vec![0u8; 1024];
    // Bytes of the head read so far: all that has arrived, while it is incomplete.
    let mut len = 0;
    // Each pass consumes at least one byte (a peek returns at least one or the
    // end) into a buffer of at most MAX_HEAD. A peek at an incomplete head is
    // followed by a read of what it saw, so the next peek waits for new bytes
    // instead of seeing the same ones again.
    loop {
        if len == head.len() {
            if len >= MAX_HEAD {
                return Err(handshake("response head over 8 KiB"));
            }
            head.resize(len * 2, 0);
        }
        let n = stream
            .peek(&mut head[len..])
            .await
            .map_err(ClientError::Tcp)?;
        if n == 0 {
            return Err(handshake("closed during the handshake"));
        }
        match check_response(&head[..len + n])? {
            Some(end) => {
                // The head was incomplete without the new bytes: it ends in them.
                let end = end.max(len);
                stream
                    .read_exact(&mut head[len..end])
                    .await
                    .map_err(ClientError::Tcp)?;
                break;
            }
            None => {
                stream
                    .read_exact(&mut head[len..len + n])
                    .await
                    .map_err(ClientError::Tcp)?;
                len += n;
            }
        }
    }
    let mut ws = WebSocket::after_handshake(stream, Role::Client);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    Ok(ws)
}

fn request(target: &Target, path: &str, key: &str, subprotocol: Option<&str>) -> String {
    let protocol = match subprotocol {
        Some(name) => format!("Sec-WebSocket-Protocol: {name}\r\n"),
        None => String::new(),
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n",
        host = target.addr,
    )
}

/// Checks what has arrived of the response: `Ok(None)` while the head is
/// incomplete, `Ok(Some(length of the head))` for a complete switch to WebSocket;
/// bytes behind the head are the server's first frames and not looked at.
fn check_response(buf: &[u8]) -> Result<Option<usize>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(handshake(&format!("bad response head: {e}"))),
    };
    match response.code {
        Some(101) => {}
        Some(code) => return Err(ClientError::Handshake(format!("status {code}"))),
        None => return Err(handshake("no status")),
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
        return Err(handshake("no Upgrade: websocket"));
    }
    let upgrade_token = |v: &[u8]| {
        v.split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    };
    if !header("Connection").is_some_and(upgrade_token) {
        return Err(handshake("no Connection: upgrade"));
    }
    Ok(Some(head_len))
}

fn handshake(what: &str) -> ClientError {
    ClientError::Handshake(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
        connection: Upgrade\r\nsec-websocket-accept: x\r\n\r\n";

    #[test]
    fn a_switch_is_complete_only_with_the_whole_head() {
        assert_eq!(check_response(OK).unwrap(), Some(OK.len()));
        for cut in [0, 1, 20, OK.len() - 1] {
            assert_eq!(check_response(&OK[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn the_servers_first_frame_behind_the_head_is_left_alone() {
        let established = [OK, b"\x81\x05hello"].concat();
        assert_eq!(check_response(&established).unwrap(), Some(OK.len()));
    }

    #[test]
    fn a_refusal_keeps_its_status_for_the_failure_reason() {
        let e = check_response(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            .unwrap_err();
        assert_eq!(e.reason(), "http 503");
    }

    #[test]
    fn a_101_without_the_upgrade_headers_fails() {
        let no_upgrade = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\r\n";
        assert_eq!(
            check_response(no_upgrade).unwrap_err().reason(),
            "handshake"
        );
        let keep_alive = b"HTTP/1.1 101 x\r\nupgrade: websocket\r\nconnection: keep-alive\r\n\r\n";
        assert!(check_response(keep_alive).is_err());
        let listed =
            b"HTTP/1.1 101 x\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\r\n";
        assert!(check_response(listed).unwrap().is_some());
        assert!(check_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn the_request_names_the_path_host_and_subprotocol() {
        let target: Target = "ws://127.0.0.1:8000/connection/websocket?x=1"
            .parse()
            .unwrap();
        let json = request(&target, &target.path, "a2V5", None);
        assert!(
            json.starts_with("GET /connection/websocket?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n")
        );
        assert!(json.ends_with("Sec-WebSocket-Version: 13\r\n\r\n"));
        assert!(!json.contains("Protocol"));
        let pb = request(&target, "/x", "a2V5", Some("centrifuge-protobuf"));
        assert!(pb.starts_with("GET /x HTTP/1.1\r\n"));
        assert!(pb.contains("\r\nSec-WebSocket-Protocol: centrifuge-protobuf\r\n\r\n"));
    }
}

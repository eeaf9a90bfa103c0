//! WebSocket framing on a raw socket: what a client's bytes may look like on the
//! wire (split anywhere, fragmented, pipelined behind the handshake) and what the
//! gateway writes back when the socket does not take everything at once.

mod common;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const HANDSHAKE: &str = "GET /connection/websocket HTTP/1.1\r\nHost: test\r\n\
Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0xa1, 0xb2, 0xc3, 0xd4];
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Sends the handshake (and `then`, in the same write) and reads the 101 response.
async fn open(gw: &Gateway, then: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut first = HANDSHAKE.as_bytes().to_vec();
    first.extend_from_slice(then);
    s.write_all(&first).await.unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        assert!(response.len() < 4096, "handshake response too long");
        let mut byte = [0u8; 1];
        let n = timeout(PATIENCE, s.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(n, 1, "closed during the handshake");
        response.push(byte[0]);
    }
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    s
}

/// Reads one server frame: (fin, opcode, payload). Server frames are unmasked.
async fn read_frame(s: &mut TcpStream) -> (bool, u8, Vec<u8>) {
    timeout(PATIENCE, async {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => u64::from(s.read_u16().await.unwrap()),
            127 => s.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await.unwrap();
        (head[0] & 0x80 != 0, head[0] & 0x0f, payload)
    })
    .await
    .expect("a frame within the patience")
}

/// The JSON replies of the next data frame.
async fn read_replies(s: &mut TcpStream) -> Vec<Value> {
    let (fin, opcode, payload) = read_frame(s).await;
    assert!(fin);
    assert_eq!(opcode, 1, "a text frame");
    decode_replies(&payload, false)
}

#[tokio::test]
async fn a_command_split_into_fragments_and_single_bytes_is_answered() {
    let gw = Gateway::start(config()).await;
    let mut s = open(&gw, b"").await;
    let command = br#"{"id":1,"connect":{"name":"raw"}}"#;
    let (a, b) = command.split_at(10);
    let mut bytes = frame(false, 1, a);
    // A ping between two fragments of a message is allowed and answered.
    bytes.extend(frame(true, 9, b"between"));
    bytes.extend(frame(true, 0, b));
    for byte in &bytes {
        s.write_all(std::slice::from_ref(byte)).await.unwrap();
        s.flush().await.unwrap();
    }
    let (_, opcode, payload) = read_frame(&mut s).await;
    assert_eq!((opcode, payload.as_slice()), (10, &b"between"[..]), "pong");
    let replies = read_replies(&mut s).await;
    assert_eq!(replies[0]["id"], json!(1));
    assert!(replies[0]["connect"]["client"].is_string(), "{replies:?}");
}

#[tokio::test]
async fn commands_sent_right_behind_the_handshake_are_answered() {
    let gw = Gateway::start(config()).await;
    let mut pipelined = frame(true, 1, br#"{"id":1,"connect":{}}"#);
    pipelined.extend(frame(
        true,
        1,
        br#"{"id":2,"subscribe":{"channel":"early"}}"#,
    ));
    let mut s = open(&gw, &pipelined).await;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        for reply in read_replies(&mut s).await {
            assert!(reply.get("error").is_none(), "{reply}");
            ids.push(reply["id"].clone());
        }
    }
    assert_eq!(ids, vec![json!(1), json!(2)]);
    gw.api().publish("early", json!("hello")).await;
    let push = read_replies(&mut s).await;
    assert_eq!(push[0]["push"]["pub"]["data"], json!("hello"));
}

#[tokio::test]
async fn a_close_is_echoed_and_nothing_follows_it() {
    let gw = Gateway::start(config()).await;
    let mut s = open(&gw, &frame(true, 1, br#"{"id":1,"connect":{}}"#)).await;
    read_replies(&mut s).await;
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    s.write_all(&frame(true, 8, &close)).await.unwrap();
    let (_, opcode, payload) = read_frame(&mut s).await;
    assert_eq!((opcode, payload), (8, close));
    let mut rest = Vec::new();
    timeout(PATIENCE, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "bytes after the close echo: {rest:?}");
}

#[tokio::test]
async fn publications_larger_than_the_socket_takes_arrive_whole_and_in_order() {
    // Several MiB queued while the client does not read: the writer keeps the rest
    // of a frame the socket did not take and sends it before anything else.
    const COUNT: usize = 40;
    let mut cfg = config();
    cfg.limits.max_queue_bytes = 32 << 20;
    cfg.limits.max_api_body_bytes = 1 << 20;
    let gw = Gateway::start(cfg).await;
    let mut s = open(&gw, &frame(true, 1, br#"{"id":1,"connect":{}}"#)).await;
    read_replies(&mut s).await;
    s.write_all(&frame(
        true,
        1,
        br#"{"id":2,"subscribe":{"channel":"big"}}"#,
    ))
    .await
    .unwrap();
    read_replies(&mut s).await;
    for i in 0..COUNT {
        let data = format!("{i:04}{}", "y".repeat(250_000));
        gw.api().publish("big", json!(data)).await;
    }
    let mut seen = 0;
    while seen < COUNT {
        for reply in read_replies(&mut s).await {
            let data = reply["push"]["pub"]["data"].as_str().unwrap().to_owned();
            assert_eq!(data.len(), 250_004);
            assert_eq!(&data[..4], format!("{seen:04}"), "in order");
            assert!(data[4..].bytes().all(|b| b == b'y'), "intact");
            seen += 1;
        }
    }
}

#[tokio::test]
async fn a_publish_sent_right_before_the_client_closes_its_side_is_still_run() {
    let gw = Gateway::start(config()).await;
    let mut sub = gw.connected().await;
    sub.subscribe(json!({"channel": "last-words"})).await;
    let mut s = open(&gw, &frame(true, 1, br#"{"id":1,"connect":{}}"#)).await;
    read_replies(&mut s).await;
    let publish = br#"{"id":2,"publish":{"channel":"last-words","data":"bye"}}"#;
    s.write_all(&frame(true, 1, publish)).await.unwrap();
    // The end of the stream right behind the command, likely in the same read.
    s.shutdown().await.unwrap();
    assert_eq!(sub.next_pub("last-words").await["data"], json!("bye"));
}

/// The gateway runs on one worker thread: a client that never stops sending must
/// not keep the others on it from being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_client_that_never_stops_sending_leaves_the_others_served() {
    let gw = Gateway::start(config()).await;
    let flood = std::net::TcpStream::connect(gw.addr).unwrap();
    // A write the gateway does not take within a second ends the flood (the
    // test's thread, which runs the gateway, may be waiting for it).
    flood
        .set_write_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        let mut flood = flood;
        std::thread::spawn(move || {
            use std::io::Write;
            let mut first = HANDSHAKE.as_bytes().to_vec();
            first.extend(frame(true, 1, br#"{"id":1,"connect":{}}"#));
            flood.write_all(&first).unwrap();
            // Pings as fast as the socket takes them; the answers are never read.
            let pings: Vec<u8> = (0..4096).flat_map(|_| frame(true, 9, b"")).collect();
            // Bounded: the test stops it, and a closed socket ends it.
            for _ in 0..1_000_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed)
                    || flood.write_all(&pings).is_err()
                {
                    break;
                }
            }
        })
    };
    let mut c = gw.connected().await;
    let r = c.subscribe(json!({"channel": "still-here"})).await;
    assert!(r.get("error").is_none(), "{r}");
    gw.api().publish("still-here", json!("served")).await;
    assert_eq!(c.next_pub("still-here").await["data"], json!("served"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(gw);
    flooding.join().unwrap();
}

//! A Centrifugo protocol client: JSON or protobuf, connect, subscribe (with
//! recovery), publish, and reading pushes.
//!
//! The client answers server pings (an empty reply) with a pong (an empty
//! command), as the SDKs do, so connections can be held for any duration.

use std::collections::VecDeque;
use std::time::Duration;

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use switchboard_protocol::centrifugo::codec::{is_ping, PROTOBUF_SUBPROTOCOL};
use switchboard_protocol::centrifugo::pb::{
    Command, ConnectRequest, ConnectResult, PublishRequest, Reply, SubscribeRequest,
    SubscribeResult,
};
use switchboard_protocol::centrifugo::Encoding;
use tokio::net::TcpStream;

use super::{
    closed, lean, tcp_connect, undecodable, upgrade, within, ClientError, ClientOptions, BACKLOG,
};
use crate::target::Target;

/// Bound on the records of one server frame. A server joins everything queued for
/// a connection into one frame: a gateway's queue holds 1 MiB by default, and this
/// tool's smallest publication push takes some 50 bytes, so a real frame holds tens
/// of thousands at most. The bound stays well above that (a 13 MiB queue of the
/// smallest pushes) and caps what one broken frame, of 1-byte pings say, makes a
/// receiver allocate: a decoded `Reply` takes 1.3 KiB.
pub(super) const MAX_REPLIES_PER_FRAME: usize = 1 << 18;

/// The encoding of a Centrifugo connection: protobuf or JSON.
pub fn encoding(protobuf: bool) -> Encoding {
    if protobuf {
        Encoding::Protobuf
    } else {
        Encoding::Json
    }
}

pub struct Client {
    ws: FragmentCollector<TcpStream>,
    encoding: Encoding,
    next_id: u32,
    backlog: VecDeque<Reply>,
    pub connect: ConnectResult,
}

impl Client {
    /// TCP connect, WebSocket upgrade and the protocol's connect command.
    pub async fn open(
        target: &Target,
        encoding: Encoding,
        opts: &ClientOptions,
    ) -> Result<Client, ClientError> {
        let connecting = async {
            let stream = tcp_connect(target, opts.source).await?;
            let subprotocol = match encoding {
                Encoding::Protobuf => Some(PROTOBUF_SUBPROTOCOL),
                Encoding::Json => None,
            };
            let ws = upgrade::upgrade(target, stream, &target.path, subprotocol).await?;
            let mut client = Client {
                ws: FragmentCollector::new(ws),
                encoding,
                next_id: 0,
                backlog: VecDeque::new(),
                connect: ConnectResult::default(),
            };
            let reply = client
                .call(Command {
                    connect: Some(ConnectRequest {
                        token: opts.token.clone().unwrap_or_default(),
                        name: "switchboard-loadtest".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
            client.connect = reply.connect.unwrap_or_default();
            Ok(client)
        };
        within(opts.timeout, "connect", connecting).await
    }

    /// Subscribes; with `recover`, asks for what was published after `(offset, epoch)`.
    pub async fn subscribe(
        &mut self,
        channel: &str,
        recover: Option<(u64, &str)>,
    ) -> Result<SubscribeResult, ClientError> {
        let mut req = SubscribeRequest {
            channel: channel.to_owned(),
            recoverable: true,
            ..Default::default()
        };
        if let Some((offset, epoch)) = recover {
            req.recover = true;
            req.offset = offset;
            req.epoch = epoch.to_owned();
        }
        let reply = self
            .call(Command {
                subscribe: Some(req),
                ..Default::default()
            })
            .await?;
        Ok(reply.subscribe.unwrap_or_default())
    }

    /// Publishes `data` (JSON) to `channel` and waits for the reply.
    pub async fn publish(&mut self, channel: &str, data: Vec<u8>) -> Result<(), ClientError> {
        self.call(Command {
            publish: Some(PublishRequest {
                channel: channel.to_owned(),
                data: data.into(),
            }),
            ..Default::default()
        })
        .await
        .map(drop)
    }

    /// Sends a command with the next id and waits for its reply; pushes read
    /// meanwhile are kept for [`Client::next_replies`].
    pub async fn call(&mut self, mut command: Command) -> Result<Reply, ClientError> {
        self.next_id += 1;
        let id = self.next_id;
        command.id = id;
        self.send(&command).await?;
        loop {
            // The reply may share its frame with pushes queued right behind it (a
            // subscribe reply and the publications held while it was built): keep
            // every other record of the frame, before and after the reply.
            let mut found = None;
            for reply in self.read_replies().await? {
                if found.is_none() && reply.id == id {
                    found = Some(reply);
                    continue;
                }
                if self.backlog.len() == BACKLOG {
                    self.backlog.pop_front();
                }
                self.backlog.push_back(reply);
            }
            if let Some(reply) = found {
                if let Some(e) = reply.error {
                    return Err(ClientError::Reply {
                        code: e.code,
                        message: e.message,
                    });
                }
                return Ok(reply);
            }
        }
    }

    /// The next replies and pushes: those kept by [`Client::call`], else one frame's worth.
    /// Not cancel-safe: a cancelled read leaves the connection unusable.
    pub async fn next_replies(&mut self) -> Result<Vec<Reply>, ClientError> {
        if !self.backlog.is_empty() {
            return Ok(self.backlog.drain(..).collect());
        }
        self.read_replies().await
    }

    /// Hands `each` the offset and data of every publication push in the next frame
    /// (or in the records [`Client::call`] kept), in order; skips other records, as a
    /// receiver does with [`Client::next_replies`], but reads JSON publications
    /// without building a `Reply` (see `client::lean`). Not cancel-safe either.
    pub async fn next_publications(
        &mut self,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<(), ClientError> {
        if !self.backlog.is_empty() || self.encoding == Encoding::Protobuf {
            for reply in self.next_replies().await? {
                if let Some(p) = reply.push.and_then(|p| p.r#pub) {
                    each(p.offset, &p.data);
                }
            }
            return Ok(());
        }
        loop {
            let frame = self.ws.read_frame().await?;
            let records = match frame.opcode {
                OpCode::Close => return Err(closed(&frame.payload)),
                OpCode::Text | OpCode::Binary => lean::records(&frame.payload)?,
                _ => continue,
            };
            if records.is_empty() {
                continue;
            }
            let pings = records
                .iter()
                .filter(|r| matches!(r, lean::Record::Ping))
                .count();
            let others = records.len() - pings;
            if pings == 0 {
                for (offset, data) in records.iter().filter_map(lean::Record::publication) {
                    each(offset, data);
                }
                return Ok(());
            }
            // Answer the ping before handing anything over, as `read_replies` does;
            // the pong needs the socket the borrowed records still hold.
            let owned: Vec<(u64, Vec<u8>)> = records
                .iter()
                .filter_map(lean::Record::publication)
                .map(|(offset, data)| (offset, data.to_vec()))
                .collect();
            drop(records);
            drop(frame);
            self.send(&Command::default()).await?;
            if others > 0 {
                for (offset, data) in &owned {
                    each(*offset, data);
                }
                return Ok(());
            }
        }
    }

    /// Closes the connection with a normal close frame (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.ws.write_frame(Frame::close(1000, b"")),
        )
        .await;
    }

    async fn send(&mut self, command: &Command) -> Result<(), ClientError> {
        let record = self.encoding.encode_command(command).map_err(undecodable)?;
        // Owned, so the frame is masked in place (a unique `Bytes` gives up its `Vec`).
        let payload = Payload::Owned(Vec::from(record));
        let frame = match self.encoding {
            Encoding::Json => Frame::text(payload),
            Encoding::Protobuf => Frame::binary(payload),
        };
        self.ws.write_frame(frame).await?;
        Ok(())
    }

    /// Reads one data frame, answering server pings; returns its non-ping replies.
    async fn read_replies(&mut self) -> Result<Vec<Reply>, ClientError> {
        loop {
            let frame = self.ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => return Err(closed(&frame.payload)),
                OpCode::Text | OpCode::Binary => {
                    let mut replies = self
                        .encoding
                        .decode_replies(&frame.payload, MAX_REPLIES_PER_FRAME)
                        .map_err(undecodable)?;
                    let pings = replies.iter().filter(|r| is_ping(r)).count();
                    if pings > 0 {
                        replies.retain(|r| !is_ping(r));
                        self.send(&Command::default()).await?;
                    }
                    if !replies.is_empty() {
                        return Ok(replies);
                    }
                }
                _ => {}
            }
        }
    }
}

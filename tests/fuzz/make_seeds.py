#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into seeds/<target>/.

Real protocol examples: commands as centrifuge-js sends them (JSON and
protobuf), server replies and pushes, masked WebSocket frames, HS256 tokens
signed with the targets' secret, server API bodies, channel names. Each seed
starts with the byte its target reads first (see the target's doc comment).
Run from anywhere; the output is deterministic, so re-running changes nothing.
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
# switchboard_fuzz::SECRET
SECRET = b"fuzz-secret"
# A fixed expiry far ahead (2100-01-01), so that seed tokens stay valid.
EXP = 4102444800


# --- protobuf, the little of it the seeds need ------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, value):
    """One field: int/bool as a varint, str/bytes (or an encoded message) length-delimited."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(*fields):
    return b"".join(field(n, v) for n, v in fields if v not in (None, b"", "", 0, False))


def delimited(msg):
    return varint(len(msg)) + msg


# --- JWT ----------------------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims, header=None):
    header = header or {"alg": "HS256", "typ": "JWT"}
    signing = b64url(compact(header)) + "." + b64url(compact(claims))
    signature = hmac.new(SECRET, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(signature)


def compact(value):
    return json.dumps(value, separators=(",", ":")).encode()


# --- WebSocket ----------------------------------------------------------------

def frame(payload, opcode=1, fin=True, mask=b"\x37\xfa\x21\x3d"):
    """A masked client frame."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += struct.pack(">H", n)
    else:
        head.append(0x80 | 127)
        head += struct.pack(">Q", n)
    return bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# --- the commands a centrifuge-js client sends --------------------------------

CONNECT_TOKEN = jwt({"sub": "42", "exp": EXP, "info": {"name": "Ann"}, "channels": ["news"]})
SUB_TOKEN = jwt({"sub": "42", "channel": "locked:x", "exp": EXP})


def json_commands():
    return [
        {"connect": {"name": "js", "version": "5.0.0"}, "id": 1},
        {"connect": {"token": CONNECT_TOKEN, "name": "js",
                     "subs": {"news": {"recover": True, "offset": 3, "epoch": "abc"}}}, "id": 1},
        {"subscribe": {"channel": "news"}, "id": 2},
        {"subscribe": {"channel": "chat:room#42", "recover": True, "offset": 0,
                       "epoch": "", "join_leave": True}, "id": 3},
        {"subscribe": {"channel": "locked:x", "token": SUB_TOKEN}, "id": 4},
        {"publish": {"channel": "news", "data": {"input": "hello"}}, "id": 5},
        {"presence": {"channel": "news"}, "id": 6},
        {"presence_stats": {"channel": "news"}, "id": 7},
        {"history": {"channel": "news", "limit": 10, "since": {"offset": 1, "epoch": "abc"},
                     "reverse": True}, "id": 8},
        {"ping": {}, "id": 9},
        {"rpc": {"method": "m", "data": [1, 2]}, "id": 10},
        {"refresh": {"token": CONNECT_TOKEN}, "id": 11},
        {"sub_refresh": {"channel": "locked:x", "token": SUB_TOKEN}, "id": 12},
        {"unsubscribe": {"channel": "news"}, "id": 13},
        {"send": {"data": {"async": True}}},
        {},
    ]


def pb_command(c):
    """The protobuf form of one of json_commands()."""
    def sub_req(s):
        return message((1, s.get("channel")), (2, s.get("token")), (3, s.get("recover")),
                       (6, s.get("epoch")), (7, s.get("offset")), (11, s.get("join_leave")))

    fields = [(1, c.get("id"))]
    if "connect" in c:
        r = c["connect"]
        subs = b"".join(field(3, message((1, name), (2, sub_req(s))))
                        for name, s in r.get("subs", {}).items())
        fields.append((4, message((1, r.get("token")), (4, r.get("name")),
                                  (5, r.get("version"))) + subs))
    for name, number in [("subscribe", 5), ("sub_refresh", 15)]:
        if name in c:
            fields.append((number, sub_req(c[name])))
    for name, number in [("unsubscribe", 6), ("presence", 8), ("presence_stats", 9)]:
        if name in c:
            fields.append((number, message((1, c[name]["channel"]))))
    if "publish" in c:
        fields.append((7, message((1, c["publish"]["channel"]),
                                  (2, compact(c["publish"]["data"])))))
    if "history" in c:
        h = c["history"]
        since = message((1, h["since"]["offset"]), (2, h["since"]["epoch"]))
        fields.append((10, message((1, h["channel"]), (7, h["limit"]), (8, since),
                                   (9, h["reverse"]))))
    if "ping" in c:
        fields.append((11, b""))
    if "send" in c:
        fields.append((12, message((1, compact(c["send"]["data"])))))
    if "rpc" in c:
        fields.append((13, message((1, compact(c["rpc"]["data"])), (2, c["rpc"]["method"]))))
    if "refresh" in c:
        fields.append((14, message((1, c["refresh"]["token"]))))
    # A request's field is there even when the request is empty (ping).
    return message(fields[0]) + b"".join(field(n, v) for n, v in fields[1:])


def json_frame(commands):
    return b"\n".join(compact(c) for c in commands)


def pb_frame(commands):
    return b"".join(delimited(pb_command(c)) for c in commands)


# --- what a server sends --------------------------------------------------------

INFO = {"user": "42", "client": "c1", "conn_info": {"name": "Ann"}}
PUBLICATION = {"data": {"text": "hi"}, "offset": 4, "info": INFO, "tags": {"k": "v"}}


def json_replies():
    return [
        {"id": 1, "connect": {"client": "c1", "version": "0.1.0", "expires": True, "ttl": 60,
                              "subs": {"news": {"recoverable": True, "epoch": "abc",
                                                "offset": 4}},
                              "ping": 25, "pong": True, "node": "n1"}},
        {"id": 2, "subscribe": {"recoverable": True, "epoch": "abc", "offset": 4,
                                "positioned": True, "recovered": True, "was_recovering": True,
                                "publications": [PUBLICATION]}},
        {"push": {"channel": "news", "pub": PUBLICATION}},
        {"push": {"channel": "news", "join": {"info": INFO}}},
        {"push": {"channel": "news", "leave": {"info": INFO}}},
        {"push": {"channel": "news", "unsubscribe": {"code": 2000, "reason": "server"}}},
        {"push": {"disconnect": {"code": 3001, "reason": "shutdown", "reconnect": True}}},
        {"id": 6, "presence": {"presence": {"c1": INFO}}},
        {"id": 7, "presence_stats": {"num_clients": 2, "num_users": 1}},
        {"id": 8, "history": {"publications": [PUBLICATION], "epoch": "abc", "offset": 4}},
        {"id": 9, "error": {"code": 103, "message": "permission denied", "temporary": True}},
        {"id": 10, "ping": {}},
        {},
    ]


def pb_info(i):
    return message((1, i["user"]), (2, i["client"]), (3, compact(i["conn_info"])))


def pb_publication(p):
    tags = b"".join(field(7, message((1, k), (2, v))) for k, v in p["tags"].items())
    return message((4, compact(p["data"])), (5, pb_info(p["info"])), (6, p["offset"])) + tags


def pb_replies():
    publication = pb_publication(PUBLICATION)
    return [
        message((1, 1), (5, message((1, "c1"), (2, "0.1.0"), (3, True), (4, 60), (7, 25),
                                    (8, True), (10, "n1"))
                 + field(6, message((1, "news"), (2, message((3, True), (6, "abc"),
                                                             (9, 4))))))),
        message((1, 2), (6, message((3, True), (6, "abc"), (7, publication), (8, True),
                                    (9, 4), (10, True)))),
        message((4, message((2, "news"), (4, publication)))),
        message((4, message((2, "news"), (5, message((1, pb_info(INFO))))))),
        message((1, 7), (10, message((1, 2), (2, 1)))),
        message((1, 9), (2, message((1, 103), (2, "permission denied"), (3, True)))),
        b"",
    ]


# --- the targets' seeds ------------------------------------------------------------

def write(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data)


JSON, PROTOBUF = 0, 1
# Selector of the codec targets: encoding in bit 0, the limit above it.
LIMIT_16 = 16 << 1


def seeds():
    commands = json_commands()
    for i, c in enumerate(commands):
        write("centrifugo_commands", f"json-{i:02}", bytes([LIMIT_16 | JSON]) + json_frame([c]))
        write("centrifugo_commands", f"pb-{i:02}", bytes([LIMIT_16 | PROTOBUF]) + pb_command_frame(c))
    write("centrifugo_commands", "json-batch",
          bytes([LIMIT_16 | JSON]) + json_frame(commands[2:8]) + b"\n")
    write("centrifugo_commands", "pb-batch", bytes([LIMIT_16 | PROTOBUF]) + pb_frame(commands[2:8]))

    for i, r in enumerate(json_replies()):
        write("centrifugo_replies", f"json-{i:02}", bytes([LIMIT_16 | JSON]) + compact(r))
    write("centrifugo_replies", "json-batch",
          bytes([LIMIT_16 | JSON]) + b"\n".join(compact(r) for r in json_replies()))
    for i, r in enumerate(pb_replies()):
        write("centrifugo_replies", f"pb-{i:02}", bytes([LIMIT_16 | PROTOBUF]) + delimited(r))
    write("centrifugo_replies", "pb-batch",
          bytes([LIMIT_16 | PROTOBUF]) + b"".join(delimited(r) for r in pb_replies()))

    # ws_frames: a 1,020-byte limit, read 7 bytes at a time.
    ws = bytes([255, 7])
    text = json_frame(commands[:3])
    write("ws_frames", "text", ws + frame(text))
    write("ws_frames", "binary", ws + frame(pb_frame(commands[:3]), opcode=2))
    write("ws_frames", "fragmented-with-ping",
          ws + frame(text[:10], fin=False) + frame(b"ping", opcode=9)
          + frame(text[10:20], opcode=0, fin=False) + frame(text[20:], opcode=0))
    write("ws_frames", "close", ws + frame(struct.pack(">H", 1000) + b"bye", opcode=8))
    write("ws_frames", "pong-then-text", ws + frame(b"", opcode=10) + frame(b"{}"))
    write("ws_frames", "length-126", ws + frame(b"x" * 300))
    write("ws_frames", "too-large", bytes([4, 1]) + frame(b"y" * 40))

    # client_session: connect first, then everything else, each command its own frame.
    for name, encoding, to_frame, opcode in [("json", JSON, json_frame, 1),
                                             ("pb", PROTOBUF, pb_command_frame, 2)]:
        def frames(cs):
            return b"".join(frame(to_frame([c]) if encoding == JSON else to_frame(c),
                                  opcode=opcode) for c in cs)
        anonymous, with_token = commands[0], commands[1]
        rest = commands[2:]
        write("client_session", f"{name}-anonymous", bytes([encoding]) + frames([anonymous] + rest))
        write("client_session", f"{name}-token", bytes([encoding]) + frames([with_token] + rest))
        write("client_session", f"{name}-subscribe-publish-history",
              bytes([encoding]) + frames([anonymous, commands[2], commands[5], commands[5],
                                          commands[8], commands[13], commands[15]]))
    # With a token signed by the target from the claims before the NUL.
    claims = compact({"sub": "42", "exp": EXP, "info": {"name": "Ann"},
                      "channels": ["news", "chat:1"]})
    for name, encoding, opcode in [("json", JSON, 1), ("pb", PROTOBUF, 2)]:
        to_frame = (lambda c: json_frame([c])) if encoding == JSON else pb_command_frame
        stream = b"".join(frame(to_frame(c), opcode=opcode) for c in commands[2:])
        write("client_session", f"{name}-claims", bytes([2 | encoding]) + claims + b"\0" + stream)
    write("client_session", "json-one-frame",
          bytes([JSON]) + frame(json_frame(commands[:1] + commands[2:9])))

    # jwt: bit 0 connection (0) or subscription (1); bits 1-2 token (0), claims (1),
    # header NUL claims (2).
    tokens = [
        (0, CONNECT_TOKEN),
        (0, jwt({"sub": ""})),
        (0, jwt({"sub": "7", "exp": 1})),
        (0, jwt({"sub": "7"}, header={"alg": "HS384", "typ": "JWT"})),
        (0, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiJ9."),
        (1, SUB_TOKEN),
        (1, jwt({"sub": "42", "channel": "chat:dm#42", "info": {"role": "x"}})),
    ]
    for i, (kind, token) in enumerate(tokens):
        write("jwt", f"token-{i:02}", bytes([kind]) + token.encode())
    claims = [
        (0, {"sub": "42", "exp": EXP, "info": {"name": "Ann"}, "channels": ["news", "chat:1"]}),
        (0, {"sub": "42", "exp": EXP, "nbf": 1, "iat": 1, "aud": "x", "iss": "y"}),
        (1, {"sub": "42", "channel": "locked:x", "exp": EXP, "info": [1, {"a": None}]}),
    ]
    for i, (kind, c) in enumerate(claims):
        write("jwt", f"claims-{i:02}", bytes([kind | 1 << 1]) + compact(c))
        write("jwt", f"header-claims-{i:02}",
              bytes([kind | 2 << 1]) + compact({"alg": "HS256", "typ": "JWT", "kid": "k1"})
              + b"\0" + compact(c))

    # api_bodies: byte 0 indexes switchboard_gateway::centrifugo::api::METHODS.
    methods = ["publish", "broadcast", "presence", "presence_stats", "history",
               "unsubscribe", "disconnect", "info", "channels"]
    bodies = [
        ("publish", {"channel": "news", "data": {"text": "hi"}}),
        ("publish", {"channel": "chat:1", "data": "x", "idempotency_key": "k1"}),
        ("broadcast", {"channels": ["news", "chat:1", "bad channel"], "data": [1, 2],
                       "idempotency_key": "b1"}),
        ("presence", {"channel": "news"}),
        ("presence_stats", {"channel": "chat:1"}),
        ("history", {"channel": "news", "limit": 10, "since": {"offset": 2, "epoch": "e"},
                     "reverse": True}),
        ("history", {"channel": "news", "limit": -1}),
        ("unsubscribe", {"channel": "news", "user": "42", "client": "c1"}),
        ("disconnect", {"user": "42", "disconnect": {"code": 4000, "reason": "bye"}}),
        ("disconnect", {"user": "42", "client": "c1"}),
        ("info", {}),
        ("channels", {"pattern": "chat:*"}),
    ]
    for i, (method, body) in enumerate(bodies):
        write("api_bodies", f"{i:02}-{method}", bytes([methods.index(method)]) + compact(body))
    write("api_bodies", "info-empty", bytes([methods.index("info")]))
    write("api_bodies", "unknown-method", bytes([len(methods)]) + b"{}")

    # channel_subject: a name, then NUL and a user or a pattern.
    for i, s in enumerate([b"news", b"chat:room", b"chat:dm#42,43\x0043", b"chat:a.b*>",
                           b"a:b:c", b"$sys.>", b":x", b"chat:1\x00chat:*", b"a-x-b\x00a*b*",
                           b"caf\xc3\xa9", b"x" * 255]):
        write("channel_subject", f"{i:02}", s)

    pusher_seeds()


def pusher_seeds():
    """The Pusher targets: messages as pusher-js sends them, API requests as the
    server SDKs make them."""
    channel_data = compact({"user_id": "1", "user_info": {"name": "Ann"}}).decode()
    user_data = compact({"id": "42", "user_info": {"name": "Ann"}}).decode()
    messages = [
        {"event": "pusher:ping", "data": {}},
        {"event": "pusher:subscribe", "data": {"channel": "orders"}},
        {"event": "pusher:subscribe", "data": {"channel": "private-orders"}},
        {"event": "pusher:subscribe", "data": {"channel": "presence-room",
                                                "channel_data": channel_data}},
        {"event": "pusher:subscribe", "data": {"channel": "cache-prices"}},
        {"event": "pusher:subscribe", "data": {"channel": "private-encrypted-x"}},
        {"event": "pusher:signin", "data": {"user_data": user_data}},
        {"event": "pusher:subscribe", "data": {"channel": "#server-to-user-42"}},
        {"event": "client-typing", "channel": "presence-room", "data": {"typing": True}},
        {"event": "client-x", "channel": "private-orders", "data": "text"},
        {"event": "client-x", "channel": "orders", "data": {}},
        {"event": "pusher:unsubscribe", "data": {"channel": "presence-room"}},
        {"event": "pusher:pong", "data": {}},
        {"event": "pusher:subscribe", "data": '{"channel":"as-a-string"}'},
    ]
    encoded = [compact(m) for m in messages]
    for i, m in enumerate(encoded):
        write("pusher_events", f"{i:02}", m)
    write("pusher_events", "channel-data", channel_data.encode())
    write("pusher_events", "user-data", user_data.encode())
    write("pusher_events", "numeric-user", b'{"user_id":10,"user_info":null}')
    # pusher_session: bit 0 clear, masked frames; set, NUL-separated messages signed here.
    write("pusher_session", "frames", bytes([0]) + b"".join(frame(m) for m in encoded))
    write("pusher_session", "signed", bytes([1]) + b"\0".join(encoded))
    write("pusher_session", "signed-presence-twice",
          bytes([1]) + b"\0".join([encoded[3], encoded[3], encoded[8], encoded[11]]))
    # pusher_api: bit 0 signed here, bit 1 POST; path NUL query NUL body.
    GET, POST, SIGNED = 0, 2, 1
    event = {"name": "order.shipped", "channels": ["orders", "presence-room"],
             "data": compact({"id": 1}).decode(), "socket_id": "1234.1234",
             "info": "subscription_count,user_count"}
    requests = [
        (POST | SIGNED, "events", "", compact(event)),
        (POST | SIGNED, "batch_events", "",
         compact({"batch": [{"name": "a", "channel": "cache-x", "data": "1"},
                            {"name": "b", "channel": "orders", "data": "2",
                             "info": "subscription_count"}]})),
        (GET | SIGNED, "channels", "filter_by_prefix=presence-&info=user_count", b""),
        (GET | SIGNED, "channels/presence-room", "info=subscription_count,user_count", b""),
        (GET | SIGNED, "channels/presence-room/users", "", b""),
        (POST | SIGNED, "users/42/terminate_connections", "", b"{}"),
        (POST, "events", "auth_key=fuzz-key&auth_timestamp=1&auth_version=1.0"
         "&auth_signature=00", compact(event)),
    ]
    for i, (selector, path, query, body) in enumerate(requests):
        write("pusher_api", f"{i:02}", bytes([selector]) + path.encode() + b"\0"
              + query.encode() + b"\0" + body)


def pb_command_frame(c):
    if isinstance(c, list):
        return pb_frame(c)
    return delimited(pb_command(c))


if __name__ == "__main__":
    shutil.rmtree(SEEDS, ignore_errors=True)
    seeds()

#!/usr/bin/env python3
"""A zonecast device written from docs/PROTOCOL.md alone, to prove the document is enough.

Usage: zc_client.py PAIR_HOST:PORT DEVICE SCENE KEY_HEX OBJECT X

Joins the scene, prints the snapshot, moves OBJECT to (X, 0, 0), then prints the first object
update relayed from another device and exits. Every received datagram is verified (tag,
recipient, direction) before use. Prints one JSON object per line. Needs `cryptography`.
"""

import json
import socket
import struct
import sys
import time

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

HEADER = struct.Struct("<2sBBIIQQHH")  # magic, version, kind, device, scene, seq, timestamp_ns, body_len, flags
OBJECT_HEAD = struct.Struct("<QIBBHQQ")  # object, origin_device, mask, flags, payload_len, origin_seq, origin_ts
SNAPSHOT_HEAD = struct.Struct("<IHHHH")  # snapshot_id, chunk_index, chunk_count, object_count, reserved
TAG_LEN = 16
TO_SERVER, TO_DEVICE = 0, 1
JOIN, UPDATE, SNAPSHOT, BUNDLE = 1, 5, 8, 12


def nonce(device, direction, seq):
    return struct.pack("<IB", device, direction) + struct.pack("<Q", seq)[:7]


def seal(key, kind, device, scene, seq, body):
    header = HEADER.pack(b"ZC", 1, kind, device, scene, seq, time.time_ns(), len(body), 0)
    tag = ChaCha20Poly1305(key).encrypt(nonce(device, TO_SERVER, seq), b"", header + body)
    return header + body + tag


def open_datagram(key, data, device):
    if len(data) < HEADER.size + TAG_LEN or len(data) > 1200:
        raise ValueError("bad size")
    magic, version, kind, dev, scene, seq, ts, body_len, flags = HEADER.unpack_from(data)
    if magic != b"ZC" or version != 1 or flags != 0 or HEADER.size + body_len + TAG_LEN != len(data):
        raise ValueError("bad framing")
    if dev != device:
        raise ValueError("not for me")
    signed, tag = data[:-TAG_LEN], data[-TAG_LEN:]
    # Raises InvalidTag on a forgery.
    ChaCha20Poly1305(key).decrypt(nonce(dev, TO_DEVICE, seq), tag, signed)
    return kind, data[HEADER.size:HEADER.size + body_len]


def parse_object(body):
    obj, origin, mask, _flags, payload_len, origin_seq, origin_ts = OBJECT_HEAD.unpack_from(body)
    at = OBJECT_HEAD.size
    record = {"object": obj, "origin_device": origin, "mask": mask}
    for bit, name, count in ((1, "translation", 3), (2, "rotation", 4), (4, "scale", 3)):
        if mask & bit:
            record[name] = list(struct.unpack_from("<%df" % count, body, at))
            at += 4 * count
    record["payload"] = body[at:at + payload_len].hex()
    return record, at + payload_len


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    device, scene = int(sys.argv[2]), int(sys.argv[3])
    key = bytes.fromhex(sys.argv[4])
    obj, x = int(sys.argv[5]), float(sys.argv[6])
    pair = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    seq = time.time_ns() // 1000

    sock.sendto(seal(key, JOIN, device, scene, seq, struct.pack("<fI", 0.0, 0)), pair)
    seq += 1
    while True:
        kind, body = open_datagram(key, sock.recv(2048), device)
        if kind == SNAPSHOT:
            _sid, index, count, n, _ = SNAPSHOT_HEAD.unpack_from(body)
            print(json.dumps({"event": "snapshot", "chunk": index, "chunks": count, "objects": n}), flush=True)
            break

    update = OBJECT_HEAD.pack(obj, 0, 1, 0, 0, 0, 0) + struct.pack("<3f", x, 0.0, 0.0)
    sock.sendto(seal(key, UPDATE, device, scene, seq, update), pair)
    seq += 1
    while True:
        kind, body = open_datagram(key, sock.recv(2048), device)
        if kind == BUNDLE:
            # Entries: kind (u8), reserved (u8), len (u16 LE), object body.
            entry_kind, _, length = struct.unpack_from("<BBH", body)
            kind, body = entry_kind, body[4:4 + length]
        if kind == UPDATE:
            record, used = parse_object(body)
            assert used == len(body), "trailing bytes"
            print(json.dumps({"event": "update", **record}), flush=True)
            return


if __name__ == "__main__":
    main()

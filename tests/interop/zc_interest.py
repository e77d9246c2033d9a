#!/usr/bin/env python3
"""Interest areas (protocol revision 2) from docs/PROTOCOL.md alone, next to zc_client.py.

Usage: zc_interest.py PAIR_HOST:PORT DEVICE SCENE KEY_HEX RADIUS

Joins with a sphere of RADIUS around (0, 0, 0) on layer 0 and prints the complete snapshot;
prints the first object that enters (an ObjectOverwrite with its full state) and the notice
when it leaves (ObjectLeft); then moves its area to that object's last position with an
Interest datagram and prints the incremental snapshot that answers it, and exits. Every
datagram is verified before use (zc_client.open_datagram). Prints one JSON object per line.
"""

import json
import socket
import struct
import sys
import time

from zc_client import BUNDLE, OBJECT_HEAD, SNAPSHOT, SNAPSHOT_HEAD, open_datagram, parse_object, seal

JOIN, OVERWRITE, OBJECT_LEFT, INTEREST = 1, 6, 15, 16
SPHERE = 2
SNAPSHOT_INCREMENTAL = 1


def area(anchor, radius):
    """An interest area: anchor, one shape (layer 0): a sphere of `radius`."""
    head = struct.pack("<3fB3x", *anchor, 1)
    return head + struct.pack("<B3x3f", SPHERE, radius, 0.0, 0.0)


def events(sock, key, device):
    """Yields (kind, body) of every verified datagram, bundle entries one by one."""
    while True:
        kind, body = open_datagram(key, sock.recv(2048), device)
        if kind != BUNDLE:
            yield kind, body
            continue
        at = 0
        while at < len(body):
            entry_kind, _, length = struct.unpack_from("<BBH", body, at)
            yield entry_kind, body[at + 4:at + 4 + length]
            at += 4 + length


def snapshot_objects(body):
    _sid, index, count, n, flags = SNAPSHOT_HEAD.unpack_from(body)
    at, objects = SNAPSHOT_HEAD.size, []
    for _ in range(n):
        record, used = parse_object(body[at:])
        objects.append(record)
        at += used
    return {"chunk": index, "chunks": count, "incremental": bool(flags & SNAPSHOT_INCREMENTAL),
            "objects": objects}


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    device, scene = int(sys.argv[2]), int(sys.argv[3])
    key = bytes.fromhex(sys.argv[4])
    radius = float(sys.argv[5])
    pair = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    seq = time.time_ns() // 1000

    sock.sendto(seal(key, JOIN, device, scene, seq, area((0.0, 0.0, 0.0), radius)), pair)
    seq += 1
    stream = events(sock, key, device)
    for kind, body in stream:
        if kind == SNAPSHOT:
            print(json.dumps({"event": "snapshot", **snapshot_objects(body)}), flush=True)
            break
    last = None
    for kind, body in stream:
        if kind == OVERWRITE:
            record, _ = parse_object(body)
            print(json.dumps({"event": "overwrite", **record}), flush=True)
        elif kind == OBJECT_LEFT:
            record, used = parse_object(body)
            assert used == len(body) and record["mask"] == 0, "a notice carries no fields"
            print(json.dumps({"event": "left", **record}), flush=True)
            last = record["object"]
            break
    # Where did it go? The Rust side tells us on stdin: the x it moved it to.
    x = float(sys.stdin.readline())
    sock.sendto(seal(key, INTEREST, device, scene, seq, area((x, 0.0, 0.0), 5.0)), pair)
    seq += 1
    for kind, body in stream:
        if kind == SNAPSHOT:
            snap = snapshot_objects(body)
            if snap["incremental"]:
                print(json.dumps({"event": "snapshot", "left_object": last, **snap}), flush=True)
                return


if __name__ == "__main__":
    main()

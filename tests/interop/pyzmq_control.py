#!/usr/bin/env python3
"""Drives a zonecast controller from pyzmq (libzmq, the reference ZeroMQ implementation).

Usage: pyzmq_control.py ENDPOINT TOKEN [SERVER_PUBLIC_KEY_Z85]

With a server key every socket talks CurveZMQ (a fresh client key pair each). A REQ socket sends scene.create, device.register, cluster.status and some bad requests; a
DEALER socket sends one request with its own envelope. Prints one JSON line of findings; exits
non-zero on the first surprise.
"""

import json
import sys

import zmq


def curve(sock):
    if len(sys.argv) > 3:
        public, secret = zmq.curve_keypair()
        sock.curve_serverkey = sys.argv[3].encode()
        sock.curve_publickey = public
        sock.curve_secretkey = secret


def main():
    endpoint, token = sys.argv[1], sys.argv[2]
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    curve(req)
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(endpoint)

    def call(body):
        req.send(body if isinstance(body, bytes) else json.dumps(body).encode())
        return json.loads(req.recv())

    created = call({"op": "scene.create", "token": token, "name": "from-pyzmq", "region": "eu"})
    assert created["ok"] is True, created
    scene = created["scene"]["id"]
    device = call({"op": "device.register", "scene": scene, "name": "py"})
    assert device["ok"] is True, device
    assert len(device["key"]) == 64 and ":" in device["udp"], device
    status = call({"op": "cluster.status", "token": token})
    assert status["ok"] is True and status["devices"] >= 1, status
    assert any(s["name"] == "from-pyzmq" for s in status["scenes"]), status

    errors = {
        "not_json": call(b"{nope")["error"]["code"],
        "unknown_op": call({"op": "scene.teleport"})["error"]["code"],
        "no_token": call({"op": "cluster.status"})["error"]["code"],
        "unknown_scene": call({"op": "device.register", "scene": 999999})["error"]["code"],
        "too_large": call(b" " * 70000)["error"]["code"],
    }
    expected = {
        "not_json": "bad_request",
        "unknown_op": "unknown_op",
        "no_token": "unauthorized",
        "unknown_scene": "unknown_scene",
        "too_large": "too_large",
    }
    assert errors == expected, errors

    dealer = ctx.socket(zmq.DEALER)
    curve(dealer)
    dealer.setsockopt(zmq.RCVTIMEO, 5000)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    dealer.send_multipart([b"", json.dumps({"op": "discovery"}).encode()])
    frames = dealer.recv_multipart()
    assert frames[0] == b"" and json.loads(frames[-1])["ok"] is True, frames

    print(json.dumps({"scene": scene, "device": device["device"], "epoch": status["epoch"], "errors": errors}))


if __name__ == "__main__":
    main()

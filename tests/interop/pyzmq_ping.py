#!/usr/bin/env python3
"""A legitimate pyzmq (libzmq) client: one `discovery` request to a zonecast controller.

Usage: pyzmq_ping.py ENDPOINT [SERVER_PUBLIC_KEY_Z85]

With a server key it talks CurveZMQ (a fresh client key pair). Prints the reply as one JSON
line; exits 1 if no reply comes within 5 seconds.
"""

import json
import sys

import zmq


def main():
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.setsockopt(zmq.LINGER, 0)
    if len(sys.argv) > 2:
        public, secret = zmq.curve_keypair()
        req.curve_serverkey = sys.argv[2].encode()
        req.curve_publickey = public
        req.curve_secretkey = secret
    req.connect(sys.argv[1])
    req.send(json.dumps({"op": "discovery"}).encode())
    try:
        print(req.recv().decode())
    except zmq.Again:
        sys.exit("no reply")


if __name__ == "__main__":
    main()

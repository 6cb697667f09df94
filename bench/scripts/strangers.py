#!/usr/bin/env python3
"""Strangers at a job's ports during its bootstrap (bench/scripts/reliability.sh strangers).

usage: strangers.py SECONDS PORT...

Against every port: 20 connect-and-close, 20 connections that send 64 garbage bytes and close,
20 resets (SO_LINGER 0), then 2,000 idle connections per port held open for SECONDS, then
closed. Prints what it did; a port that refuses is counted, not an error (a listener may be
gone once the job is up).
"""
import os
import socket
import struct
import sys
import time


def attempt(port, what):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        if what == "garbage":
            s.sendall(os.urandom(64))
        if what == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        return True
    except OSError:
        s.close()
        return False


def main():
    hold = float(sys.argv[1])
    ports = [int(p) for p in sys.argv[2:]]
    for port in ports:
        done = {w: sum(attempt(port, w) for _ in range(20)) for w in ("close", "garbage", "reset")}
        print(f"port {port}: connect-close {done['close']}/20, garbage {done['garbage']}/20, "
              f"resets {done['reset']}/20", flush=True)
    # Non-blocking connects: a listener that is not accepting right now (its queue full)
    # must not stall the flood.
    idle = []
    for port in ports:
        for _ in range(2000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            idle.append((port, s))
    time.sleep(2)
    for port in ports:
        ok = 0
        for p, s in idle:
            if p != port:
                continue
            try:
                s.getpeername()
                ok += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            except OSError:
                pass
        print(f"port {port}: {ok}/2000 idle connections established", flush=True)
    idle = [s for _, s in idle]
    time.sleep(hold)
    for s in idle:
        s.close()
    print(f"closed {len(idle)} idle connections", flush=True)


if __name__ == "__main__":
    main()

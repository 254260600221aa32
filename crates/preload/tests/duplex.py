# Under libustack_preload.so: one thread sends on a TCP socket while another
# receives on the same socket, against a kernel echo server.
#   duplex.py PEER_IP TCP_ECHO_PORT ROUNDS
# Rounds alternate: waits in poll with a timeout (what settimeout does: the
# socket is non-blocking underneath) or blocking calls; large writes and
# reads, or tiny ones (many more wakeups, and the echo server's window
# closes and opens often). Every byte must come back, in order, with no
# wait running into its timeout. Prints "duplex ok".
import hashlib, socket, sys, threading, time

peer, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
TIMEOUT = 10.0

def connect():
    for _ in range(50):
        try:
            return socket.create_connection((peer, port), timeout=TIMEOUT)
        except ConnectionRefusedError:
            time.sleep(0.1)
    raise SystemExit("connect refused 50 times")

for round_ in range(rounds):
    total, step, read = ((4 << 20, 16384, 65536), (1 << 20, 32, 7))[round_ // 2 % 2]
    s = connect()
    s.settimeout(TIMEOUT if round_ % 2 else None)
    errors, sent_hash, recv_hash = [], hashlib.sha256(), hashlib.sha256()

    def sender():
        try:
            for i in range(total // step):
                data = (hashlib.sha256(i.to_bytes(8, "little")).digest() * (step // 32 + 1))[:step]
                sent_hash.update(data)
                s.sendall(data)
        except Exception as e:  # reported below
            errors.append("send: %r" % e)

    def receiver():
        got = 0
        try:
            while got < total:
                d = s.recv(read)
                if not d:
                    errors.append("receive: end of stream after %d bytes" % got)
                    return
                recv_hash.update(d)
                got += len(d)
        except Exception as e:
            errors.append("receive: %r after %d of %d bytes" % (e, got, total))

    ts = [threading.Thread(target=sender), threading.Thread(target=receiver)]
    start = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    what = "round %d (%d-byte writes, %d-byte reads, %s)" % (round_, step, read, "poll" if round_ % 2 else "blocking")
    assert not any(t.is_alive() for t in ts), "%s: a thread is still waiting after 60 s" % what
    assert not errors, "%s: %s" % (what, errors)
    assert sent_hash.digest() == recv_hash.digest(), "%s: the echo differs" % what
    s.close()
    print("%s: %d KiB each way in %.2f s" % (what, total >> 10, time.monotonic() - start), flush=True)
print("duplex ok", flush=True)

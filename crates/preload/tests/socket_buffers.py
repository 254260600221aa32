# SO_SNDBUF and SO_RCVBUF on ustack sockets, against kernel peers. Run
# under libustack_preload.so for the `fill` and `hold` roles, plainly (on the
# kernel) for `sink` and `push`. Every wait is bounded.
#   socket_buffers.py sink PORT       kernel: accept, never read (SO_RCVBUF 4 KiB)
#   socket_buffers.py fill PEER PORT  library: send without blocking into a
#       sink until nothing more goes for 1 s, with SO_SNDBUF 16 KiB and then
#       without; prints "fill sndbuf=N accepted=BYTES" for each
#   socket_buffers.py hold PORT       library: listeners that never read:
#       PORT with SO_RCVBUF 8 KiB set before listen, PORT+1 without, PORT+2
#       with it set after listen (as nginx does); prints "listening", then
#       "accepted port=P rcvbuf=N" per connection
#   socket_buffers.py push PEER PORT  kernel: send without blocking until
#       nothing more goes for 1 s; prints "push port=P wscale=W acked=BYTES"
#       (the window scale the peer's SYN-ACK offered, from TCP_INFO, and the
#       bytes it acknowledged: sent less SIOCOUTQ)
import fcntl, socket, struct, sys, termios, time

S = socket
LINGER_RESET = struct.pack("ii", 1, 0)


def push_until_stuck(s):
    """Bytes send() took until none went for a second (at most 20 s)."""
    s.setblocking(False)
    chunk = b"x" * 16384
    total, last = 0, time.monotonic()
    end = last + 20
    while time.monotonic() - last < 1.0 and time.monotonic() < end:
        try:
            total += s.send(chunk)
            last = time.monotonic()
        except BlockingIOError:
            time.sleep(0.02)
    return total


def reported(s, opt, want):
    got = s.getsockopt(S.SOL_SOCKET, opt)
    if got != want:
        raise SystemExit(f"getsockopt({opt}) = {got}, not {want}")


role = sys.argv[1]
if role == "sink":
    port = int(sys.argv[2])
    l = S.socket()
    l.setsockopt(S.SOL_SOCKET, S.SO_REUSEADDR, 1)
    l.setsockopt(S.SOL_SOCKET, S.SO_RCVBUF, 4096)
    l.bind(("0.0.0.0", port))
    l.listen(8)
    l.settimeout(1.0)
    print("listening", flush=True)
    held, end = [], time.monotonic() + 50
    while time.monotonic() < end:
        try:
            held.append(l.accept()[0])
        except TimeoutError:
            pass
elif role == "fill":
    peer, port = sys.argv[2], int(sys.argv[3])
    for sndbuf in (16384, 0):
        s = S.socket()
        if sndbuf:
            s.setsockopt(S.SOL_SOCKET, S.SO_SNDBUF, sndbuf)
            reported(s, S.SO_SNDBUF, 2 * sndbuf)
        t = time.monotonic()
        s.settimeout(10)
        s.connect((peer, port))
        connected = time.monotonic() - t
        accepted = push_until_stuck(s)
        print(f"fill sndbuf={sndbuf} accepted={accepted} connect={connected:.2f}s total={time.monotonic() - t:.2f}s", flush=True)
        # Reset, so that the library's exit does not wait for the sink.
        s.setsockopt(S.SOL_SOCKET, S.SO_LINGER, LINGER_RESET)
        s.close()
elif role == "hold":
    port = int(sys.argv[2])
    listeners = []
    for p, rcvbuf, before in ((port, 8192, True), (port + 1, 0, True), (port + 2, 8192, False)):
        l = S.socket()
        if rcvbuf and before:
            l.setsockopt(S.SOL_SOCKET, S.SO_RCVBUF, rcvbuf)
        l.bind(("0.0.0.0", p))
        l.listen(8)
        if rcvbuf and not before:
            l.setsockopt(S.SOL_SOCKET, S.SO_RCVBUF, rcvbuf)
        if rcvbuf:
            reported(l, S.SO_RCVBUF, 2 * rcvbuf)
        l.setblocking(False)
        listeners.append((p, l))
    print("listening", flush=True)
    held, end = [], time.monotonic() + 50
    while time.monotonic() < end:
        for p, l in listeners:
            try:
                c = l.accept()[0]
            except BlockingIOError:
                continue
            held.append(c)
            print(f"accepted port={p} rcvbuf={c.getsockopt(S.SOL_SOCKET, S.SO_RCVBUF)}", flush=True)
        time.sleep(0.02)
elif role == "push":
    peer, port = sys.argv[2], int(sys.argv[3])
    s = S.create_connection((peer, port), timeout=10)
    # struct tcp_info: byte 6 holds tcpi_snd_wscale (low 4 bits).
    wscale = s.getsockopt(S.IPPROTO_TCP, S.TCP_INFO, 104)[6] & 0x0F
    sent = push_until_stuck(s)
    unacked = struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    print(f"push port={port} wscale={wscale} acked={sent - unacked}", flush=True)
    s.setsockopt(S.SOL_SOCKET, S.SO_LINGER, LINGER_RESET)
    s.close()
else:
    raise SystemExit(f"unknown role {role}")

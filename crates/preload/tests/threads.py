# Under libustack_preload.so: several threads on ustack sockets at once.
#   threads.py PEER_IP TCP_ECHO_PORT UDP_ECHO_PORT
# 1. one thread blocks in recv on a TCP connection while another sends on it;
# 2. a recv blocked in one thread ends when another shuts the socket down;
# 3. four threads each run their own TCP connection (200 KB echoed in
#    16 KB steps) and one a UDP exchange, all at once.
import socket, sys, threading, time

peer, tport, uport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def connect():
    for _ in range(50):
        try:
            return socket.create_connection((peer, tport), timeout=10)
        except ConnectionRefusedError:
            time.sleep(0.1)
    raise SystemExit("connect refused 50 times")

def recv_exactly(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out

# 1. blocking recv in one thread, send from another
s = connect()
s.settimeout(None)  # truly blocking: recv sleeps on the socket's doorbell
got = []
t = threading.Thread(target=lambda: got.append(recv_exactly(s, 5)))
t.start()
time.sleep(0.3)
s.sendall(b"hello")
t.join(10)
assert not t.is_alive() and got == [b"hello"], got
print("blocked recv woken by another thread's send", flush=True)

# 2. a recv blocked in one thread ends when another thread shuts the socket down
got = []
t = threading.Thread(target=lambda: got.append(s.recv(10)))
t.start()
time.sleep(0.3)
s.shutdown(socket.SHUT_RD)
t.join(10)
assert not t.is_alive() and got == [b""], got
s.close()
print("blocked recv ended by shutdown from another thread", flush=True)

# 3. five threads at once
errors = []
def tcp_worker(i):
    try:
        c = connect()
        for step in range(13):
            data = bytes([i, step]) * 8192
            c.sendall(data)
            back = recv_exactly(c, len(data))
            assert back == data, (i, step, len(back))
        c.close()
    except Exception as e:  # reported below
        errors.append(repr(e))

def udp_worker():
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(10)
        for k in range(20):
            u.sendto(b"dgram %d" % k, (peer, uport))
            d, _ = u.recvfrom(100)
            assert d == b"dgram %d" % k, d
        u.close()
    except Exception as e:
        errors.append(repr(e))

ts = [threading.Thread(target=tcp_worker, args=(i,)) for i in range(4)] + [threading.Thread(target=udp_worker)]
for t in ts:
    t.start()
for t in ts:
    t.join(30)
assert not errors and not any(t.is_alive() for t in ts), errors

# 4. level-triggered epoll over a descriptor number closed and reused while
#    its socket was still on the set's ready list: one event per poll.
import select
ep = select.epoll()
for k in range(5):
    c = connect()
    ep.register(c.fileno(), select.EPOLLIN)
    c.sendall(b"x")
    got = [fd for fd, _ in ep.poll(10)]
    assert got == [c.fileno()], got
    c.close()  # unread: it was reported, level-triggered, and stays ready
    d = connect()
    ep.register(d.fileno(), select.EPOLLIN)
    d.sendall(b"y")
    time.sleep(0.2)  # the echo arrives before the poll looks
    got = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        got = [fd for fd, _ in ep.poll(1)]
    assert got == [d.fileno()], ("one event per member and poll", k, got)
    assert d.recv(10, socket.MSG_DONTWAIT) == b"y"
    ep.unregister(d.fileno())
    d.close()
ep.close()
print("threads ok", flush=True)

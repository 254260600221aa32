#!/usr/bin/env python3
"""Many concurrent TCP clients against one echo server, all held open at once.

Used by crates/ustack/tests/tcp_many_clients.rs, run with `ip netns exec` in
the test's own namespace (traffic only to the stack's address there).

The connections are spread over --procs worker processes (forked; each one
epoll and non-blocking sockets). One process cannot be relied on to hold
20,000 sockets: RLIMIT_NOFILE may be capped at about that by a hard limit
that only CAP_SYS_RESOURCE may raise, and containers often drop that
capability (with fewer still, main() starts more workers). Worker w owns
connections w, w + procs, w + 2 * procs, ...; the parent steps all of them
through the phases together, so "all held open at once" is a barrier across
the workers:

1. connect: every worker opens its share to --dst:--port, binding the sources
   in --srcs round-robin by connection index; at most --window handshakes are
   in flight over all workers (so the SYN rate stays under the server's
   listen backlog);
2. hold: all --count are established at the same time; the workers watch
   their sockets (any data, EOF or RST now fails), the parent checks the
   kernel's own table (/proc/net/tcp, which covers the whole namespace) and
   the stack's side with --stats-cmd (`ustack stats --json`,
   tcp.states.ESTABLISHED);
3. echo: a distinct 16-byte message on every connection (at most --window
   outstanding in all), every echo checked byte for byte;
4. close: half-close every connection and wait for the server's FIN (EOF) on
   each, then close.

Every phase is bounded by one overall --deadline, in the workers too; a
worker is killed if the parent dies (PR_SET_PDEATHSIG), so killing the
parent on the test's hard bound leaves no process behind. Prints progress on
stderr and one `RESULT {json}` line on stdout; exits 0 only if all of it held.
"""

import argparse
import ctypes
import errno
import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback

IP_BIND_ADDRESS_NO_PORT = 24
PR_SET_PDEATHSIG = 1
MSG_LEN = 16
# Selector key data of the worker's command pipe (socket keys are indices).
PIPE = -1


def log(t0, text):
    print(f"[{time.monotonic() - t0:7.2f}s] {text}", file=sys.stderr, flush=True)


def message(i, count):
    m = b"#%07d/%07d" % (i, count)
    assert len(m) == MSG_LEN
    return m


def raise_nofile(need):
    """Soft RLIMIT_NOFILE up to `need` if the hard limit allows (or root may
    raise the hard one too); returns the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(need, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def kernel_established(dst, port):
    """Connections in /proc/net/tcp in ESTABLISHED (01) to dst:port."""
    a = [int(x) for x in dst.split(".")]
    # /proc/net/tcp prints the address as a host-order (little-endian) u32.
    want = "%02X%02X%02X%02X:%04X" % (a[3], a[2], a[1], a[0], port)
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split(None, 4)
            if parts[2] == want and parts[3] == "01":
                n += 1
    return n


def stack_snapshot(cmd):
    out = subprocess.run(cmd, capture_output=True, timeout=10, check=False)
    if out.returncode != 0:
        raise Failed(f"{cmd}: exit {out.returncode}: {out.stderr.decode(errors='replace')}")
    return json.loads(out.stdout)


def rss_kib(pid):
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Failed(Exception):
    pass


# ------------------------------------------------------------------ worker ---


class Worker:
    """One process's share of the connections, driven phase by phase by the
    parent over `conn`."""

    def __init__(self, args, w, procs, conn, end):
        self.args = args
        self.conn = conn
        self.end = end
        self.n = args.count
        self.srcs = [s for s in args.srcs.split(",") if s]
        self.mine = list(range(w, args.count, procs))
        # The window is shared: each worker keeps its part of it in flight.
        self.window = max(1, args.window // procs)
        self.socks = {}
        self.sel = selectors.DefaultSelector()
        self.sel.register(conn.fileno(), selectors.EVENT_READ, PIPE)
        self.last_progress = time.monotonic()

    def remaining(self):
        r = self.end - time.monotonic()
        if r <= 0:
            raise Failed("deadline of %.0f s passed" % self.args.deadline)
        return r

    def progress(self, phase, done, in_flight):
        now = time.monotonic()
        if now - self.last_progress >= 2:
            self.conn.send(("progress", phase, done, in_flight))
            self.last_progress = now

    def command(self, want=None):
        """The parent's next command, bounded; "exit" ends this worker now
        (the parent has what it needs, or gave up)."""
        if not self.conn.poll(self.remaining()):
            raise Failed(f"no command from the parent within the deadline (want {want!r})")
        try:
            cmd = self.conn.recv()
        except EOFError:
            raise Failed("parent went away") from None
        if cmd == "exit":
            os._exit(0)
        if want is not None and cmd != want:
            raise Failed(f"parent said {cmd!r}, want {want!r}")
        return cmd

    def select(self):
        """Socket events; a command from the parent now can only be "exit"."""
        events = []
        for key, _ in self.sel.select(timeout=min(1.0, self.remaining())):
            if key.data == PIPE:
                cmd = self.command()
                raise Failed(f"parent said {cmd!r} in the middle of a phase")
            events.append(key.data)
        return events

    def windowed(self, phase, start, handle, first_alone=False):
        """start(i) on each of this worker's connections in turn, at most its
        window of them unfinished at once; handle(i) on each event of one,
        True once it is finished. Returns how many finished (all of them)."""
        todo = iter(self.mine)
        active = 0
        done = 0
        exhausted = False
        while done < len(self.mine):
            window = 1 if first_alone and not done else self.window
            while active < window and not exhausted:
                i = next(todo, None)
                if i is None:
                    exhausted = True
                    break
                start(i)
                active += 1
            for i in self.select():
                if handle(i):
                    active -= 1
                    done += 1
            self.progress(phase, done, active)
        return done

    def connect(self):
        def start(i):
            src = self.srcs[i % len(self.srcs)]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            # The port is picked at connect() from the 4-tuple, not at bind()
            # from the source address alone: each source then has the whole
            # ephemeral range for this one destination.
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((src, 0))
            err = s.connect_ex((self.args.dst, self.args.port))
            if err not in (0, errno.EINPROGRESS):
                raise Failed(f"connect #{i} from {src}: {os.strerror(err)}")
            self.socks[i] = s
            self.sel.register(s, selectors.EVENT_WRITE, i)

        def handle(i):
            s = self.socks[i]
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self.sel.unregister(s)
            if err != 0:
                raise Failed(f"connect #{i} from {s.getsockname()}: {os.strerror(err)}")
            return True

        # One handshake alone first: the stack learns this worker's source's
        # MAC from it (one source per worker: main() checks that). Until then
        # it would queue its SYN-ACKs for that address, and that queue is
        # short (3 packets, as Linux's old unres_qlen): a cold burst costs
        # drops and a 1 s retransmission.
        return self.windowed("connect", start, handle, first_alone=True)

    def hold(self, until):
        """Until the parent says `until`, no socket may see anything."""
        for i, s in self.socks.items():
            self.sel.register(s, selectors.EVENT_READ, i)
        while True:
            for key, _ in self.sel.select(timeout=min(1.0, self.remaining())):
                if key.data == PIPE:
                    self.command(until)
                    for s in self.socks.values():
                        self.sel.unregister(s)
                    return
                s = self.socks[key.data]
                try:
                    data = s.recv(64)
                    what = f"data {data!r}" if data else "EOF"
                except OSError as e:
                    what = str(e)
                raise Failed(f"connection #{key.data} ({s.getsockname()}) while held: {what}")

    def echo(self):
        got = {}

        def start(i):
            sent = self.socks[i].send(message(i, self.n))
            if sent != MSG_LEN:
                raise Failed(f"send #{i}: {sent} of {MSG_LEN} bytes")
            got[i] = b""
            self.sel.register(self.socks[i], selectors.EVENT_READ, i)

        def handle(i):
            try:
                data = self.socks[i].recv(MSG_LEN * 2)
            except BlockingIOError:
                return False
            except OSError as e:
                raise Failed(f"connection #{i}: {e} while waiting for its echo") from None
            if not data:
                raise Failed(f"connection #{i}: EOF after {len(got[i])} echo bytes")
            got[i] += data
            want = message(i, self.n)
            if len(got[i]) > MSG_LEN or not want.startswith(got[i]):
                raise Failed(f"connection #{i}: echo {got[i]!r}, want {want!r}")
            if len(got[i]) < MSG_LEN:
                return False
            self.sel.unregister(self.socks[i])
            return True

        return self.windowed("echo", start, handle)

    def close(self):
        def start(i):
            self.socks[i].shutdown(socket.SHUT_WR)
            self.sel.register(self.socks[i], selectors.EVENT_READ, i)

        def handle(i):
            try:
                data = self.socks[i].recv(64)
            except BlockingIOError:
                return False
            except OSError as e:
                raise Failed(f"connection #{i}: {e} while waiting for the server's FIN") from None
            if data:
                raise Failed(f"connection #{i}: unexpected {data!r} after the echo")
            s = self.socks.pop(i)
            self.sel.unregister(s)
            s.close()
            return True

        return self.windowed("close", start, handle)

    def run(self):
        self.conn.send(("connected", self.connect()))
        self.hold("echo")
        self.conn.send(("echoed", self.echo()))
        self.command("close")
        self.conn.send(("closed", self.close()))
        self.command("exit")


def worker_main(args, w, procs, conn, end, parent):
    # Die with the parent: the test kills only the process it started.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    try:
        Worker(args, w, procs, conn, end).run()
    except Failed as e:
        conn.send(("failed", str(e)))
    except Exception:  # noqa: BLE001 -- any bug here must reach the parent's RESULT
        conn.send(("failed", traceback.format_exc()))
    # Sockets close with the process; skip the interpreter's teardown.
    os._exit(0)


# ------------------------------------------------------------------ parent ---


class Workers:
    def __init__(self, args, t0, end):
        self.t0 = t0
        self.end = end
        self.deadline = args.deadline
        ctx = multiprocessing.get_context("fork")
        self.procs = []
        self.conns = []
        for w in range(args.procs):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(args, w, args.procs, theirs, end, os.getpid()), daemon=True)
            p.start()
            # Only the worker holds its end now: its death is EOF here.
            theirs.close()
            self.procs.append(p)
            self.conns.append(mine)

    def send(self, cmd):
        for c in self.conns:
            c.send(cmd)

    def poll(self, timeout, want=None, got=None, progress=None):
        """Messages for up to `timeout`; a failure or a dead worker raises."""
        for c in multiprocessing.connection.wait(self.conns, timeout=timeout):
            w = self.conns.index(c)
            try:
                msg = c.recv()
            except EOFError:
                raise Failed(f"worker {w} died (exit code {self.procs[w].exitcode})") from None
            if msg[0] == "failed":
                raise Failed(f"worker {w}: {msg[1]}")
            if msg[0] == "progress" and progress is not None:
                progress[w] = msg[2:]
            elif msg[0] == want:
                got[w] = msg[1]
            elif msg[0] != "progress":
                raise Failed(f"worker {w} said {msg!r} while the parent waited for {want!r}")

    def wait_all(self, want):
        """Every worker's `want` message; the sum of their counts."""
        got = {}
        progress = {}
        last_log = time.monotonic()
        while len(got) < len(self.conns):
            r = self.end - time.monotonic()
            if r <= 0:
                raise Failed(f"deadline of {self.deadline:.0f} s passed waiting for {want!r} "
                             f"({len(got)} workers done, progress {progress})")
            self.poll(min(1.0, r), want, got, progress)
            if time.monotonic() - last_log >= 5:
                done = sum(v[0] for v in progress.values())
                flight = sum(v[1] for v in progress.values())
                log(self.t0, f"{want}: about {done} done, {flight} in flight, {len(got)} workers finished")
                last_log = time.monotonic()
        return sum(got.values())

    def stop(self):
        for c in self.conns:
            try:
                c.send("exit")
            except OSError:
                pass
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dst", required=True)
    ap.add_argument("--port", type=int, default=7)
    ap.add_argument("--srcs", required=True, help="comma-separated source addresses")
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--procs", type=int, default=4, help="worker processes sharing the connections")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--deadline", type=float, default=120.0)
    ap.add_argument("--hold", type=float, default=2.0, help="seconds to keep all open before the echo")
    ap.add_argument("--stats-cmd", default="", help="JSON list: argv printing the stack's snapshot")
    ap.add_argument("--stack-pid", type=int, default=0)
    args = ap.parse_args()

    t0 = time.monotonic()
    end = t0 + args.deadline
    n = args.count
    srcs = [s for s in args.srcs.split(",") if s]
    stats_cmd = json.loads(args.stats_cmd) if args.stats_cmd else None
    # Worker w's connections are w, w + procs, ...; their sources are
    # srcs[i % len(srcs)], which is one address per worker only then.
    if args.procs % len(srcs) != 0:
        ap.error(f"--procs ({args.procs}) must be a multiple of the number of --srcs ({len(srcs)})")
    # Each worker's share, plus the selector, the pipe and python's own.
    need = -(-n // args.procs) + 64
    soft, hard = raise_nofile(need)
    # A lower limit than that (a small hard limit, no CAP_SYS_RESOURCE):
    # more workers, each with a share that fits, still one source apiece.
    while soft < need and soft > 64 + 1:
        args.procs += len(srcs)
        need = -(-n // args.procs) + 64
    result = {"count": n, "sources": srcs, "procs": args.procs, "nofile": [soft, hard], "ok": False}
    if soft < need:
        print(f"RLIMIT_NOFILE is {soft}, each of {args.procs} workers needs {need}", file=sys.stderr)
        print("RESULT " + json.dumps(result))
        return 2
    log(t0, f"nofile {soft}/{hard}; {n} connections to {args.dst}:{args.port} from {srcs} "
        f"in {args.procs} workers, window {args.window}")

    phase_t = {}
    workers = None
    try:
        workers = Workers(args, t0, end)

        # ---- 1. connect -------------------------------------------------
        established = workers.wait_all("connected")
        phase_t["connect_s"] = round(time.monotonic() - t0, 2)
        result["established"] = established
        log(t0, f"connect: all {established} established")

        # ---- 2. hold ----------------------------------------------------
        # The workers watch their sockets meanwhile; any event fails them.
        hold_end = time.monotonic() + args.hold
        # The stack may still be finishing handshakes the kernel considers done
        # (the client's last ACK still queued on the TAP).
        settle_end = time.monotonic() + 30
        stack_est = None
        while True:
            workers.poll(0.2)
            if stats_cmd and stack_est != n:
                stack_est = stack_snapshot(stats_cmd)["tcp"]["states"].get("ESTABLISHED", 0)
            if time.monotonic() >= hold_end and (not stats_cmd or stack_est == n):
                break
            if time.monotonic() >= min(settle_end, end):
                raise Failed(f"stack reports {stack_est} ESTABLISHED while all {n} clients are connected")
        kern = kernel_established(args.dst, args.port)
        result["kernel_established_held"] = kern
        if kern != n:
            raise Failed(f"/proc/net/tcp shows {kern} ESTABLISHED to {args.dst}:{args.port}, want {n}")
        if stats_cmd:
            # Fresh snapshot at the end of the hold, everything still open.
            snap = stack_snapshot(stats_cmd)
            stack_est = snap["tcp"]["states"].get("ESTABLISHED", 0)
            result["stack_established_held"] = stack_est
            result["stack_connections_held"] = snap["tcp"]["connections"]
            result["stack_tcp_established_counter"] = snap["counters"].get("tcp_established")
            result["stack_pools_held"] = snap.get("pools")
            result["stack_retransmits_held"] = snap["tcp"].get("retransmits")
            if stack_est != n:
                raise Failed(f"stack reports {stack_est} ESTABLISHED at the end of the hold, want {n}")
        # Nothing arrived on any socket during the whole hold.
        workers.poll(0)
        result["stack_rss_kib_held"] = rss_kib(args.stack_pid)
        phase_t["hold_s"] = round(time.monotonic() - t0, 2)
        log(t0, f"hold: {n} open at once (kernel {kern}, stack {stack_est}), "
            f"stack RSS {result['stack_rss_kib_held']} KiB")

        # ---- 3. echo ----------------------------------------------------
        workers.send("echo")
        result["echoed"] = workers.wait_all("echoed")
        phase_t["echo_s"] = round(time.monotonic() - t0, 2)
        log(t0, f"echo: all {result['echoed']} messages came back intact")

        # ---- 4. close ---------------------------------------------------
        workers.send("close")
        result["closed"] = workers.wait_all("closed")
        phase_t["close_s"] = round(time.monotonic() - t0, 2)
        log(t0, f"close: all {result['closed']} closed by both sides")
        result["ok"] = True
    except Failed as e:
        result["error"] = str(e)
        log(t0, f"FAILED: {e}")
    finally:
        if workers is not None:
            workers.stop()
        result["phases"] = phase_t
        result["elapsed_s"] = round(time.monotonic() - t0, 2)
        print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

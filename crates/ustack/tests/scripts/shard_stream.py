#!/usr/bin/env python3
"""Streaming echo clients for tests/shard_moves.rs: COUNT TCP connections
to HOST:PORT at once, each sending BYTES bytes of its own seeded pattern
in chunks while it reads the echo back, then half-closing and reading to
the end. Every connection checks that the echo is exactly what it sent
(length and SHA-256). Prints one line `RESULT {json}`: ok, bad, errors
(the first few), bytes (echoed in all) and `ports` (each connection's
local port). Gives up after DEADLINE seconds."""

import asyncio
import hashlib
import json
import random
import sys

CHUNK = 16 * 1024


async def main(host, port, count, size, deadline):
    ok, bad, errors, ports, echoed = 0, 0, [], [], 0

    async def one(i):
        nonlocal ok, bad, echoed
        data = random.Random(i * 7919 + 1).randbytes(size)
        want = hashlib.sha256(data).hexdigest()
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
            ports.append(w.get_extra_info("sockname")[1])

            async def send():
                for off in range(0, size, CHUNK):
                    w.write(data[off:off + CHUNK])
                    await w.drain()
                w.write_eof()

            sender = asyncio.ensure_future(send())
            got = hashlib.sha256()
            n = 0
            while True:
                b = await r.read(65536)
                if not b:
                    break
                got.update(b)
                n += len(b)
            await sender
            w.close()
            echoed += n
            if n == size and got.hexdigest() == want:
                ok += 1
            else:
                bad += 1
                errors.append(f"{i}: {n} of {size} bytes back, sha256 {'differs' if n == size else '-'}")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            bad += 1
            if len(errors) < 5:
                errors.append(f"{i}: {type(e).__name__} {e}")

    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), deadline)
    except asyncio.TimeoutError:
        errors.append(f"deadline of {deadline} s passed")
    result = {"ok": ok, "bad": bad, "errors": errors[:5], "bytes": echoed, "ports": ports}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    h, p, n, size, dl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    asyncio.run(main(h, p, n, size, dl))

#!/usr/bin/env python3
"""Echo clients for tests/shards.rs: COUNT TCP connections to HOST:PORT,
at most WINDOW in flight, each sending one distinct message and checking
that exactly it comes back, then closing. Prints one line
`RESULT {json}`: ok, bad, errors (the first few), and `ports`, the local
port of every connection that echoed (the test maps each to its shard).
Gives up after DEADLINE seconds."""

import asyncio
import json
import sys


async def main(host, port, count, window, deadline):
    sem = asyncio.Semaphore(window)
    ok, bad, errors, ports = 0, 0, [], []

    async def one(i):
        nonlocal ok, bad
        async with sem:
            msg = f"connection {i} of {count}: {i * 2654435761 % 4294967296:08x}\n".encode()
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
                local = w.get_extra_info("sockname")[1]
                w.write(msg)
                await w.drain()
                got = await asyncio.wait_for(r.readexactly(len(msg)), 20)
                w.close()
                await w.wait_closed()
                if got == msg:
                    ok += 1
                    ports.append(local)
                else:
                    bad += 1
                    errors.append(f"{i}: got {got!r}")
            except Exception as e:  # noqa: BLE001 - every failure is reported
                bad += 1
                if len(errors) < 5:
                    errors.append(f"{i}: {type(e).__name__} {e}")

    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), deadline)
    except asyncio.TimeoutError:
        errors.append(f"deadline of {deadline} s passed")
    print("RESULT " + json.dumps({"ok": ok, "bad": bad, "errors": errors[:5], "ports": ports}), flush=True)


if __name__ == "__main__":
    h, p, n, win, dl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    asyncio.run(main(h, p, n, win, dl))

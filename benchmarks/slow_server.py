"""A minimal asyncio HTTP/1.1 server on loopback answering GET /v1/batches/{id} after a fixed
latency. Runs in its own process so it does not share a core or the GIL with the client.

usage: python benchmarks/slow_server.py LATENCY_MS   (prints the port, serves until killed)
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from pipeline.sample import iter_batches

TEMPLATE = next(iter_batches(1, seed=5))


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency: float
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            await asyncio.sleep(latency)
            body = orjson.dumps({**TEMPLATE, "id": path.rsplit("/", 1)[-1]})
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(latency: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, latency), "127.0.0.1", 0, backlog=512
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) / 1000))

"""A real WebSocket peer for tests/websocket.rs, on the `websockets` library (PyPI,
installed by .ci/run).

    websocket.py server NAME        echo server on 127.0.0.1:0; prints its port
    websocket.py echo URL           one session: text, 1 MiB binary, ping, close
    websocket.py who URL N          N sessions one after another: which backend each
    websocket.py hold URL N SECS    N sessions at once, each echoing every 100 ms
    websocket.py idle URL           one silent session: how long until it is closed
    websocket.py until_closed URL   open, report once, then wait for the close

Every client mode prints one JSON line. The server answers "who" with its NAME,
"headers" with the request's headers as JSON, "path" with the request path, and
echoes anything else; a request for /forbidden is refused with 403 before any
upgrade. Environment: WS_CAFILE, a CA file for wss:// URLs.
"""

import asyncio
import json
import os
import ssl
import sys
import time
from http import HTTPStatus

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


def client_ssl(url):
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context(cafile=os.environ.get("WS_CAFILE"))
    return context


def session(url, **kwargs):
    # No keepalive pings of the library's own: the tests decide what moves.
    return connect(url, ssl=client_ssl(url), ping_interval=None,
                   max_size=None, open_timeout=10, close_timeout=5, **kwargs)


async def ask(ws, message):
    await ws.send(message)
    return await ws.recv()


async def server(name):
    async def handler(ws):
        async for message in ws:
            if message == "who":
                await ws.send(name)
            elif message == "headers":
                # Field names in lowercase: their case is the sender's (HTTP/1 keeps it).
                await ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()}))
            elif message == "path":
                await ws.send(ws.request.path)
            else:
                await ws.send(message)

    def refuse(connection, request):
        if request.path == "/forbidden":
            return connection.respond(HTTPStatus.FORBIDDEN, "forbidden\n")
        return None

    async with serve(handler, "127.0.0.1", 0, process_request=refuse,
                     max_size=None, ping_interval=None) as running:
        port = running.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


async def echo(url):
    result = {}
    async with session(url) as ws:
        await ws.send("hello")
        result["text"] = await ws.recv()
        blob = bytes(range(256)) * 4096  # 1 MiB
        await ws.send(blob)
        back = await ws.recv()
        result["binary_intact"] = back == blob
        result["binary_len"] = len(back)
        started = time.monotonic()
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        result["pong_ms"] = round((time.monotonic() - started) * 1000, 1)
        result["who"] = await ask(ws, "who")
        result["path"] = await ask(ws, "path")
        result["headers"] = json.loads(await ask(ws, "headers"))
        await ws.close(code=1000, reason="done")
        result["close_code"] = ws.close_code
        result["close_reason"] = ws.close_reason
    print(json.dumps(result), flush=True)


async def who(url, count):
    names = []
    for _ in range(count):
        async with session(url) as ws:
            await ws.send("who")
            names.append(await ws.recv())
    print(json.dumps(names), flush=True)


async def hold(url, count, seconds):
    sessions = []
    for _ in range(count):
        ws = await session(url)
        await ws.send("who")
        sessions.append((ws, await ws.recv()))
    print(json.dumps({"opened": len(sessions)}), flush=True)
    failures = []
    echoes = 0
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        for i, (ws, _) in enumerate(sessions):
            message = f"{i}:{n}"
            try:
                await ws.send(message)
                back = await asyncio.wait_for(ws.recv(), 5)
                if back != message:
                    failures.append(f"session {i}: sent {message}, got {back}")
                echoes += 1
            except (ConnectionClosed, asyncio.TimeoutError) as e:
                failures.append(f"session {i}: {type(e).__name__} {e}")
        n += 1
        await asyncio.sleep(0.1)
    for ws, _ in sessions:
        await ws.close()
    print(json.dumps({"who": [w for _, w in sessions], "echoes": echoes,
                      "failures": failures[:10], "failed": len(failures)}),
          flush=True)


async def idle(url):
    async with session(url) as ws:
        started = time.monotonic()
        try:
            await asyncio.wait_for(ws.recv(), 30)
            closed = "message"
        except ConnectionClosed:
            closed = "closed"
        except asyncio.TimeoutError:
            closed = "timeout"
        print(json.dumps({"closed": closed,
                          "after_ms": round((time.monotonic() - started) * 1000),
                          "code": ws.close_code}), flush=True)


async def until_closed(url):
    async with session(url) as ws:
        await ws.send("who")
        print(json.dumps({"who": await ws.recv()}), flush=True)
        started = time.monotonic()
        # Echo once a line arrives on stdin, until the connection closes.
        loop = asyncio.get_running_loop()
        outcome = "open"
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            try:
                await ws.send(line.strip())
                back = await asyncio.wait_for(ws.recv(), 5)
                print(json.dumps({"echo": back,
                                  "at_ms": round((time.monotonic() - started) * 1000)}),
                      flush=True)
            except (ConnectionClosed, asyncio.TimeoutError) as e:
                outcome = type(e).__name__
                break
        print(json.dumps({"ended": outcome,
                          "at_ms": round((time.monotonic() - started) * 1000)}),
              flush=True)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "server":
        asyncio.run(server(args[0]))
    elif mode == "echo":
        asyncio.run(echo(args[0]))
    elif mode == "who":
        asyncio.run(who(args[0], int(args[1])))
    elif mode == "hold":
        asyncio.run(hold(args[0], int(args[1]), float(args[2])))
    elif mode == "idle":
        asyncio.run(idle(args[0]))
    elif mode == "until_closed":
        asyncio.run(until_closed(args[0]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()

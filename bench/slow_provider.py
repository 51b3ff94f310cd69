#!/usr/bin/env python3
"""bench/slow_provider.py — a fake Kavenegar that answers every request with
the sms/send success envelope after --delay seconds (the "slow provider"
scenario of docs/PERFORMANCE.md).

nginx cannot wait before answering without a module this machine lacks, so
this one is Python asyncio: at 1,000 sends in flight and a 1 s delay it
handles about 1,000 requests per second, which a single asyncio loop does
with CPU to spare (the fast scenarios use nginx, never this).

HTTP/1.1 with keep-alive, Content-Length bodies (what libcurl sends), any
method.  account/info.json and sms/status.json (otpd's credit and delivery
checks) are answered at once; every other path gets the send envelope after
the delay.  Loopback only.

    slow_provider.py --port 18602 [--delay 1.0] [--host 127.0.0.1]
"""
import argparse
import asyncio
import json
import os
import signal
import sys

ENVELOPE = {
    "return": {"status": 200, "message": "تایید شد"},
    "entries": [{
        "messageid": 8792343, "message": "کد ورود شما: 482913", "status": 1,
        "statustext": "در صف ارسال", "sender": "10008663",
        "receptor": "09123456789", "date": 1700000000, "cost": 120,
    }],
}
BODY = json.dumps(ENVELOPE, ensure_ascii=False, separators=(",", ":")).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
            b"Connection: keep-alive\r\n\r\n" + BODY)


def immediate(envelope):
    body = json.dumps(envelope, separators=(",", ":")).encode()
    return (b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: keep-alive\r\n\r\n" + body)


SIDE = {
    b"/account/info.json": immediate({"return": {"status": 200, "message": "OK"},
                                      "entries": {"remaincredit": 100000000,
                                                  "expiredate": 1900000000, "type": "master"}}),
    b"/sms/status.json": immediate({"return": {"status": 200, "message": "OK"}, "entries": []}),
}
MAX_HEAD = 64 * 1024

stats = {"requests": 0, "in_flight": 0, "max_in_flight": 0, "connections": 0, "accepted": 0}


async def handle(reader, writer):
    stats["connections"] += 1
    stats["accepted"] += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            if length:
                try:
                    await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
            target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            side = next((r for end, r in SIDE.items() if target.split(b"?")[0].endswith(end)), None)
            if side:
                writer.write(side)
                await writer.drain()
                continue
            stats["in_flight"] += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
            try:
                await asyncio.sleep(DELAY)
                writer.write(RESPONSE)
                await writer.drain()
            except ConnectionError:
                return
            finally:
                stats["in_flight"] -= 1
            stats["requests"] += 1
    finally:
        stats["connections"] -= 1
        writer.close()


async def main(args):
    server = await asyncio.start_server(handle, args.host, args.port,
                                        backlog=4096, limit=MAX_HEAD)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"slow_provider listening on {args.host}:{args.port}, delay {DELAY}s",
          file=sys.stderr, flush=True)
    async with server:
        await stop.wait()
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF)
    stats["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 2)
    print("STATS " + json.dumps(stats), file=sys.stderr, flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay", type=float, default=1.0)
    a = p.parse_args()
    if a.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("slow_provider: loopback only")
    DELAY = a.delay
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    asyncio.run(main(a))
    os._exit(0)

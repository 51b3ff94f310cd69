#!/usr/bin/env python3
"""bench/helpers.py — small tools for bench/run.sh (loopback only).

    helpers.py freeport
        print a free TCP port on 127.0.0.1
    helpers.py ready URL [--t0-ns NS] [--timeout S]
        poll URL (GET) every 2 ms until it answers 200; print the milliseconds
        since NS (a CLOCK_REALTIME stamp taken just before the server was
        spawned, `date +%s%N`), so the measure includes the server's start
        but not this script's; exit 1 on timeout
    helpers.py hold PORT N [--seconds S] [--ready-file F]
        open N idle TCP connections to 127.0.0.1:PORT (no request sent) and
        hold them until SIGTERM or S seconds; touch F once all are open;
        print how many were open and how many were still open at the end
    helpers.py rss PID
        print VmRSS and VmHWM of PID in KiB, as JSON
"""
import http.client
import json
import os
import signal
import socket
import sys
import time


def freeport():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def ready(argv):
    url = argv[0]
    t0_ns = time.time_ns()
    timeout = 30.0
    i = 1
    while i < len(argv):
        if argv[i] == "--t0-ns":
            t0_ns = int(argv[i + 1])
        elif argv[i] == "--timeout":
            timeout = float(argv[i + 1])
        i += 2
    assert url.startswith("http://127.0.0.1:"), "loopback only"
    hostport, _, path = url[len("http://"):].partition("/")
    host, _, port = hostport.partition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=1)
            c.request("GET", "/" + path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                print("%.1f" % ((time.time_ns() - t0_ns) / 1e6))
                return 0
        except OSError:
            pass
        time.sleep(0.002)
    print("timeout", file=sys.stderr)
    return 1


def hold(argv):
    port, n = int(argv[0]), int(argv[1])
    seconds, ready_file = 3600.0, None
    i = 2
    while i < len(argv):
        if argv[i] == "--seconds":
            seconds = float(argv[i + 1])
        elif argv[i] == "--ready-file":
            ready_file = argv[i + 1]
        i += 2
    try:
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    socks, failed = [], 0
    for _ in range(n):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    if ready_file:
        with open(ready_file, "w") as f:
            f.write("%d\n" % len(socks))
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    deadline = time.monotonic() + seconds
    while not stop["now"] and time.monotonic() < deadline:
        time.sleep(0.05)
    # Still open?  A closed peer makes a non-blocking recv return b"".
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) != b"":
                alive += 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
        s.close()
    print(json.dumps({"opened": len(socks), "failed": failed, "alive_at_end": alive}))
    return 0


def rss(argv):
    out = {}
    with open("/proc/%d/status" % int(argv[0])) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    print(json.dumps(out))
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "freeport":
        return freeport()
    if cmd == "ready":
        return ready(argv)
    if cmd == "hold":
        return hold(argv)
    if cmd == "rss":
        return rss(argv)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main() or 0)

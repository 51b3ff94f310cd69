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
    helpers.py logsum FILE
        summarise an otpd log: answers by method, path and status (completed
        requests; status 0 = the client left first, e.g. wrk stopping), and
        warn/error events by name, as JSON
    helpers.py cpu ROOT
        print "BUSY OURS": clock ticks the machine has been busy (all CPUs,
        /proc/stat: user, nice, system, steal), and ticks used by the
        processes now alive that descend from ROOT (the benchmark's own) or
        are kernel threads (I/O and network work done for it)
    helpers.py quiet ROOT [--threshold F] [--max-wait S]
        wait until, over one second, the CPU used by processes that do not
        descend from ROOT (other people's builds and tests on a shared
        machine) is below F of the machine (default 0.10); at most S seconds
        (default 30); print the seconds waited and the last foreign share
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


def _busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: all but idle and
    # iowait (tick-based accounting charges irq and softirq ticks to the
    # task they interrupted as well, so they belong in the total)
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


def _ours(root):
    parent, ticks = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rindex(")") + 2:].split()
        parent[int(d)] = int(rest[1])
        ticks[int(d)] = int(rest[11]) + int(rest[12])
    total = 0
    for pid, t in ticks.items():
        if pid == 2 or parent.get(pid) == 2:
            # kernel threads: writeback, block I/O and fsync work, the
            # network stack — mostly on the benchmark's behalf
            total += t
            continue
        p, seen = pid, 0
        while p > 1 and seen < 64:
            if p == root:
                total += t
                break
            p = parent.get(p, 0)
            seen += 1
    return total


def cpu(argv):
    root = int(argv[0])
    print(_busy(), _ours(root))
    return 0


def quiet(argv):
    root = int(argv[0])
    threshold, max_wait = 0.10, 30.0
    i = 1
    while i < len(argv):
        if argv[i] == "--threshold":
            threshold = float(argv[i + 1])
        elif argv[i] == "--max-wait":
            max_wait = float(argv[i + 1])
        i += 2
    hz = os.sysconf("SC_CLK_TCK")
    ncpu = os.cpu_count() or 1
    start = time.monotonic()
    share = 0.0
    while True:
        b0, o0, t0 = _busy(), _ours(root), time.monotonic()
        time.sleep(1.0)
        b1, o1, t1 = _busy(), _ours(root), time.monotonic()
        share = max(0.0, ((b1 - b0) - (o1 - o0)) / hz / ((t1 - t0) * ncpu))
        if share < threshold or time.monotonic() - start >= max_wait:
            break
    print("%.1f %.3f" % (time.monotonic() - start - 1.0, share))
    return 0


def logsum(argv):
    answers, events = {}, {}
    with open(argv[0], errors="replace") as f:
        for line in f:
            try:
                o = json.loads(line)
            except ValueError:
                events["unparsable"] = events.get("unparsable", 0) + 1
                continue
            if o.get("event") == "http.access":
                k = "%s %s %s" % (o.get("method"), o.get("path"), o.get("status"))
                answers[k] = answers.get(k, 0) + 1
            elif o.get("level") in ("warn", "error"):
                k = "%s %s" % (o.get("level"), o.get("event"))
                events[k] = events.get(k, 0) + 1
    print(json.dumps({"answers": answers, "events": events}, sort_keys=True))
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
    if cmd == "logsum":
        return logsum(argv)
    if cmd == "cpu":
        return cpu(argv)
    if cmd == "quiet":
        return quiet(argv)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main() or 0)

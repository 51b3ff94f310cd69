#!/usr/bin/python3
"""Instructions otpd runs per send, counted by callgrind (docs/PERFORMANCE.md, "Counted in
instructions"): a number that does not move with the load of a shared machine.

    python3 bench/cg_send.py OTPD_BINARY N [kavenegar|console]

Starts tools/fake_kavenegar.py, then OTPD_BINARY under valgrind --tool=callgrind on a new SQLite
file, sends N codes (16 clients, a new number each), stops otpd with SIGTERM and prints the
instructions it ran (Ir).  Run it with N and with 0: (Ir(N) - Ir(0)) / N is the cost of a send.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, n = sys.argv[1], int(sys.argv[2])
    backend = sys.argv[3] if len(sys.argv) > 3 else "kavenegar"
    d = tempfile.mkdtemp(prefix="otpd-cg.")
    fake_port, port = free_port(), free_port()
    fake = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "fake_kavenegar.py"),
                             "--port", str(fake_port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    fake.stdout.readline()  # listening
    env = {"PATH": "/usr/bin:/bin", "OTPD_LISTEN": "127.0.0.1:%d" % port,
           "DATABASE_URL": "sqlite:%s/otpd.db" % d, "SMS_BACKEND": backend,
           "KAVENEGAR_API_KEY": "A" * 64, "KAVENEGAR_API_URL": "http://127.0.0.1:%d" % fake_port,
           "SECRET_KEY": "s" * 40, "OTP_THROTTLE_RATE": "1000000/min", "OTPD_LOG_LEVEL": "warn",
           "KAVENEGAR_CREDIT_INTERVAL": "0", "KAVENEGAR_DELIVERY_INTERVAL": "0",
           "OTPD_THREADS": "2"}
    err_path = os.path.join(d, "stderr")
    with open(err_path, "w") as err:  # a file: a full pipe would stall otpd's log
        otpd = subprocess.Popen(["valgrind", "--tool=callgrind",
                                 "--callgrind-out-file=" + os.path.join(d, "callgrind.out"),
                                 binary, "serve"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = "http://127.0.0.1:%d" % port
    for _ in range(600):
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.1)

    def send(i):
        return requests.post(url + "/api/v1/usr/otp", json={"phone_number": "0912%07d" % i},
                             timeout=120).status_code

    with ThreadPoolExecutor(16) as ex:
        statuses = list(ex.map(send, range(n)))
    otpd.send_signal(signal.SIGTERM)
    otpd.wait(timeout=300)
    fake.terminate()
    fake.wait()
    m = re.search(r"Collected : (\d+)", open(err_path).read())
    bad = sum(1 for s in statuses if s != 200)
    print("sends=%d not_200=%d Ir=%s" % (n, bad, m.group(1) if m else "?"))
    return 0 if m and not bad else 1


if __name__ == "__main__":
    sys.exit(main())

"""Durable answers (issue 5): an answered 200 survives kill -9.

Sends and verifies run from 16 threads; the server is killed with SIGKILL in the middle of the
load and restarted on the same database, three times.  After each restart:
  * every send answered 200 can still be verified with its code (from the fake), unless that
    code was answered as used, or a verify of it was in flight at the kill (then either answer);
  * every code answered 200 on verify stays used: verifying it again answers otp_expired.
A request without an answer (in flight at the kill) proves nothing either way and is not
checked.  The codes verified by the checks join the "used" ones, so each later kill checks them
again."""

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from conftest import assert_problem, get_code

ROUNDS = 3
THREADS = 16
SENT_BEFORE_KILL = 120     # answered sends in this round before the kill ...
VERIFIED_BEFORE_KILL = 40  # ... and answered verifies
LOAD_TIMEOUT = 8.0         # a round's load never runs longer than this

ENV = {
    "OTP_THROTTLE_RATE": "1000000/min",
    "OTP_VERIFY_THROTTLE_RATE": "1000000/min",
    "OTP_SEND_LIMIT": "100000",
    "OTPD_LOG_LEVEL": "info",
}


class Record:
    """One number, sent once: its code and what its verify answered."""

    def __init__(self, phone, code):
        self.phone = phone
        self.code = code
        self.verify = None  # None: not tried; "used": answered 200; "unknown": no answer


def run_round(otpd, fake, numbers, records, lock):
    """Load until enough was answered, SIGKILL in the middle of it; returns this round's
    counts and the unexpected answers."""
    stop = threading.Event()
    counts = {"sent": 0, "verified": 0}
    problems = []

    def worker(w):
        for n in itertools.count():
            if stop.is_set():
                return
            phone = "+98936%07d" % next(numbers)  # count() is thread-safe
            try:
                r = otpd.send(phone)
            except requests.RequestException:
                continue  # no answer: not checked
            if r.status_code != 200:
                problems.append("send %s: %d %s" % (phone[-4:], r.status_code, r.text[:200]))
                continue
            rec = Record(phone, get_code(fake, phone))
            with lock:
                records.append(rec)
                counts["sent"] += 1
            if (w + n) % 2:
                continue  # every other code stays unused
            rec.verify = "unknown"
            try:
                r = otpd.verify(phone, rec.code)
            except requests.RequestException:
                continue
            if r.status_code == 200:
                rec.verify = "used"
                with lock:
                    counts["verified"] += 1
            else:
                problems.append("verify %s: %d %s" % (phone[-4:], r.status_code, r.text[:200]))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(THREADS)]
    for t in threads:
        t.start()
    end = time.monotonic() + LOAD_TIMEOUT
    while time.monotonic() < end and not problems:
        with lock:
            if counts["sent"] >= SENT_BEFORE_KILL and counts["verified"] >= VERIFIED_BEFORE_KILL:
                break
        time.sleep(0.01)
    otpd.kill()  # SIGKILL, with requests in flight
    stop.set()
    for t in threads:
        t.join(30)
    assert all(not t.is_alive() for t in threads), "load threads still hanging"
    return counts, problems


def check(otpd, rec):
    r = otpd.verify(rec.phone, rec.code)
    if rec.verify == "used":
        assert r.status_code != 200, "the code of ...%s was answered as used before the kill, " \
            "it verifies again after the restart" % rec.phone[-4:]
        assert_problem(r, 400, "otp_expired")
    elif rec.verify == "unknown":  # its verify may or may not have been committed
        if r.status_code != 200:
            assert_problem(r, 400, "otp_expired")
    else:
        assert r.status_code == 200, "send of ...%s answered 200 before the kill, its code " \
            "does not verify after the restart: %d %s" % (rec.phone[-4:], r.status_code, r.text[:300])
    rec.verify = "used"


def test_answered_writes_survive_sigkill(otpd_factory, fake):
    otpd = otpd_factory.start(ENV)
    numbers = itertools.count(1)
    lock = threading.Lock()
    records = []
    for rnd in range(ROUNDS):
        counts, problems = run_round(otpd, fake, numbers, records, lock)
        assert not problems, "round %d:\n%s" % (rnd + 1, "\n".join(problems[:10]))
        assert counts["sent"] >= SENT_BEFORE_KILL and counts["verified"] >= VERIFIED_BEFORE_KILL, \
            "round %d: too little load before the kill: %s" % (rnd + 1, counts)
        otpd.restart()  # the same database, after kill -9
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda rec: check(otpd, rec), records))

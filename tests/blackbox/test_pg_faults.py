"""PostgreSQL goes away under load (OTPD_TEST_BACKEND=postgres): otpd answers 503 within a
bounded time and never crashes or hangs, /readyz says 503, service comes back by itself when
the database does, and nothing answered 200 was lost.  Each test has a PostgreSQL cluster of
its own (tests/pgcluster.py), since it stops it."""

import threading
import time

import pytest
import requests

import pgcluster
from conftest import assert_problem, get_code, phone_n, wait_for

pytestmark = pytest.mark.postgres_only

# How long one answer may take while the database is gone: the connect timeout (2 s here)
# plus the statement timeout (2 s), plus slack for a loaded machine.
BOUND_S = 10

FAST_FAIL = {"DATABASE_CONNECT_TIMEOUT_MS": "2000", "DATABASE_STATEMENT_TIMEOUT_MS": "2000",
             "OTP_THROTTLE_RATE": "100000/min", "OTP_VERIFY_THROTTLE_RATE": "100000/min"}


@pytest.fixture
def own_pg():
    with pgcluster.Cluster.start() as pg:
        pg.create_database("faults")
        yield pg


class Load:
    """Clients sending codes to new numbers (and verifying them) on their own threads; every
    answer is kept with its time."""

    def __init__(self, node, fake, clients=4, base=0):
        self.node, self.fake = node, fake
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sends = []      # (t_answered, phone, status, seconds taken)
        self.verifies = []   # (t_answered, phone, status, refresh_token or None)
        self.errors = []
        self.next = base
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def take(self):
        with self.lock:
            self.next += 1
            return self.next

    def run(self):
        while not self.stop.is_set():
            phone = phone_n(self.take())
            t0 = time.monotonic()
            try:
                r = self.node.send(phone, timeout=(3, BOUND_S + 5))
            except requests.RequestException as e:
                self.errors.append("send %s: %r" % (phone, e))
                continue
            with self.lock:
                self.sends.append((time.monotonic(), phone, r.status_code, time.monotonic() - t0))
            if r.status_code != 200:
                time.sleep(0.05)
                continue
            code = get_code(self.fake, phone)
            t0 = time.monotonic()
            try:
                v = self.node.verify(phone, code, timeout=(3, BOUND_S + 5))
            except requests.RequestException as e:
                self.errors.append("verify %s: %r" % (phone, e))
                continue
            tok = v.json().get("refresh_token") if v.status_code == 200 else None
            with self.lock:
                self.verifies.append((time.monotonic(), phone, v.status_code, tok))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(BOUND_S * 3)


def test_postgres_stopped_mid_load_then_back(otpd_factory, fake, own_pg):
    node = otpd_factory.start(dict(FAST_FAIL, DATABASE_URL=own_pg.url("faults")))
    with Load(node, fake) as load:
        wait_for(lambda: len(load.verifies) >= 10, timeout=30, what="logins before the stop")
        own_pg.stop("immediate")           # a crash: no shutdown checkpoint, connections cut
        t_stop = time.monotonic()
        time.sleep(4)
        r = node.get("/readyz", timeout=(3, BOUND_S + 5))
        assert_problem(r, 503, "unavailable")
        assert node.get("/healthz").status_code == 200
        assert node.running(), "otpd keeps running while the database is away"
        own_pg.start_again()
        wait_for(lambda: node.get("/readyz", timeout=(3, BOUND_S + 5)).status_code == 200,
                 timeout=60, interval=0.5, what="readyz 200 once PostgreSQL is back")
        t_back = time.monotonic()
        wait_for(lambda: any(s[0] > t_back and s[2] == 200 for s in load.sends),
                 timeout=30, what="a send answered 200 after the restart")
    assert not load.errors, load.errors[:5]

    # While it was away: nothing but 200 (committed before the crash) or 503, each in time.
    during = [s for s in load.sends if t_stop < s[0] < t_back]
    assert during, "requests were answered while PostgreSQL was down"
    assert {s[2] for s in load.sends} <= {200, 503}, {s[2] for s in load.sends}
    assert any(s[2] == 503 for s in during)
    slow = [s for s in load.sends if s[3] > BOUND_S]
    assert not slow, "answers slower than %d s: %r" % (BOUND_S, slow[:3])
    assert {v[2] for v in load.verifies} <= {200, 503}, {v[2] for v in load.verifies}

    # Nothing answered 200 was lost: every such send's code is stored (it verifies, unless
    # the load verified it already), and every login's refresh token still rotates.  A
    # verify answered 503 may still have committed (the crash can cut the answer to a COMMIT
    # the server had already flushed): its code may be used, so it may answer otp_expired;
    # every other code must verify.
    verified = {v[1] for v in load.verifies if v[2] == 200}
    maybe_used = {v[1] for v in load.verifies if v[2] == 503}
    sent_ok = [s[1] for s in load.sends if s[2] == 200 and s[1] not in verified]
    for phone in sent_ok:
        r = node.verify(phone, get_code(fake, phone))
        if phone in maybe_used and r.status_code == 400:
            assert r.json()["code"] == "otp_expired", (phone, r.text)
            state = own_pg.psql("SELECT state FROM otp_codes WHERE phone = '%s' ORDER BY id DESC"
                                " LIMIT 1" % phone, db="faults")
            assert state.strip() == "1", (phone, "its code is not stored as used", state)
            continue
        assert r.status_code == 200, (phone, r.text)
    for _t, phone, status, tok in load.verifies:
        if status == 200:
            r = node.post("/api/v1/usr/token/refresh", json={"refresh_token": tok})
            assert r.status_code == 200, (phone, r.text)


def test_postgres_unreachable_at_start_then_there(otpd_factory, fake, own_pg):
    """serve on a PostgreSQL that is down fails the start at once with one line (exit 1, the
    URL not echoed); started again once it is up, it serves."""
    own_pg.stop("fast")
    url = own_pg.url("faults")
    res = otpd_factory.run(["serve"], dict(FAST_FAIL, DATABASE_URL=url), timeout=20)
    assert res.rc == 1, res
    assert url not in res.output
    own_pg.start_again()
    node = otpd_factory.start(dict(FAST_FAIL, DATABASE_URL=url))
    assert node.login(fake, phone_n(1)).status_code == 200


def test_connections_dropped_by_the_server_are_reopened(otpd_factory, fake, own_pg):
    """Every otpd connection killed by PostgreSQL (pg_terminate_backend, as a failover or an
    administrator does): the next requests may answer 503, then otpd reconnects by itself."""
    node = otpd_factory.start(dict(FAST_FAIL, DATABASE_URL=own_pg.url("faults")))
    assert node.login(fake, phone_n(1)).status_code == 200
    killed = own_pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                         " WHERE datname = 'faults' AND pid <> pg_backend_pid()")
    assert int(killed) >= 1
    statuses = []
    for i in range(2, 40):
        r = node.send(phone_n(i))
        statuses.append(r.status_code)
        assert r.status_code in (200, 503), r.text
        if r.status_code == 200 and statuses[-3:] == [200, 200, 200]:
            break
    assert statuses[-3:] == [200, 200, 200], statuses
    assert node.login(fake, phone_n(99)).status_code == 200

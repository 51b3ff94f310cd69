"""Process lifecycle: health endpoints, durability across SIGKILL, graceful SIGTERM/SIGINT with
a send in flight, a database that cannot be written (503 unavailable, and the server lives on)."""

import signal
import socket
import sqlite3
import threading
import time

import pytest
import requests

from conftest import (PgTableLock, PHONE, assert_problem, get_code, log_objects, phone_n, wait_for,
                      wrong_code)

EXACT_200 = {"phone_number": PHONE, "message": "OTP sent successfully", "expires_in": 300}


def test_healthz_and_readyz(otpd):
    assert otpd.get("/healthz").status_code == 200
    assert otpd.get("/readyz").status_code == 200


def test_code_survives_sigkill(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    assert otpd.kill() == -signal.SIGKILL
    otpd.restart()
    r = otpd.verify(PHONE, code)
    assert r.status_code == 200, "a 200 send is durable: %s" % r.text


def test_used_code_stays_used_across_restart(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    assert otpd.verify(PHONE, code).status_code == 200
    otpd.kill()
    otpd.restart()
    assert_problem(otpd.verify(PHONE, code), 400, "otp_expired")


@pytest.mark.otpd_env(OTP_MAX_ATTEMPTS="3")
def test_attempts_survive_sigkill(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    for remaining in (2, 1):
        assert assert_problem(otpd.verify(PHONE, wrong_code(code)), 400, "invalid_code")[
            "remaining_attempts"] == remaining
    otpd.kill()
    otpd.restart()
    body = assert_problem(otpd.verify(PHONE, wrong_code(code)), 400, "invalid_code")
    assert body["remaining_attempts"] == 0
    assert_problem(otpd.verify(PHONE, code), 400, "too_many_attempts")


@pytest.mark.otpd_env(OTP_SEND_LIMIT="2", OTP_SEND_WINDOW="120")
def test_send_count_survives_sigkill(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    assert otpd.send(PHONE).status_code == 200
    otpd.kill()
    otpd.restart()
    assert_problem(otpd.send(PHONE), 429, "otp_rate_limited")


def test_user_survives_sigkill(otpd, fake):
    first = otpd.login(fake, PHONE).json()
    otpd.kill()
    otpd.restart()
    again = otpd.login(fake, PHONE).json()
    assert again["is_new_user"] is False
    assert again["user"] == first["user"]


def test_generated_secret_is_kept(otpd_factory, fake):
    """Without SECRET_KEY one is generated once, kept in the database, with a warning: a code
    sent before a restart still verifies after it."""
    otpd = otpd_factory.start({"SECRET_KEY": None})
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    otpd.kill()
    otpd.restart()
    r = otpd.verify(PHONE, code)
    assert r.status_code == 200, r.text
    warns = [o for o in log_objects(otpd.log_text())
             if o.get("level") in ("warn", "warning") and "SECRET_KEY" in str(o)]
    assert warns, "a warning about the generated SECRET_KEY is expected"


@pytest.mark.otpd_env(KAVENEGAR_TIMEOUT_MS="8000")
def test_sigterm_finishes_send_in_flight(otpd, fake):
    fake.configure(latency_ms=1500)
    box = {}

    def send():
        try:
            box["r"] = otpd.send(PHONE)
        except Exception as e:
            box["e"] = e
    t = threading.Thread(target=send)
    t.start()
    wait_for(lambda: fake.stats()["in_flight"] >= 1, 5, what="the send to reach the provider")
    otpd.send_signal(signal.SIGTERM)
    t_sig = time.monotonic()

    # it stops accepting new connections while it drains
    stopped_accepting = False
    while time.monotonic() - t_sig < 1.0 and not stopped_accepting:
        try:
            r = requests.get(otpd.url + "/healthz", timeout=0.5)
            stopped_accepting = r.status_code == 503
        except requests.RequestException:
            stopped_accepting = True
        if not stopped_accepting:
            time.sleep(0.05)

    t.join(15)
    assert "e" not in box, "the in-flight send failed: %r" % box.get("e")
    r = box["r"]
    assert r.status_code == 200, r.text
    assert r.json() == EXACT_200
    rc = otpd.wait(10)
    assert rc == 0, "exit status %s after SIGTERM" % rc
    assert stopped_accepting, "new connections were still served 1 s after SIGTERM"
    # the send that finished during shutdown is durable
    fake.configure(latency_ms=0)
    otpd.restart()
    assert otpd.verify(PHONE, get_code(fake, PHONE)).status_code == 200


@pytest.mark.sqlite_only      # the clean close is judged by SQLite's -wal file and integrity_check
def test_sigterm_idle_exits_cleanly(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    t0 = time.monotonic()
    assert otpd.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 3
    db = otpd.db_path
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, \
        "the database was not closed cleanly (WAL left with %d bytes)" % wal.stat().st_size
    con = sqlite3.connect(str(db))
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


def test_sigint_exits_0(otpd):
    assert otpd.stop(signal.SIGINT) == 0


@pytest.mark.otpd_env(OTPD_SHUTDOWN_TIMEOUT="1", KAVENEGAR_TIMEOUT_MS="10000")
def test_shutdown_is_bounded(otpd, fake):
    fake.configure(latency_ms=6000)
    box = {}

    def send():
        try:
            box["r"] = otpd.send(PHONE, timeout=(3, 20))
        except Exception as e:
            box["e"] = e
    t = threading.Thread(target=send)
    t.start()
    wait_for(lambda: fake.stats()["in_flight"] >= 1, 5, what="the send to reach the provider")
    t0 = time.monotonic()
    rc = otpd.stop(signal.SIGTERM, timeout=10)
    took = time.monotonic() - t0
    t.join(10)
    assert rc == 0
    assert took < 4.0, "OTPD_SHUTDOWN_TIMEOUT=1 but exit took %.1fs" % took
    if "r" in box:
        assert_problem(box["r"], 503, "sms_unavailable")


@pytest.mark.sqlite_only      # SQLite's write lock, held by another connection; PostgreSQL: _pg below
@pytest.mark.otpd_env(OTPD_DB_BUSY_TIMEOUT_MS="200")
def test_locked_database_is_503_and_recovers(otpd, fake):
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    other = phone_n(1)
    con = sqlite3.connect(str(otpd.db_path), timeout=5, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        t0 = time.monotonic()
        assert_problem(otpd.send(other), 503, "unavailable")
        assert time.monotonic() - t0 < 3, "OTPD_DB_BUSY_TIMEOUT_MS=200 must bound the wait"
        assert_problem(otpd.verify(PHONE, code), 503, "unavailable")
        assert otpd.get("/healthz").status_code == 200
        assert otpd.get("/readyz").status_code in (200, 503)
        assert otpd.running()
        assert fake.messages(other, include_refused=True) == [], "no SMS without a stored code"
    finally:
        con.execute("ROLLBACK")
        con.close()
    # released: everything works again, and the refused verify did not use the code up
    assert otpd.get("/readyz").status_code == 200
    r = otpd.verify(PHONE, code)
    assert r.status_code == 200, r.text
    r = otpd.send(other)
    assert r.status_code == 200, r.text


@pytest.mark.sqlite_only      # SQLite's write lock, held by another connection; PostgreSQL: _pg below
@pytest.mark.otpd_env(OTPD_DB_BUSY_TIMEOUT_MS="3500", OTPD_SHUTDOWN_TIMEOUT="1")
def test_sigterm_while_a_request_waits_for_the_database(otpd, fake):
    """A request suspended while its write waits for a locked database is still answered
    during shutdown (503 once the busy timeout passes, which here is longer than
    OTPD_SHUTDOWN_TIMEOUT plus the SMS drain), and otpd exits 0 after it."""
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    con = sqlite3.connect(str(otpd.db_path), timeout=5, isolation_level=None)
    box = {}

    def verify():
        try:
            box["r"] = otpd.verify(PHONE, code)
        except Exception as e:
            box["e"] = e
    try:
        con.execute("BEGIN IMMEDIATE")
        t = threading.Thread(target=verify)
        t.start()
        time.sleep(0.3)  # the verify is queued behind the lock
        t0 = time.monotonic()
        otpd.send_signal(signal.SIGTERM)
        t.join(10)
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert "e" not in box, "the waiting verify got no answer: %r" % box.get("e")
    assert_problem(box["r"], 503, "unavailable")
    rc = otpd.wait(10)
    assert rc == 0, "exit status %s after SIGTERM" % rc
    assert time.monotonic() - t0 < 8
    # the refused verify did not use the code up
    otpd.restart()
    assert otpd.verify(PHONE, code).status_code == 200


@pytest.mark.postgres_only    # the counterpart of test_locked_database_is_503_and_recovers
@pytest.mark.otpd_env(OTPD_DB_BUSY_TIMEOUT_MS="200")
def test_locked_database_is_503_and_recovers_pg(otpd, fake):
    """Another session holds an ACCESS EXCLUSIVE lock on otp_codes: a send and a verify wait
    no longer than lock_timeout (OTPD_DB_BUSY_TIMEOUT_MS) and are 503; after it, both work."""
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    other = phone_n(1)
    with PgTableLock(otpd, ("otp_codes",)):
        t0 = time.monotonic()
        assert_problem(otpd.send(other), 503, "unavailable")
        assert time.monotonic() - t0 < 3, "OTPD_DB_BUSY_TIMEOUT_MS=200 must bound the wait"
        assert_problem(otpd.verify(PHONE, code), 503, "unavailable")
        assert otpd.get("/healthz").status_code == 200
        assert otpd.get("/readyz").status_code in (200, 503)
        assert otpd.running()
        assert fake.messages(other, include_refused=True) == [], "no SMS without a stored code"
    # released: everything works again, and the refused verify did not use the code up
    assert otpd.get("/readyz").status_code == 200
    r = otpd.verify(PHONE, code)
    assert r.status_code == 200, r.text
    r = otpd.send(other)
    assert r.status_code == 200, r.text


@pytest.mark.postgres_only    # the counterpart of test_sigterm_while_a_request_waits_for_the_database
@pytest.mark.otpd_env(OTPD_DB_BUSY_TIMEOUT_MS="3500", OTPD_SHUTDOWN_TIMEOUT="1")
def test_sigterm_while_a_request_waits_for_the_database_pg(otpd, fake):
    """A verify waiting for a lock another session holds on otp_codes is still answered
    during shutdown (503 once lock_timeout, OTPD_DB_BUSY_TIMEOUT_MS, passes: longer than
    OTPD_SHUTDOWN_TIMEOUT plus the SMS drain), and otpd exits 0 after it."""
    assert otpd.send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    box = {}

    def verify():
        try:
            box["r"] = otpd.verify(PHONE, code)
        except Exception as e:
            box["e"] = e
    with PgTableLock(otpd, ("otp_codes",)):
        t = threading.Thread(target=verify)
        t.start()
        time.sleep(0.3)  # the verify is queued behind the lock
        t0 = time.monotonic()
        otpd.send_signal(signal.SIGTERM)
        t.join(10)
    assert "e" not in box, "the waiting verify got no answer: %r" % box.get("e")
    assert_problem(box["r"], 503, "unavailable")
    rc = otpd.wait(10)
    assert rc == 0, "exit status %s after SIGTERM" % rc
    assert time.monotonic() - t0 < 8
    # the refused verify did not use the code up
    otpd.restart()
    assert otpd.verify(PHONE, code).status_code == 200


STALLED_BODY = b'{"phone_number": "+989350000001"}'.ljust(100)


def _stalled_upload(otpd, path="/api/v1/usr/otp"):
    """A connection that sent a POST's headers and 10 of its 100 body bytes, then stalls.
    Expect: 100-continue makes the server say when it has the request (its 100 Continue)."""
    host, port = otpd.url.rsplit("//", 1)[1].rsplit(":", 1)
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
    s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: 100\r\nExpect: 100-continue\r\n\r\n" % path).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, "closed before 100 Continue"
        head += chunk
    assert head.startswith(b"HTTP/1.1 100"), head
    s.sendall(STALLED_BODY[:10])
    return s


@pytest.mark.otpd_env(OTPD_SHUTDOWN_TIMEOUT="2", OTPD_DB_BUSY_TIMEOUT_MS="500")
def test_sigterm_during_a_stalled_upload_exits_0(otpd, fake):
    """A request still receiving its body at SIGTERM has started no work: it is dropped (its
    connection closed) and otpd exits 0 with its "stopped cleanly" line.  Before, it counted as
    waiting for the database: otpd waited out every timeout and exited 1."""
    stalled = [_stalled_upload(otpd), _stalled_upload(otpd, "/api/v1/usr/logout")]
    try:
        assert otpd.send(PHONE).status_code == 200   # others are served meanwhile
        otpd.send_signal(signal.SIGTERM)
        rc = otpd.wait(15)
        assert rc == 0, "exit status %s; log tail:\n%s" % (rc, otpd.log_text()[-1500:])
        for s in stalled:
            s.settimeout(5)
            try:
                rest = s.recv(4096)
            except ConnectionResetError:
                rest = b""
            assert rest == b"", "a dropped upload gets no answer: %r" % rest[:200]
    finally:
        for s in stalled:
            s.close()
    lines = log_objects(otpd.log_text())
    assert any(o.get("event") == "server.stopped" and o.get("msg") == "stopped cleanly"
               for o in lines), otpd.log_text()[-1500:]
    assert not [o for o in lines if o.get("level") == "error"], \
        [o for o in lines if o.get("level") == "error"]
    assert fake.stats()["requests"] == 1, "the dropped uploads sent nothing"


@pytest.mark.otpd_env(KAVENEGAR_TIMEOUT_MS="8000")
def test_body_completed_after_sigterm_starts_no_work(otpd, fake):
    """A body that comes in whole after SIGTERM (while a send in flight keeps otpd draining)
    starts no new work: 503 unavailable with Connection: close, nothing sent; the send in
    flight is still answered 200, and otpd exits 0."""
    fake.configure(latency_ms=2000)
    stalled = _stalled_upload(otpd)
    box = {}

    def send():
        box["r"] = otpd.send(PHONE)
    t = threading.Thread(target=send)
    t.start()
    try:
        wait_for(lambda: fake.stats()["in_flight"] >= 1, 5, what="the send to reach the provider")
        otpd.send_signal(signal.SIGTERM)
        # logged once otpd starts no new work: it is draining the send
        wait_for(lambda: '"server.stopping"' in otpd.log_text(), 5, what="the SIGTERM")
        stalled.sendall(STALLED_BODY[10:])
        stalled.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = stalled.recv(4096)
            if not chunk:
                break
            answer += chunk
    finally:
        stalled.close()
        t.join(15)
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 503"), answer[:300]
    assert b"\r\nconnection: close" in head, head
    assert box["r"].status_code == 200, box["r"].text
    assert otpd.wait(10) == 0
    assert [m["phone"] for m in fake.messages(include_refused=True)] == [PHONE]

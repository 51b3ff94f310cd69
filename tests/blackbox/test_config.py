"""Configuration and commands (docs/API.md §1, issue 3): bad values stop the start with one line
naming the variable and exit status 1; production's strict checks; the embedded default with no
configuration at all; --help on every command; migrate."""

import json
import re
import sqlite3

import time

import pytest

from conftest import (PHONE, PHONE_MASKED, REPO, assert_problem, cookies_of, free_port,
                      have_ipv6, log_objects, new_secret, port_is_free)

BAD_VALUES = [
    ("OTP_MAX_ATTEMPTS", "abc"),
    ("OTP_MAX_ATTEMPTS", "-1"),
    ("OTP_MAX_ATTEMPTS", "99999999999999999999999"),
    ("OTP_MAX_ATTEMPTS", "3x"),
    ("OTP_EXPIRY_TIME", "5m"),
    ("OTP_EXPIRY_TIME", "-5"),
    ("OTP_SEND_LIMIT", "3.5"),
    ("OTP_SEND_WINDOW", "two minutes"),
    ("OTP_THROTTLE_RATE", "5/fortnight"),
    ("OTP_THROTTLE_RATE", "five/min"),
    ("OTP_VERIFY_THROTTLE_RATE", "20"),
    ("OTP_VERIFY_THROTTLE_RATE", "0/min"),
    ("SMS_BACKEND", "pigeon"),
    ("KAVENEGAR_API_URL", "not a url"),
    ("KAVENEGAR_API_KEY", "abc/def?x=1"),
    ("OTPD_LISTEN", "nonsense"),
    ("OTPD_LISTEN", "127.0.0.1:99999"),
    ("OTPD_LISTEN", "127.0.0.1"),
    ("DATABASE_URL", "mysql://user:pass@localhost/otpd"),
    ("OTPD_TRUSTED_PROXIES", "not-an-ip"),
    ("OTPD_TRUSTED_PROXIES", "10.0.0.0/33"),
    ("COOKIE_SECURE", "maybe"),
    ("OTPD_ENV", "staging"),
    ("JWT_ACCESS_TTL", "abc"),
    ("JWT_REFRESH_TTL", "-1"),
    ("KAVENEGAR_TIMEOUT_MS", "abc"),
    ("KAVENEGAR_CONNECT_TIMEOUT_MS", "-3"),
    ("OTPD_DB_BUSY_TIMEOUT_MS", "soon"),
    ("OTPD_SHUTDOWN_TIMEOUT", "x"),
    ("OTPD_LOG_LEVEL", "loud"),
    ("OTPD_LOG_FORMAT", "xml"),
    ("OTPD_AUTO_MIGRATE", "perhaps"),
]


def assert_refused(res, var):
    """Exit status 1 and one line of output naming the variable."""
    assert not res.timed_out, "otpd kept running with a bad %s: %r" % (var, res)
    assert res.rc == 1, "exit status %r, expected 1: %r" % (res.rc, res)
    naming = [ln for ln in res.output.splitlines() if var in ln]
    assert len(naming) == 1, "expected one line naming %s, got %d: %r" % (var, len(naming), res)


@pytest.mark.parametrize("var,value", BAD_VALUES, ids=["%s=%s" % vv for vv in BAD_VALUES])
def test_bad_value_stops_start(otpd_factory, var, value):
    res = otpd_factory.run(["serve"], {var: value}, timeout=8)
    assert_refused(res, var)


def test_kavenegar_without_key_stops_start(otpd_factory):
    res = otpd_factory.run(["serve"], {"SMS_BACKEND": "kavenegar", "KAVENEGAR_API_KEY": None}, timeout=8)
    assert_refused(res, "KAVENEGAR_API_KEY")


# -- production ----------------------------------------------------------------------------

PROD = {"OTPD_ENV": "production"}


def test_production_starts_when_strict(otpd_factory, fake):
    secret32 = new_secret(32)
    otpd = otpd_factory.start(dict(PROD, SECRET_KEY=secret32))
    r = otpd.login(fake, PHONE)
    for c in cookies_of(r).values():
        assert c["attrs"].get("secure") is True, "COOKIE_SECURE defaults to true in production: %s" % c["raw"]


@pytest.mark.parametrize("env,var", [
    ({"SECRET_KEY": None}, "SECRET_KEY"),
    ({"SECRET_KEY": new_secret(31)}, "SECRET_KEY"),
    ({"SMS_BACKEND": "console"}, "SMS_BACKEND"),
    ({"COOKIE_SECURE": "false"}, "COOKIE_SECURE"),
], ids=["no-secret", "short-secret", "console-backend", "insecure-cookies"])
def test_production_refuses(otpd_factory, env, var):
    res = otpd_factory.run(["serve"], dict(PROD, **env), timeout=8)
    assert_refused(res, var)


def test_production_refuses_default_console_backend(otpd_factory):
    """A new user's first production start (no Kavenegar key, so the console default): the one
    line says what to set."""
    res = otpd_factory.run(["serve"], dict(PROD, SMS_BACKEND=None, KAVENEGAR_API_KEY=None), timeout=8)
    assert_refused(res, "SMS_BACKEND")
    assert res.output.strip() == (
        "otpd: SMS_BACKEND: expected kavenegar when OTPD_ENV=production, got console "
        "(set KAVENEGAR_API_KEY, and KAVENEGAR_SENDER or KAVENEGAR_TEMPLATE)"), res


def test_production_refuses_explicit_console_backend_saying_what_to_set(otpd_factory):
    res = otpd_factory.run(["serve"], dict(PROD, SMS_BACKEND="console"), timeout=8)
    assert_refused(res, "SMS_BACKEND")
    assert "set SMS_BACKEND=kavenegar with KAVENEGAR_API_KEY" in res.output, res


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
@pytest.mark.parametrize("cmd", ["serve", "migrate"])
def test_unreachable_postgres_fails_the_start_without_echoing_the_url(otpd_factory, scheme, cmd):
    """A PostgreSQL that nobody answers (port 1 on loopback: refused at once) stops the start
    with exit status 1, soon, and neither the password nor the URL is in the output."""
    url = "%s://otpd:Pw0rdPw0rd@127.0.0.1:1/otpd?connect_timeout=2" % scheme
    t0 = time.monotonic()
    res = otpd_factory.run([cmd], {"DATABASE_URL": url, "DATABASE_CONNECT_TIMEOUT_MS": "2000"},
                           timeout=15)
    assert res.rc == 1, res
    assert time.monotonic() - t0 < 12, "bounded by the connect timeout"
    assert "Pw0rdPw0rd" not in res.output and "127.0.0.1:1" not in res.output, res


def test_other_database_url_is_not_echoed_with_its_password(otpd_factory):
    res = otpd_factory.run(["serve"], {"DATABASE_URL": "mysql://otpd:S3cr3tPw@db/otpd"}, timeout=8)
    assert_refused(res, "DATABASE_URL")
    assert "S3cr3tPw" not in res.output and "(hidden)" in res.output, res


def test_help_names_both_database_backends(otpd_factory):
    res = otpd_factory.run(["--help"], {}, base=False, timeout=5)
    assert res.rc == 0, res
    line = [ln for ln in res.output.splitlines() if ln.strip().startswith("DATABASE_URL")]
    assert len(line) == 1, res
    assert "sqlite:PATH" in line[0] and "postgres://" in line[0], line[0]
    assert any(ln.strip().startswith("DATABASE_POOL_SIZE") for ln in res.output.splitlines()), res


# -- the embedded default ------------------------------------------------------------------

def _dev_mode_checks(otpd, fake):
    assert (otpd.cwd / "otpd.db").exists(), "otpd.db in the working directory"
    lines = log_objects(otpd.log_text())
    assert any(o.get("level") in ("warn", "warning", "error") and
               re.search(r"develop", json.dumps(o, ensure_ascii=False), re.I) for o in lines), \
        "a loud warning about development mode is expected"
    r = otpd.send(PHONE)
    assert r.status_code == 200, r.text
    console = [o for o in log_objects(otpd.log_text()) if o.get("event") == "sms.console"]
    assert console, "the console backend writes the code to the log"
    line = console[-1]
    assert line.get("phone") == PHONE_MASKED, line
    code = str(line.get("code"))
    assert re.fullmatch(r"[0-9]{6}", code), line
    assert fake.stats()["requests"] == 0
    r = otpd.verify(PHONE, code)
    assert r.status_code == 200, r.text
    assert r.json()["is_new_user"] is True


def test_no_configuration_at_all(otpd_factory, fake):
    """Only PATH (and a free port: 8000 may be taken): console backend, otpd.db in the cwd,
    development-mode warning, a whole login."""
    otpd = otpd_factory.start({"OTPD_LISTEN": "127.0.0.1:%d" % free_port()}, base=False)
    _dev_mode_checks(otpd, fake)


def test_true_default_listen_address(otpd_factory, fake):
    if not port_is_free("127.0.0.1", 8000):
        pytest.fail("127.0.0.1:8000 is in use: stop whatever listens there (tools/run.sh?) and run again")
    otpd = otpd_factory.start({}, base=False)
    assert otpd.url == "http://127.0.0.1:8000"
    _dev_mode_checks(otpd, fake)


def test_console_backend_explicit(otpd_factory, fake):
    otpd = otpd_factory.start({"SMS_BACKEND": "console"})
    assert otpd.send(PHONE).status_code == 200
    assert fake.stats()["requests"] == 0
    console = [o for o in otpd.log_lines() if o.get("event") == "sms.console"]
    assert len(console) == 1 and console[0]["phone"] == PHONE_MASKED
    assert otpd.verify(PHONE, str(console[0]["code"])).status_code == 200


def test_backend_defaults_to_kavenegar_with_a_key(otpd_factory, fake):
    otpd = otpd_factory.start({"SMS_BACKEND": None})
    assert otpd.send(PHONE).status_code == 200
    assert len(fake.messages(PHONE)) == 1
    assert not [o for o in otpd.log_lines() if o.get("event") == "sms.console"]


def test_log_level_error_is_quiet(otpd_factory, fake):
    otpd = otpd_factory.start({"OTPD_LOG_LEVEL": "error"})
    otpd.login(fake, PHONE)
    assert_problem(otpd.verify(PHONE, "000000"), 400, "otp_expired")
    levels = {o.get("level") for o in otpd.log_lines()}
    assert not levels & {"info", "debug"}, levels


def test_listen_ipv6(otpd_factory, fake):
    if not have_ipv6():
        pytest.fail("no IPv6 loopback (::1) on this machine")
    otpd = otpd_factory.start({"OTPD_LISTEN": "[::1]:%d" % free_port("::1")})
    assert otpd.url.startswith("http://[::1]:")
    assert otpd.get("/healthz").status_code == 200
    otpd.login(fake, PHONE)


# -- commands ------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["migrate", "--help"]],
                         ids=["otpd", "serve", "migrate"])
def test_help(otpd_factory, args):
    res = otpd_factory.run(args, {}, base=False, timeout=5)
    assert not res.timed_out, "--help must not start anything: %r" % res
    assert res.rc == 0, res
    assert re.search(r"usage", res.output, re.I), res
    if len(args) == 2:
        assert args[0] in res.output
    assert not (res.cwd / "otpd.db").exists(), "--help must not create a database"


def test_version(otpd_factory):
    """otpd --version: the VERSION file's version, and the commit in a git checkout."""
    want = (REPO / "VERSION").read_text().strip()
    res = otpd_factory.run(["--version"], {}, base=False, timeout=5)
    assert res.rc == 0, res
    m = re.fullmatch(r"otpd (\S+)\n", res.output)
    assert m, res
    assert m.group(1) == want or m.group(1).startswith(want + "+g"), (want, res.output)
    assert "--version" in otpd_factory.run(["--help"], {}, base=False, timeout=5).output
    assert not (res.cwd / "otpd.db").exists()


def test_unknown_command(otpd_factory):
    res = otpd_factory.run(["frobnicate"], {}, base=False, timeout=5)
    assert not res.timed_out and res.rc not in (0, None), res


NOTHING_TO_DO = re.compile(r"nothing|no pending|up.to.date|already|\b0\b", re.I)


def _schema(db):
    con = sqlite3.connect(str(db))
    try:
        return sorted(r[0] for r in con.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
    finally:
        con.close()


@pytest.mark.sqlite_only      # a sqlite: URL of its own, its schema read from sqlite_master
def test_migrate_fresh_then_nothing(otpd_factory, fake):
    d = otpd_factory.new_dir()
    db = d / "m.db"
    env = {"DATABASE_URL": "sqlite:%s" % db}
    first = otpd_factory.run(["migrate"], env, cwd=d, base=False)
    assert first.rc == 0, first
    assert db.exists()
    schema = _schema(db)
    assert schema, "migrate created no tables"
    second = otpd_factory.run(["migrate"], env, cwd=d, base=False)
    assert second.rc == 0, second
    assert NOTHING_TO_DO.search(second.output), "the second run must report nothing to apply: %r" % second
    assert not re.search(r"nothing|no pending|up.to.date", first.output, re.I), first
    assert _schema(db) == schema
    # serve on the migrated database without migrating again
    otpd = otpd_factory.start({"DATABASE_URL": "sqlite:%s" % db, "OTPD_AUTO_MIGRATE": "false"}, cwd=d)
    otpd.login(fake, PHONE)


def test_serve_migrates_on_start(otpd_factory, fake):
    otpd = otpd_factory.start()
    assert otpd.send(PHONE).status_code == 200
    assert otpd.stop() == 0
    res = otpd_factory.run(["migrate"], {"DATABASE_URL": otpd.env["DATABASE_URL"]},
                           cwd=otpd.cwd, base=False)
    assert res.rc == 0, res
    assert NOTHING_TO_DO.search(res.output), res

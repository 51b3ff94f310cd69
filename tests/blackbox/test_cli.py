"""The operator's command line (docs/API.md §7), from outside, on either backend: otpd user
list|show|set-staff|unset-staff|activate|deactivate, otpd codes PHONE, otpd purge, otpd
check-config, otpd --version.  Exit status 0 done, 1 an error (one line on stderr), 2 bad
usage; --json parsed; every change in the audit log with actor cli; the commands run on the
database of a running serve.  No secret and no code in any output (the after-test checks);
full phone numbers are what the commands print (phones_ok)."""

import json
import threading
from pathlib import Path

import pytest

from conftest import BACKEND, PHONE, db_executemany, db_query, get_code, phone_n, wait_for

PERSIAN_PHONE = "۰۹۱۲۳۴۵۶۷۸۹"      # PHONE in Persian digits, national form
STAFF = "+989121110000"
SENDS = {"OTP_SEND_LIMIT": "1000"}  # several logins of one number
OLD_MS = 1000000000000           # 2001: long past any retention


class Db:
    """A run directory's database, for db_query without a server running on it."""

    def __init__(self, factory, cwd):
        self.factory, self.cwd = factory, Path(cwd)
        self.db_url = factory.database_url(self.cwd)

    @property
    def db_path(self):
        return self.cwd / "otpd.db"


def cli(factory, *args, cwd, env=None, rc=0):
    """otpd ARGS on cwd's database (the log at its default level: the command's own
    output); asserts the exit status; returns the Result."""
    env = dict({"OTPD_LOG_LEVEL": None}, **(env or {}))
    r = factory.run(list(args), env, cwd=cwd, phones_ok=True, timeout=30)
    assert r.rc == rc, r
    if rc == 1:
        # one clear line, "otpd: ..." (a database failure may add the store's own log line)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert lines and lines[-1].startswith("otpd: "), r
    return r


def cli_json(factory, *args, cwd, env=None):
    r = cli(factory, *args, "--json", cwd=cwd, env=env)
    return json.loads(r.stdout)


def audit(db):
    """The audit log, oldest first: (actor, action, target, client)."""
    return [tuple(row) for row in
            db_query(db, "SELECT actor, action, target, client FROM audit_log ORDER BY id")]


def flag(v):
    return bool(v)


# ---- usage, help, version --------------------------------------------------------------

def test_version_and_help(otpd_factory):
    cwd = otpd_factory.new_dir()
    r = cli(otpd_factory, "--version", cwd=cwd)
    assert r.stdout.startswith("otpd ") and len(r.stdout.split()) == 2
    r = cli(otpd_factory, "--help", cwd=cwd)
    for cmd in ("serve", "migrate", "user", "codes PHONE", "purge", "check-config"):
        assert "  " + cmd in r.stdout, cmd
    for args, first in ((["user", "--help"], "usage: otpd user list"),
                        (["user", "set-staff", "--help"], "usage: otpd user list"),
                        (["codes", "--help"], "usage: otpd codes PHONE"),
                        (["purge", "--help"], "usage: otpd purge"),
                        (["check-config", "--help"], "usage: otpd check-config")):
        r = cli(otpd_factory, *args, cwd=cwd)
        assert r.stdout.startswith(first), (args, r)
        assert "--json" in r.stdout
    # help touches no database
    assert not (cwd / "otpd.db").exists()


@pytest.mark.parametrize("args", [
    ["user"], ["user", "bogus"], ["user", "show"], ["user", "show", PHONE, PHONE],
    ["user", "set-staff"], ["user", "list", "a", "b"], ["user", "list", "--limit", "0"],
    ["user", "list", "--limit", "201"], ["user", "list", "--limit", "x"],
    ["user", "list", "--limit"], ["user", "show", PHONE, "--limit", "3"],
    ["codes"], ["codes", PHONE, "--bogus"], ["codes", PHONE, "--cursor", "x"],
    ["purge", "now"], ["purge", "--force"], ["check-config", "--dry-run"],
    ["user", "deactivate", PHONE, "--dry-run"],
])
def test_bad_usage_is_2(otpd_factory, args):
    cwd = otpd_factory.new_dir()
    r = cli(otpd_factory, *args, cwd=cwd, rc=2)
    assert r.stdout == ""
    assert r.stderr.startswith("otpd %s: " % args[0]), r
    assert "--help" in r.stderr


@pytest.mark.parametrize("args", [
    ["user", "show", "12345"], ["user", "set-staff", "+982112345678"],
    ["user", "deactivate", "0912345678"], ["codes", "0912abc5678"],
    ["user", "activate", "x" * 40],
])
def test_bad_phone_is_1(otpd_factory, args):
    cwd = otpd_factory.new_dir()
    r = cli(otpd_factory, *args, cwd=cwd, rc=1)
    assert r.stderr.splitlines() == [r.stderr.splitlines()[0]]
    assert "not an Iranian mobile number" in r.stderr


def test_bad_configuration_is_1(otpd_factory):
    cwd = otpd_factory.new_dir()
    for args in (["user", "list"], ["check-config"], ["purge"], ["codes", PHONE]):
        r = cli(otpd_factory, *args, env={"OTP_MAX_ATTEMPTS": "abc"}, cwd=cwd, rc=1)
        assert r.stderr == "otpd: OTP_MAX_ATTEMPTS: expected an integer 1..100, got 'abc'\n"
    r = cli(otpd_factory, "user", "list", env={"DATABASE_URL": "mysql://x"}, cwd=cwd, rc=1)
    assert r.stderr.startswith("otpd: DATABASE_URL: expected"), r


# ---- users -----------------------------------------------------------------------------

def test_set_staff_creates_the_user_and_is_audited(otpd_factory, fake):
    cwd = otpd_factory.new_dir()
    db = Db(otpd_factory, cwd)
    u = cli_json(otpd_factory, "user", "set-staff", PERSIAN_PHONE, cwd=cwd)
    assert u["created"] is True
    assert u["phone_number"] == PHONE and u["username"] == PHONE[1:]
    assert u["is_staff"] is True and u["is_active"] is True
    assert u["last_login"] is None and u["date_joined"].endswith("Z")
    # again, in another form: the same user, not created
    again = cli_json(otpd_factory, "user", "set-staff", "0098 912 345 6789", cwd=cwd)
    assert again["id"] == u["id"] and again["created"] is False
    assert audit(db) == [("cli", "user.set_staff", "user:%d" % u["id"], None)] * 2
    # the number's first login finds that user: not a new one, and still staff
    otpd = otpd_factory.start(cwd=cwd)
    r = otpd.login(fake, PHONE)
    assert r.json()["is_new_user"] is False and r.json()["user"]["id"] == u["id"]
    shown = cli_json(otpd_factory, "user", "show", PHONE, cwd=cwd)
    assert shown["is_staff"] is True and shown["last_login"] is not None
    assert len(shown["sessions"]) == 1
    assert [c["status"] for c in shown["recent_codes"]] == ["used"]


def test_unknown_number_is_1(otpd_factory):
    cwd = otpd_factory.new_dir()
    db = Db(otpd_factory, cwd)
    for sub in ("show", "activate", "deactivate", "unset-staff"):
        r = cli(otpd_factory, "user", sub, PHONE, cwd=cwd, rc=1)
        assert "no user has this number" in r.stderr
        assert len(r.stderr.splitlines()) == 1
    assert audit(db) == []
    assert cli_json(otpd_factory, "user", "list", cwd=cwd) == {"items": [], "next_cursor": None}


def test_deactivate_while_serving(otpd_factory, fake):
    """On the database of a running serve: deactivating ends every session at once and
    refuses the next login; activating lets it log in again; each change audited."""
    otpd = otpd_factory.start(SENDS)
    r = otpd.login(fake, PHONE)
    uid = r.json()["user"]["id"]
    refresh = r.json()["refresh_token"]
    r2 = otpd.login(fake, PHONE)  # a second session
    u = cli_json(otpd_factory, "user", "deactivate", "09123456789", cwd=otpd.cwd)
    assert u["id"] == uid and u["is_active"] is False and u["created"] is False
    for token in (refresh, r2.json()["refresh_token"]):
        r = otpd.post("/api/v1/usr/token/refresh", json={"refresh_token": token})
        assert (r.status_code, r.json()["code"]) in ((401, "invalid_token"),
                                                     (403, "user_inactive")), r.text
    assert otpd.send(PHONE).status_code == 200
    r = otpd.verify(PHONE, get_code(fake, PHONE))
    assert r.status_code == 403 and r.json()["code"] == "user_inactive"
    shown = cli_json(otpd_factory, "user", "show", PHONE, cwd=otpd.cwd)
    assert shown["is_active"] is False and shown["sessions"] == []
    r = cli(otpd_factory, "user", "activate", PHONE, cwd=otpd.cwd)
    assert r.stdout == "user %d (%s): active, not staff\n" % (uid, PHONE)
    otpd.login(fake, PHONE)
    cli(otpd_factory, "user", "set-staff", PHONE, cwd=otpd.cwd)
    r = cli(otpd_factory, "user", "unset-staff", PHONE, cwd=otpd.cwd)
    assert r.stdout.endswith(": active, not staff\n")
    target = "user:%d" % uid
    assert audit(otpd) == [("cli", "user.deactivate", target, None),
                           ("cli", "user.activate", target, None),
                           ("cli", "user.set_staff", target, None),
                           ("cli", "user.unset_staff", target, None)]


def test_user_list_search_and_pages(otpd_factory, fake):
    otpd = otpd_factory.start()
    phones = [phone_n(i) for i in range(5)]          # +98935000000i
    ids = [otpd.login(fake, p).json()["user"]["id"] for p in phones]
    staff = cli_json(otpd_factory, "user", "set-staff", STAFF, cwd=otpd.cwd)
    ids.append(staff["id"])
    every = cli_json(otpd_factory, "user", "list", cwd=otpd.cwd)
    assert [u["id"] for u in every["items"]] == ids[::-1]        # newest first
    assert every["next_cursor"] is None
    item = every["items"][-1]
    assert set(item) == {"id", "phone_number", "email", "username", "first_name", "last_name",
                         "is_active", "is_staff", "date_joined", "last_login"}
    assert item["phone_number"] == phones[0] and item["last_login"] is not None
    # pages of 2 through next_cursor
    seen, cursor = [], None
    while True:
        args = ["user", "list", "--limit", "2"] + (["--cursor", cursor] if cursor else [])
        page = cli_json(otpd_factory, *args, cwd=otpd.cwd)
        seen += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 2
    assert seen == ids[::-1]
    # by number, in any form
    one = cli_json(otpd_factory, "user", "list", "0935-000-0003", cwd=otpd.cwd)
    assert [u["id"] for u in one["items"]] == [ids[3]] and one["next_cursor"] is None
    # by username prefix: in username order
    pre = cli_json(otpd_factory, "user", "list", "98935", cwd=otpd.cwd)
    assert [u["username"] for u in pre["items"]] == sorted(p[1:] for p in phones)
    page = cli_json(otpd_factory, "user", "list", "98935", "--limit", "3", cwd=otpd.cwd)
    assert page["next_cursor"] == phones[2][1:]
    rest = cli_json(otpd_factory, "user", "list", "98935", "--cursor", page["next_cursor"],
                    cwd=otpd.cwd)
    assert [u["username"] for u in rest["items"]] == [phones[3][1:], phones[4][1:]]
    assert cli_json(otpd_factory, "user", "list", "98936", cwd=otpd.cwd)["items"] == []
    assert cli_json(otpd_factory, "user", "list", "' OR 1=1 --", cwd=otpd.cwd)["items"] == []
    # text: a header and one line per user
    r = cli(otpd_factory, "user", "list", cwd=otpd.cwd)
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "PHONE", "USERNAME"] and len(lines) == 7
    assert lines[1].split()[:2] == [str(staff["id"]), STAFF]
    assert "staff" in lines[1].split()


# ---- codes -----------------------------------------------------------------------------

def test_codes_of_a_number(otpd_factory, fake):
    otpd = otpd_factory.start(dict(SENDS, OTP_MAX_ATTEMPTS="2"))
    assert otpd.send(PHONE).status_code == 200                 # replaced by the next
    assert otpd.send(PHONE).status_code == 200                 # two wrong guesses: exhausted
    code = get_code(fake, PHONE)
    for _ in range(2):
        otpd.verify(PHONE, "%06d" % ((int(code) + 1) % 1000000))
    otpd.login(fake, PHONE)                                    # used
    assert otpd.send(PHONE).status_code == 200                 # valid
    # the message id is recorded after the answer (it rides with the next commit)
    wait_for(lambda: cli_json(otpd_factory, "codes", PHONE, cwd=otpd.cwd)["items"][0]["sms"],
             what="the message id of the newest code")
    page = cli_json(otpd_factory, "codes", PERSIAN_PHONE, cwd=otpd.cwd)
    items = page["items"]
    assert [c["status"] for c in items] == ["valid", "used", "exhausted", "replaced"]
    assert page["next_cursor"] is None
    assert set(items[0]) == {"id", "phone_number", "created_at", "expires_at", "used_at",
                             "attempts", "max_attempts", "status", "sms"}
    assert all(c["phone_number"] == PHONE and c["max_attempts"] == 2 for c in items)
    assert items[2]["attempts"] == 2 and items[1]["used_at"] is not None
    assert items[0]["used_at"] is None
    assert items[0]["sms"]["state"] == "accepted" and items[0]["sms"]["message_id"] > 0
    ids = [c["id"] for c in items]
    assert ids == sorted(ids, reverse=True)
    first = cli_json(otpd_factory, "codes", PHONE, "--limit", "3", cwd=otpd.cwd)
    assert first["next_cursor"] == str(ids[2])
    rest = cli_json(otpd_factory, "codes", PHONE, "--cursor", first["next_cursor"], cwd=otpd.cwd)
    assert [c["id"] for c in rest["items"]] == ids[3:]
    assert cli_json(otpd_factory, "codes", phone_n(9), cwd=otpd.cwd)["items"] == []
    r = cli(otpd_factory, "codes", PHONE, cwd=otpd.cwd)
    assert r.stdout.splitlines()[0].split()[:2] == ["ID", "PHONE"]
    assert len(r.stdout.splitlines()) == 5
    # reading changes nothing, and is not audited
    assert audit(otpd) == []


# ---- purge -----------------------------------------------------------------------------

def test_purge(otpd_factory, fake):
    otpd = otpd_factory.start()
    uid = otpd.login(fake, PHONE).json()["user"]["id"]
    # old codes, and expired refresh records, written behind otpd's back
    db_executemany(otpd, "INSERT INTO otp_codes (phone, code_hash, created_ms, expires_ms,"
                   " attempts, max_attempts, state) VALUES (?, ?, ?, ?, 0, 3, 1)",
                   [(phone_n(i % 7), bytes(32), OLD_MS + i, OLD_MS + i + 300000)
                    for i in range(2500)])
    db_executemany(otpd, "INSERT INTO refresh_tokens (jti, family, user_id, created_ms,"
                   " expires_ms, state) VALUES (?, ?, ?, ?, ?, 1)",
                   [("old%029d" % i, "fam%029d" % i, uid, OLD_MS, OLD_MS + 1000)
                    for i in range(1200)])
    dry = cli_json(otpd_factory, "purge", "--dry-run", cwd=otpd.cwd)
    assert dry["dry_run"] is True
    # the login's code has the lowest id: the purge walks past it, and so does the count
    assert (dry["codes"], dry["stats_buckets"], dry["sessions"]) == (2500, 0, 1200)
    assert dry["codes_and_stats"] == 2500
    r = cli(otpd_factory, "purge", "--dry-run", cwd=otpd.cwd)
    assert r.stdout.startswith("would delete ") and r.stderr == ""
    assert audit(otpd) == []                                   # a dry run changes nothing
    assert db_query(otpd, "SELECT count(*) FROM refresh_tokens")[0][0] == 1201
    done = cli_json(otpd_factory, "purge", cwd=otpd.cwd)
    assert done["dry_run"] is False and done["sessions"] == 1200
    assert done["codes_and_stats"] == 2500                     # behind the new code: all old
    assert db_query(otpd, "SELECT count(*) FROM otp_codes")[0][0] == 1
    assert db_query(otpd, "SELECT count(*) FROM refresh_tokens")[0][0] == 1
    assert audit(otpd) == [("cli", "purge", "codes_and_stats=2500 sessions=1200", None)]
    again = cli_json(otpd_factory, "purge", "--dry-run", cwd=otpd.cwd)
    assert (again["codes"], again["sessions"]) == (0, 0)
    r = cli(otpd_factory, "purge", cwd=otpd.cwd)
    assert r.stderr == ""                                      # progress only on a terminal
    assert r.stdout == "deleted 0 codes and dashboard counter rows, 0 expired refresh records\n"
    # the session of the login is untouched
    assert otpd.get("/api/v1/usr/me", headers={
        "Authorization": "Bearer " + otpd.login(fake, PHONE).json()["access_token"]}).status_code == 200


# ---- check-config ----------------------------------------------------------------------

def test_check_config(otpd_factory, fake):
    cwd = otpd_factory.new_dir()
    fake.configure(credit=424242)
    out = cli_json(otpd_factory, "check-config", cwd=cwd,
                   env={"OTPD_METRICS_TOKEN": "metrics-token-not-to-be-printed",
                        "OTP_MAX_ATTEMPTS": "4"})
    conf = out["config"]
    assert conf["SECRET_KEY"] == "(set)" and conf["KAVENEGAR_API_KEY"] == "(set)"
    assert conf["OTPD_METRICS_TOKEN"] == "(set)"
    assert conf["OTP_MAX_ATTEMPTS"] == "4" and conf["OTP_THROTTLE_RATE"] == "10000/min"
    assert conf["SMS_BACKEND"] == "kavenegar" and conf["OTPD_LOG_LEVEL"] == "info"
    assert conf["KAVENEGAR_API_URL"] == fake.url
    assert out["database"] == {"backend": BACKEND, "ok": True}
    assert out["sms"]["ok"] is True and out["sms"]["credit"] == 424242
    assert out["ok"] is True
    assert "metrics-token-not-to-be-printed" not in json.dumps(out)
    assert fake.stats()["by_method"].get("account/info", 0) == 1
    # text, console backend: no provider call
    r = cli(otpd_factory, "check-config", cwd=cwd,
            env={"SMS_BACKEND": "console", "KAVENEGAR_API_KEY": None})
    assert "database: ok (%s)" % BACKEND in r.stdout and "sms: console" in r.stdout
    assert fake.stats()["by_method"].get("account/info", 0) == 1
    # check-config changes nothing: no migration, no audit (SQLite: no table)
    assert "DATABASE_URL" in r.stdout


def test_check_config_refused_key(otpd_factory, fake):
    cwd = otpd_factory.new_dir()
    fake.configure(status=403, fail_methods=["account/info"])
    r = cli(otpd_factory, "check-config", cwd=cwd, rc=1)
    assert "sms: FAILED" in r.stdout
    assert r.stderr.splitlines()[-1].startswith("otpd: check-config: the Kavenegar key does not work")
    assert "403" in r.stderr
    fake.configure(status=None, fail_methods=None, drop=True)
    r = cli(otpd_factory, "check-config", "--json", cwd=cwd, rc=1)
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["sms"]["ok"] is False and out["database"]["ok"] is True


def test_check_config_database_down(otpd_factory):
    cwd = otpd_factory.new_dir()
    url = "postgres://otpd:pw-not-to-be-printed@127.0.0.1:1/otpd?sslmode=disable"
    otpd_factory.extra_secrets.add("pw-not-to-be-printed")
    r = cli(otpd_factory, "check-config", "--json", cwd=cwd, rc=1,
            env={"DATABASE_URL": url, "DATABASE_CONNECT_TIMEOUT_MS": "1000",
                 "SMS_BACKEND": "console", "KAVENEGAR_API_KEY": None})
    out = json.loads(r.stdout)
    assert out["config"]["DATABASE_URL"] == "postgres://otpd:***@127.0.0.1:1/otpd?sslmode=disable"
    assert out["database"] == {"backend": "postgres", "ok": False} and out["ok"] is False
    r = cli(otpd_factory, "user", "list", cwd=cwd, rc=1,
            env={"DATABASE_URL": url, "DATABASE_CONNECT_TIMEOUT_MS": "1000"})


# ---- alongside serve ---------------------------------------------------------------------

def test_commands_while_serve_is_busy(otpd_factory, fake):
    """Logins through HTTP and set-staff / deactivate from the shell at once, on the same
    database: every command succeeds (SQLite: WAL and the busy timeout), one user per
    number, every change audited."""
    otpd = otpd_factory.start()
    phones = [phone_n(100 + i) for i in range(6)]
    errors = []

    def logins():
        try:
            for p in phones:
                otpd.login(fake, p)
        except AssertionError as e:  # noqa: PERF203
            errors.append(e)

    t = threading.Thread(target=logins)
    t.start()
    results = []
    for p in phones:
        results.append(otpd_factory.run(["user", "set-staff", p, "--json"], cwd=otpd.cwd,
                                        phones_ok=True, timeout=30))
    t.join()
    assert not errors, errors
    assert all(r.rc == 0 for r in results), results
    users = cli_json(otpd_factory, "user", "list", "--limit", "200", cwd=otpd.cwd)["items"]
    assert sorted(u["phone_number"] for u in users) == sorted(phones)
    assert all(u["is_staff"] for u in users)
    assert sum(json.loads(r.stdout)["created"] for r in results) <= len(phones)
    entries = audit(otpd)
    assert len(entries) == len(phones) and {e[1] for e in entries} == {"user.set_staff"}

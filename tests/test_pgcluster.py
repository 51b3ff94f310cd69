"""Tests of tests/pgcluster.py, the throwaway PostgreSQL cluster of the PostgreSQL test runs:
it starts, psql and otpd's role work, a committed row survives a crash (stop -m immediate)
and a start on the same data directory and port, and destroy() (or the end of the process
that started it, however it ends) leaves no process and no directory.  Run as root (CI) the
server runs as postgres; the unprivileged path is run too (as nobody when we are root).

    /usr/bin/python3 -m pytest -q tests/test_pgcluster.py
"""

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import pgcluster  # noqa: E402
from pgcluster import Cluster, PgError  # noqa: E402

PSQL = os.path.join(pgcluster.bindir(), "psql")


def processes_under(path):
    """pids whose command line mentions path (the postmaster runs with -D path/data)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmd:
            out.append(int(d.name))
    return out


def server_pids(pg):
    """The postmaster and its children."""
    pid = pg.postmaster_pid()
    assert pid is not None, "no postmaster.pid"
    kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                          text=True).stdout.split()
    return [pid] + [int(k) for k in kids]


def uid_of(pid):
    return os.stat("/proc/%d" % pid).st_uid


def client_psql(url, sql):
    """psql as a client of the URL (TCP, as otpd), the way otpd and the C tests connect."""
    p = subprocess.run([PSQL, "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                       capture_output=True, text=True, env=pgcluster.clean_env(), timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def wait_gone(path, timeout=10.0):
    end = time.monotonic() + timeout
    while (Path(path).exists() or processes_under(path)) and time.monotonic() < end:
        time.sleep(0.05)
    return not Path(path).exists() and not processes_under(path)


@pytest.fixture(scope="module")
def pg():
    with Cluster.start() as c:
        yield c


# -- start, psql, the role ---------------------------------------------------------------

def test_started_on_loopback_with_durable_settings(pg):
    assert pg.host == "127.0.0.1" and 1024 <= pg.port <= 65535
    assert pg.url("abc") == "postgres://otpd@127.0.0.1:%d/abc" % pg.port
    assert pg.psql("SELECT 1 + 1") == "2\n"
    got = pg.psql("SHOW server_version_num; SHOW fsync; SHOW synchronous_commit; "
                  "SHOW listen_addresses; SHOW max_connections; SHOW server_encoding;").split()
    assert got[0].startswith("15"), got
    assert got[1:] == ["on", "on", "127.0.0.1", "200", "UTF8"], got
    assert Path(pg.psql("SHOW unix_socket_directories").strip()) == pg.sockdir


def test_role_otpd_logs_in_over_tcp_and_may_create_databases(pg):
    assert pg.psql("SELECT rolcanlogin, rolcreatedb, rolsuper, rolpassword IS NULL "
                   "FROM pg_authid WHERE rolname = 'otpd'") == "t|t|f|t\n"
    assert client_psql(pg.url("postgres"), "SELECT current_user, inet_server_addr()") \
        == "otpd|127.0.0.1"
    pg.create_database("harness_a")
    try:
        assert client_psql(pg.url("harness_a"), "CREATE TABLE t (x int); SELECT current_database()") \
            == "harness_a"
        assert pg.psql("SELECT pg_get_userbyid(datdba) FROM pg_database "
                       "WHERE datname = 'harness_a'") == "otpd\n"
    finally:
        pg.drop_database("harness_a")
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'harness_a'") == "0\n"


def test_drop_database_ends_open_sessions(pg):
    pg.create_database("harness_b")
    holder = subprocess.Popen([PSQL, "-X", pg.url("harness_b"), "-c", "SELECT pg_sleep(60)"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=pgcluster.clean_env())
    try:
        for _ in range(200):
            if pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'harness_b'") != "0\n":
                break
            time.sleep(0.02)
        t0 = time.monotonic()
        pg.drop_database("harness_b")
        assert time.monotonic() - t0 < 10
        assert holder.wait(10) != 0, "the session in the dropped database was ended"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)


def test_psql_error_is_raised_with_the_server_message(pg):
    with pytest.raises(PgError, match="no_such_table"):
        pg.psql("SELECT * FROM no_such_table")
    with pytest.raises(ValueError):
        pg.create_database("Bad-Name; DROP")


def test_connection_needs_the_loopback_address(pg):
    """pg_hba: trust on the socket and 127.0.0.1 only; the server listens nowhere else."""
    hba = [ln.split() for ln in (pg.data / "pg_hba.conf").read_text().splitlines()
           if ln.strip() and not ln.startswith("#")]
    assert hba == [["local", "all", "all", "trust"], ["host", "all", "all", "127.0.0.1/32", "trust"]]
    assert oct(os.stat(pg.sockdir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(pg.data).st_mode & 0o777) == "0o700"


# -- who runs it --------------------------------------------------------------------------

def test_server_runs_as_postgres_when_root_else_as_us(pg):
    want = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    pids = server_pids(pg)
    assert len(pids) >= 3, "postmaster and its background processes: %s" % pids
    assert {uid_of(p) for p in pids} == {want}
    assert os.stat(pg.data).st_uid == want and os.stat(pg.sockdir).st_uid == want
    if os.geteuid() == 0:
        assert os.stat(pg.dir).st_mode & 0o777 == 0o711, "postgres must traverse the temp dir"


def test_unprivileged_user_path(tmp_path):
    """The other path: initdb and the server as the user who runs the harness.  As root that
    user is nobody (a copy of pgcluster.py where nobody can read it); otherwise it is us."""
    me = os.geteuid()
    if me == 0:
        d = Path(tempfile.mkdtemp(prefix="pgcluster-test-"))
        try:
            os.chmod(d, 0o755)
            shutil.copy(HERE / "pgcluster.py", d / "pgcluster.py")
            os.chmod(d / "pgcluster.py", 0o644)
            p = _exec_as(["runuser", "-u", "nobody", "--"], d / "pgcluster.py")
        finally:
            shutil.rmtree(d)
        want = pwd.getpwnam("nobody").pw_uid
    else:
        p = _exec_as([], HERE / "pgcluster.py")
        want = me
    assert p.returncode == 0, p.stderr
    uid, user, dirname = p.stdout.split()
    assert int(uid) == want and user == "otpd", p.stdout
    assert wait_gone(dirname), "%s or its processes are still there" % dirname


def _exec_as(prefix, script):
    probe = 'stat -c %u "$PGCLUSTER_DIR/data"; psql -X -At "$DATABASE_URL" -c "SELECT current_user"; ' \
            'echo "$PGCLUSTER_DIR"'
    return subprocess.run(prefix + [sys.executable, str(script), "exec", "--", "sh", "-c", probe],
                          capture_output=True, text=True, cwd="/tmp", timeout=60,
                          env=dict(pgcluster.clean_env(), PATH="%s:%s" % (pgcluster.bindir(),
                                                                           os.environ.get("PATH", ""))))


# -- crash and start again -----------------------------------------------------------------

def test_committed_row_survives_immediate_stop_and_start_again():
    with Cluster.start() as c:
        port, data = c.port, c.data
        c.create_database("dur")
        url = c.url("dur")
        client_psql(url, "CREATE TABLE t (id int PRIMARY KEY, v text)")
        client_psql(url, "INSERT INTO t VALUES (1, 'committed')")
        # open, uncommitted at the crash: must be gone afterwards
        holder = subprocess.Popen([PSQL, "-X", "-v", "ON_ERROR_STOP=1", url],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=pgcluster.clean_env())
        holder.stdin.write(b"BEGIN; INSERT INTO t VALUES (2, 'open'); SELECT pg_sleep(60);\n")
        holder.stdin.flush()
        for _ in range(200):
            if c.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'dur' AND state = 'active'") != "0\n":
                break
            time.sleep(0.02)
        old = c.postmaster_pid()
        c.stop("immediate")
        assert not pgcluster._pid_alive(old) and c.postmaster_pid() is None
        holder.wait(10)
        assert not c.running
        with pytest.raises(AssertionError):
            client_psql(url, "SELECT 1")
        c.start_again()
        assert c.port == port and c.data == data and c.running
        assert client_psql(url, "SELECT id, v FROM t ORDER BY id") == "1|committed"
        log = c.log_text()
        assert "database system was interrupted" in log or "not properly shut down" in log, \
            "the immediate stop was not a crash (no recovery in the log):\n" + log[-2000:]
        # and a fast stop is a clean one
        c.stop("fast")
        c.start_again()
        assert client_psql(url, "SELECT count(*) FROM t") == "1"


# -- nothing left behind --------------------------------------------------------------------

def test_destroy_leaves_no_process_and_no_directory():
    c = Cluster.start()
    d, pids = c.dir, server_pids(c)
    # the postmaster runs; a child may already be gone (a backend that just ended, an
    # autovacuum worker): the ones listed must all be gone after destroy
    assert d.is_dir() and pgcluster._pid_alive(pids[0]) and len(pids) > 1
    c.destroy()
    assert not d.exists()
    assert not [p for p in pids if pgcluster._pid_alive(p)], "server processes left: %s" % pids
    assert processes_under(d) == [], "the reaper or a server process is left"
    c.destroy()      # a second time: nothing to do, no error


def test_destroy_of_a_stopped_cluster_and_the_context_manager():
    with Cluster.start() as c:
        d = c.dir
        c.stop("immediate")
    assert not d.exists() and processes_under(d) == []
    with pytest.raises(RuntimeError, match="inside"):
        with Cluster.start() as c:
            d = c.dir
            raise RuntimeError("inside")
    assert not d.exists() and processes_under(d) == []


def _serve():
    p = subprocess.Popen([sys.executable, str(HERE / "pgcluster.py"), "serve"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=pgcluster.clean_env())
    lines = {}
    while "PGCLUSTER_DIR" not in lines:
        line = p.stdout.readline()
        assert line, "serve ended early: %s" % p.stderr.read()
        k, eq, v = line.strip().partition("=")
        if eq:
            lines[k] = v
    return p, lines["DATABASE_URL"], Path(lines["PGCLUSTER_DIR"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_until_signal_then_destroyed(sig):
    p, url, d = _serve()
    try:
        assert url.startswith("postgres://otpd@127.0.0.1:") and url.endswith("/otpd")
        assert client_psql(url, "SELECT current_database()") == "otpd"
        p.send_signal(sig)
        assert p.wait(30) == 0
        assert not d.exists() and processes_under(d) == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def test_killed_owner_is_cleaned_up_by_the_reaper():
    """SIGKILL runs no atexit hook: the reaper stops the server and removes the dir."""
    p, url, d = _serve()
    assert client_psql(url, "SELECT 1") == "1"
    p.kill()
    p.wait(5)
    assert wait_gone(d, 20), "left after SIGKILL: dir %s, processes %s" % (d.exists(), processes_under(d))


def test_exec_runs_the_command_with_the_url_and_returns_its_status():
    script = 'test "$DATABASE_URL" = "$OTPD_TEST_DATABASE_URL" || exit 99; ' \
             'psql -X -At "$DATABASE_URL" -c "SELECT current_database()"; echo "$PGCLUSTER_DIR"; exit 7'
    p = subprocess.run([sys.executable, str(HERE / "pgcluster.py"), "exec", "--", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60,
                       env=dict(pgcluster.clean_env(), PATH="%s:%s" % (pgcluster.bindir(),
                                                                        os.environ.get("PATH", ""))))
    assert p.returncode == 7, p.stderr
    db, d = p.stdout.split()
    assert db == "otpd_test"
    assert not Path(d).exists() and processes_under(d) == []

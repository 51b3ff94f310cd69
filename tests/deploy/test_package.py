"""The Debian package of `make deb` (build/deb/), as docs/DEPLOYMENT.md describes it:
lintian-clean, its contents and maintainer scripts, the packaged binary (--version,
serve with its default configuration, the backup script), and the systemd unit:
`systemd-analyze verify` and `security --offline=yes` (exposure at most 2.5, the score
the guide states) everywhere; started for real only where systemd is PID 1 (elsewhere
that test asserts the offline checks, which is all such a machine can check)."""

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
DEB_DIR = Path(os.environ.get("OTPD_DEB_DIR") or REPO / "build" / "deb")
VERSION = (REPO / "VERSION").read_text().strip()
DEPLOYMENT = (REPO / "docs" / "DEPLOYMENT.md").read_text()
DEB = DEB_DIR / ("otpd_%s_%s.deb" % (VERSION, subprocess.run(
    ["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()))
MAX_EXPOSURE = 2.5
# lintian warnings the package keeps, each explained in docs/DEPLOYMENT.md (none today:
# the one for otpd.env's mode is overridden in debian/otpd.lintian-overrides)
ALLOWED_WARNINGS = set()


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def deb():
    assert DEB.is_file(), "%s is missing: run make deb (make test-deploy does)" % DEB
    return DEB


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory):
    """The package unpacked (dpkg -x), plus the system's own units (systemd-analyze
    --root wants the targets the unit names)."""
    d = tmp_path_factory.mktemp("root")
    r = run(["dpkg-deb", "-x", str(deb), str(d)])
    assert r.returncode == 0, r.stderr
    units = d / "lib" / "systemd" / "system"
    for f in Path("/lib/systemd/system").iterdir():
        if f.suffix in (".target", ".slice", ".socket") and not (units / f.name).exists():
            shutil.copy(f, units / f.name, follow_symlinks=True)
    return d


def unit_text(root, name="otpd.service"):
    return (root / "lib" / "systemd" / "system" / name).read_text()


def unit_settings(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def exposure(root, unit):
    r = run(["systemd-analyze", "security", "--offline=yes", "--root=%s" % root, unit])
    m = re.search(r"Overall exposure level for %s: ([0-9]+\.[0-9]) (\w+)" % re.escape(unit), r.stdout)
    assert m, "no exposure level in:\n%s\n%s" % (r.stdout[-2000:], r.stderr)
    return float(m.group(1)), m.group(2), r


def offline_checks(root):
    """systemd-analyze verify on the three units, and the security score of both services."""
    r = run(["systemd-analyze", "verify", "--man=no", "--root=%s" % root,
             "otpd.service", "otpd-backup.service", "otpd-backup.timer"])
    assert r.returncode == 0 and not r.stderr.strip(), "verify: %s%s" % (r.stdout, r.stderr)
    scores = {}
    for unit in ("otpd.service", "otpd-backup.service"):
        score, word, _ = exposure(root, unit)
        assert score <= MAX_EXPOSURE and word in ("OK", "SAFE"), "%s: exposure %.1f %s" % (unit, score, word)
        scores[unit] = score
    return scores


# ---------------------------------------------------------------------------------------
# the package

def test_lintian_clean(deb):
    changes = deb.with_suffix(".changes").with_name(deb.name.replace(".deb", ".changes"))
    assert changes.is_file(), changes
    r = run(["lintian", "--fail-on", "error", str(changes)], timeout=300)
    tags = re.findall(r"^([EWX]): otpd\S*: (\S+)", r.stdout, re.M)
    errors = [t for lvl, t in tags if lvl == "E"]
    warnings = {t for lvl, t in tags if lvl == "W"}
    assert r.returncode == 0 and not errors, "lintian:\n%s%s" % (r.stdout, r.stderr)
    assert warnings <= ALLOWED_WARNINGS, "unexplained lintian warnings: %s\n%s" % (
        sorted(warnings - ALLOWED_WARNINGS), r.stdout)
    for tag in ALLOWED_WARNINGS | {"non-standard-file-perm"}:
        assert tag in DEPLOYMENT, "docs/DEPLOYMENT.md does not explain lintian's %s" % tag


def test_package_fields(deb):
    r = run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Depends"])
    fields = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert fields["Package"] == "otpd"
    assert fields["Version"] == VERSION, "debian/changelog says %s, VERSION %s" % (fields["Version"], VERSION)
    # ${shlibs:Depends}: each library otpd links, with the version dpkg-shlibdeps found
    for lib in ("libc6", "libmicrohttpd12", "libjansson4", "libsqlite3-0", "libpq5", "libcurl4",
                "libssl3", "libjwt0"):
        assert re.search(r"(^|, )%s \(>= " % re.escape(lib), fields["Depends"]), fields["Depends"]


def test_package_contents(deb, root):
    r = run(["dpkg-deb", "-c", str(deb)])
    listing = {line.split()[-1].lstrip("."): line.split()[0] for line in r.stdout.splitlines()}
    for path in ("/usr/sbin/otpd", "/usr/lib/otpd/otpd-backup", "/usr/share/man/man8/otpd.8.gz",
                 "/lib/systemd/system/otpd.service", "/lib/systemd/system/otpd-backup.service",
                 "/lib/systemd/system/otpd-backup.timer", "/etc/otpd/otpd.env",
                 "/usr/share/doc/otpd/DEPLOYMENT.md", "/usr/share/doc/otpd/copyright"):
        # dh_compress gzips documentation over 4 kB
        assert path in listing or path + ".gz" in listing, "%s not in the package:\n%s" % (path, r.stdout)
    assert listing["/etc/otpd/otpd.env"] == "-rw-------", listing["/etc/otpd/otpd.env"]
    ctl = root.parent / (root.name + "-control")
    assert run(["dpkg-deb", "-e", str(deb), str(ctl)]).returncode == 0
    assert (ctl / "conffiles").read_text().split() == ["/etc/otpd/otpd.env"]
    postinst = (ctl / "postinst").read_text()
    # installed disabled (dh_installsystemd --no-enable): "enable" only where the unit
    # was enabled before (an upgrade), and a start that deb-systemd-invoke refuses for a
    # disabled unit; the backup units are never started by the package
    lines = [l.strip() for l in postinst.splitlines() if l.strip() and not l.strip().startswith("#")]
    enables = [i for i, l in enumerate(lines) if l.startswith("deb-systemd-helper enable")]
    assert enables, postinst
    for i in enables:
        unit = re.search(r"'([^']+)'", lines[i]).group(1)
        assert lines[i - 1] == "if deb-systemd-helper --quiet was-enabled '%s'; then" % unit, lines[i - 1]
    assert "deb-systemd-invoke $_dh_action 'otpd-backup" not in postinst


def test_example_environment_lists_every_variable(root):
    """otpd.env: every variable of `otpd --help`, commented out (a fresh install sets none)."""
    env = (root / "etc" / "otpd" / "otpd.env").read_text()
    r = run([str(root / "usr/sbin/otpd"), "--help"])
    assert r.returncode == 0, r.stderr
    names = re.findall(r"^  ([A-Z][A-Z0-9_]+) ", r.stdout, re.M)
    assert len(names) > 30, r.stdout
    for n in names:
        assert re.search(r"^#%s=" % n, env, re.M), "%s is not in otpd.env" % n
    active = [l for l in env.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert active == [], "otpd.env sets variables: %s" % active


def test_packaged_binary_version(root):
    r = run([str(root / "usr/sbin/otpd"), "--version"])
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"otpd %s(\+g[0-9a-f]{7,}(-dirty)?)?\n" % re.escape(VERSION), r.stdout), r.stdout


def test_packaged_binary_serves_with_its_defaults(root, tmp_path):
    """`otpd serve` with no configuration but a free port (SQLite otpd.db in its working
    directory, console SMS); /readyz, then SIGTERM and exit 0; then the packaged backup
    script copies its database."""
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "OTPD_LISTEN": "127.0.0.1:%d" % port}
    log = open(tmp_path / "otpd.log", "wb")
    p = subprocess.Popen([str(root / "usr/sbin/otpd"), "serve"], cwd=str(tmp_path), env=env,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        end = time.monotonic() + 15
        while True:
            assert p.poll() is None, "otpd exited %s:\n%s" % (p.returncode, (tmp_path / "otpd.log").read_text())
            try:
                r = requests.get("http://127.0.0.1:%d/readyz" % port, timeout=1)
                if r.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < end, "no /readyz 200:\n%s" % (tmp_path / "otpd.log").read_text()
            time.sleep(0.05)
        assert (tmp_path / "otpd.db").is_file()
        assert (tmp_path / "otpd.db").stat().st_mode & 0o077 == 0

        backups = tmp_path / "backups"
        b = run([str(root / "usr/lib/otpd/otpd-backup")],
                env={"PATH": "/usr/bin:/bin", "OTPD_BACKUP_DB": str(tmp_path / "otpd.db"),
                     "OTPD_BACKUP_DIR": str(backups)})
        assert b.returncode == 0, b.stderr
        copies = list(backups.glob("otpd-*.db"))
        assert len(copies) == 1, (b.stdout, copies)
        assert copies[0].stat().st_mode & 0o077 == 0, oct(copies[0].stat().st_mode)
        con = sqlite3.connect(str(copies[0]))
        try:
            tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
        assert {"users", "otp_codes", "refresh_tokens"} <= tables, tables
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
            rc = None
        log.close()
    assert rc == 0, "otpd exited %s after SIGTERM:\n%s" % (rc, (tmp_path / "otpd.log").read_text())


def test_unit_refuses_to_start_unconfigured(root, tmp_path):
    """The unit's own environment (OTPD_ENV=production) with the shipped otpd.env, where
    everything is commented out: otpd refuses to start, naming what is missing."""
    settings = unit_settings(unit_text(root))
    env = {"PATH": "/usr/bin:/bin", "OTPD_LISTEN": "127.0.0.1:%d" % free_port()}
    for e in settings["Environment"]:
        for kv in e.split():
            k, _, v = kv.partition("=")
            env[k] = v
    assert env["DATABASE_URL"] == "sqlite:/var/lib/otpd/otpd.db"
    env["DATABASE_URL"] = "sqlite:%s/otpd.db" % tmp_path   # not the system's /var/lib
    r = run([str(root / "usr/sbin/otpd"), "serve"], env=env, cwd=str(tmp_path), timeout=20)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert re.match(r"otpd: SECRET_KEY: expected at least 32 bytes when OTPD_ENV=production", r.stderr), r.stderr


# ---------------------------------------------------------------------------------------
# the unit

def test_unit_hardening_settings(root):
    s = unit_settings(unit_text(root))
    want = {"DynamicUser": "yes", "StateDirectory": "otpd", "ProtectSystem": "strict",
            "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
            "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "",
            "Restart": "on-failure", "EnvironmentFile": "/etc/otpd/otpd.env",
            "KillSignal": "SIGTERM", "ExecStart": "/usr/sbin/otpd serve"}
    for k, v in want.items():
        assert v in s.get(k, []), "%s=%s expected, the unit has %s" % (k, v, s.get(k))
    assert "@system-service" in s["SystemCallFilter"]
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # a graceful stop must fit: OTPD_SHUTDOWN_TIMEOUT (10) + 2 s + 2 x OTPD_DB_BUSY_TIMEOUT_MS (5 s)
    stop = int(s["TimeoutStopSec"][0])
    assert stop > 10 + 2 + 2 * 5, stop


def test_unit_offline_checks_and_documented_score(root):
    scores = offline_checks(root)
    m = re.search(r"exposure level (?:of|for) `?otpd\.service`?[^0-9]*([0-9]+\.[0-9])", DEPLOYMENT)
    assert m, "docs/DEPLOYMENT.md does not state otpd.service's exposure level"
    assert float(m.group(1)) == scores["otpd.service"], \
        "docs/DEPLOYMENT.md says %s, systemd-analyze %.1f" % (m.group(1), scores["otpd.service"])


def systemd_is_pid1():
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd" and Path("/run/systemd/system").is_dir()
    except OSError:
        return False


def test_unit_under_systemd(deb, root):
    """Where systemd runs: install the package (dpkg -i), start the unit with a drop-in
    for development settings on a free port, /readyz through it, stop (exit 0), purge with
    /etc/otpd/purge-database (the state goes).  Without systemd as PID 1 (a container, CI):
    the offline checks, which is all that can be checked there."""
    if not systemd_is_pid1():
        scores = offline_checks(root)
        assert scores["otpd.service"] <= MAX_EXPOSURE
        return
    st = run(["dpkg-query", "-W", "-f=${Status}", "otpd"])
    assert "installed" not in st.stdout, "otpd is installed on this machine: not touching it"
    port = free_port()
    dropin = Path("/run/systemd/system/otpd.service.d")
    try:
        r = run(["dpkg", "-i", str(deb)], timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert run(["systemctl", "is-enabled", "otpd.service"]).stdout.strip() == "disabled"
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "test.conf").write_text("[Service]\nEnvironment=OTPD_ENV=development "
                                          "OTPD_LISTEN=127.0.0.1:%d\n" % port)
        assert run(["systemctl", "daemon-reload"]).returncode == 0
        r = run(["systemctl", "start", "otpd.service"])
        assert r.returncode == 0, r.stderr + run(["journalctl", "-u", "otpd", "-n", "50"]).stdout
        end = time.monotonic() + 20
        while True:
            try:
                if requests.get("http://127.0.0.1:%d/readyz" % port, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < end, run(["journalctl", "-u", "otpd", "-n", "50"]).stdout
            time.sleep(0.1)
        assert Path("/var/lib/private/otpd/otpd.db").is_file()
        assert run(["systemctl", "stop", "otpd.service"]).returncode == 0
        show = run(["systemctl", "show", "-p", "Result", "-p", "ExecMainStatus", "otpd.service"]).stdout
        assert "Result=success" in show and "ExecMainStatus=0" in show, show
    finally:
        run(["systemctl", "stop", "otpd.service"])
        shutil.rmtree(dropin, ignore_errors=True)
        Path("/etc/otpd").mkdir(exist_ok=True)
        Path("/etc/otpd/purge-database").touch()
        run(["dpkg", "--purge", "otpd"], timeout=300)
        run(["systemctl", "daemon-reload"])
    assert not Path("/var/lib/private/otpd").exists()
    assert not Path("/etc/otpd").exists()


# ---------------------------------------------------------------------------------------
# purge: the database stays unless /etc/otpd/purge-database says otherwise

def make_state(base):
    (base / "var/lib/private/otpd").mkdir(parents=True)
    (base / "var/lib/private/otpd/otpd.db").write_text("db")
    (base / "var/lib/private/otpd-backup").mkdir(parents=True)
    (base / "var/lib/otpd").symlink_to("private/otpd")
    (base / "var/lib/otpd-backup").symlink_to("private/otpd-backup")
    (base / "etc/otpd").mkdir(parents=True)


def postrm(base, *args):
    return run(["sh", str(REPO / "debian" / "otpd.postrm")] + list(args),
               env={"PATH": "/usr/bin:/bin", "DPKG_ROOT": str(base)})


@pytest.mark.parametrize("action", ["remove", "purge"])
def test_postrm_keeps_the_database(tmp_path, action):
    make_state(tmp_path)
    r = postrm(tmp_path, action)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "var/lib/private/otpd/otpd.db").read_text() == "db"
    assert (tmp_path / "var/lib/otpd").is_symlink()
    if action == "purge":
        assert "kept the database" in r.stderr and "/etc/otpd/purge-database" in r.stderr


def test_postrm_purge_with_the_flag_deletes_the_state(tmp_path):
    make_state(tmp_path)
    (tmp_path / "etc/otpd/purge-database").touch()
    r = postrm(tmp_path, "purge")
    assert r.returncode == 0, r.stderr
    for p in ("var/lib/private/otpd", "var/lib/private/otpd-backup", "var/lib/otpd",
              "var/lib/otpd-backup", "etc/otpd"):
        assert not os.path.lexists(tmp_path / p), p
    assert (tmp_path / "var/lib/private").is_dir()   # systemd's, not the package's
    assert "purge-database" in DEPLOYMENT

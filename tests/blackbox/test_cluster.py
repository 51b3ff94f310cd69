"""Three otpd nodes on one PostgreSQL (OTPD_TEST_BACKEND=postgres): every rule holds across
the nodes exactly as on one.  Requests are spread round-robin over the nodes and raced: a code
is used once, each wrong guess costs exactly one attempt, the per-number send limit and one user
per number hold, a refresh token rotates once, the per-address throttle counts for the whole
cluster, and nodes that start together apply the migrations and create the secret once."""

import collections
import threading

import pytest

from conftest import (PHONE, assert_problem, fake_kavenegar, get_code, parallel, phone_n,
                      wrong_code)

pytestmark = pytest.mark.postgres_only

NODES = 3


def start_nodes(otpd_factory, env=None, n=NODES, together=False):
    """n nodes on one database: the first one's (a fresh one of this test)."""
    env = dict(env or {})
    if not together:
        first = otpd_factory.start(env)
        env["DATABASE_URL"] = first.db_url
        return [first] + [otpd_factory.start(env) for _ in range(n - 1)]
    # together: the first's database, every node started before any is waited for
    probe = otpd_factory.env(env, cwd=otpd_factory.new_dir())
    env["DATABASE_URL"] = probe["DATABASE_URL"]
    nodes = [otpd_factory.start(env, wait=False) for _ in range(n)]
    for node in nodes:
        node.wait_healthy(timeout=30)
    return nodes


def spread(nodes, n, fn):
    """fn(node, i) for i in range(n), all at once, request i on node i % len(nodes)."""
    return parallel(n, lambda i: fn(nodes[i % len(nodes)], i))


def codes_of(rs):
    out = collections.Counter()
    for r in rs:
        out[r.json().get("code") if r.status_code != 200 else 200] += 1
    return out


def test_a_code_verifies_once_across_nodes(otpd_factory, fake):
    nodes = start_nodes(otpd_factory)
    assert nodes[1].send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    rs = spread(nodes, 30, lambda node, i: node.verify(PHONE, code))
    ok = [r for r in rs if r.status_code == 200]
    assert len(ok) == 1, codes_of(rs)
    for r in rs:
        if r.status_code != 200:
            assert_problem(r, 400, "otp_expired")
    assert ok[0].json()["is_new_user"] is True


@pytest.mark.otpd_env(OTP_MAX_ATTEMPTS="3")
def test_wrong_guesses_over_nodes_are_judged_at_most_max_attempts_times(otpd_factory, fake):
    nodes = start_nodes(otpd_factory, {"OTP_MAX_ATTEMPTS": "3"})
    assert nodes[0].send(PHONE).status_code == 200
    code = get_code(fake, PHONE)
    bad = wrong_code(code)
    rs = spread(nodes, 30, lambda node, i: node.verify(PHONE, bad))
    invalid = [r for r in rs if r.status_code == 400 and r.json().get("code") == "invalid_code"]
    assert len(invalid) == 3, codes_of(rs)
    assert sorted(r.json()["remaining_attempts"] for r in invalid) == [0, 1, 2]
    for r in rs:
        if r not in invalid:
            assert_problem(r, 400, "too_many_attempts")
    for node in nodes:  # the right code is no good any more, on any node
        assert_problem(node.verify(PHONE, code), 400, "too_many_attempts")


def test_the_send_limit_holds_over_nodes(otpd_factory, fake):
    nodes = start_nodes(otpd_factory, {"OTP_SEND_LIMIT": "3", "OTP_SEND_WINDOW": "120"})
    rs = spread(nodes, 30, lambda node, i: node.send(PHONE))  # 3 nodes x 10
    ok = [r for r in rs if r.status_code == 200]
    assert len(ok) == 3, codes_of(rs)
    for r in rs:
        if r.status_code != 200:
            assert_problem(r, 429, "otp_rate_limited")
    msgs = fake.messages(PHONE, include_refused=True)
    assert len(msgs) == 3, "exactly three SMS reach the provider, got %d" % len(msgs)
    # a new code replaces the old one: exactly one of the three verifies, on any node
    wins = 0
    for i, m in enumerate(msgs):
        r = nodes[i % NODES].verify(PHONE, fake_kavenegar.extract_code(m))
        wins += r.status_code == 200
    assert wins == 1


def test_one_user_per_number_over_nodes(otpd_factory, fake):
    """Each node logs one number in (its own send, its own code): one user, new once; the same
    id from every node's /me."""
    nodes = start_nodes(otpd_factory)
    ids = set()
    news = 0
    for node in nodes:
        r = node.login(fake, PHONE)
        ids.add(r.json()["user"]["id"])
        news += r.json()["is_new_user"]
        tok = r.json()["access_token"]
        for other in nodes:
            me = other.get("/api/v1/usr/me", headers={"Authorization": "Bearer " + tok})
            assert me.status_code == 200, me.text
            assert me.json()["id"] in ids
    assert len(ids) == 1 and news == 1


def test_a_refresh_token_rotates_once_over_nodes(otpd_factory, fake):
    nodes = start_nodes(otpd_factory, {"JWT_REFRESH_GRACE": "0"})
    refresh = nodes[0].login(fake, PHONE).json()["refresh_token"]
    rs = spread(nodes, 30, lambda node, i: node.post("/api/v1/usr/token/refresh",
                                                     json={"refresh_token": refresh}))
    ok = [r for r in rs if r.status_code == 200]
    assert len(ok) == 1, codes_of(rs)
    for r in rs:
        if r.status_code != 200:
            assert_problem(r, 401, "invalid_token")
    # the losers presented a rotated-out token: a replay, so the whole family is revoked,
    # the winner's new token included, whichever node is asked
    new = ok[0].json()["refresh_token"]
    for node in nodes:
        assert_problem(node.post("/api/v1/usr/token/refresh", json={"refresh_token": new}),
                       401, "invalid_token")


def test_the_client_throttle_counts_for_the_cluster(otpd_factory, fake):
    """OTP_THROTTLE_RATE=5/min per address: 12 sends from one address, spread over the three
    nodes (each alone would allow 5, 15 in all), are 5 accepted in all."""
    nodes = start_nodes(otpd_factory, {"OTP_THROTTLE_RATE": "5/min"})
    rs = spread(nodes, 12, lambda node, i: node.send(phone_n(i)))
    ok = [r for r in rs if r.status_code == 200]
    assert len(ok) == 5, codes_of(rs)
    for r in rs:
        if r.status_code != 200:
            assert_problem(r, 429, "throttled")
            assert r.json()["limit"] == "client_rate"
            assert int(r.headers["Retry-After"]) >= 1


def test_nodes_started_together_migrate_once_and_share_one_secret(otpd_factory, fake):
    """Three nodes started at once on an empty database, without SECRET_KEY: the migrations
    are applied once (each version recorded once), one signing secret is created, and a token
    minted by one node is accepted by the others."""
    nodes = start_nodes(otpd_factory, {"SECRET_KEY": None}, together=True)
    pg = otpd_factory.pg
    db = nodes[0].db_url.rsplit("/", 1)[1].split("?")[0]
    rows = pg.psql("SELECT version, count(*) FROM schema_migrations GROUP BY version"
                   " ORDER BY version", db=db).split()
    assert rows and all(r.endswith("|1") for r in rows), rows
    assert pg.psql("SELECT count(*) FROM meta", db=db).strip() == "1"
    tok = nodes[2].login(fake, PHONE).json()["access_token"]
    for node in nodes:
        r = node.get("/api/v1/usr/me", headers={"Authorization": "Bearer " + tok})
        assert r.status_code == 200, r.text


def test_login_on_each_node(otpd_factory, fake):
    """A send on one node and the verify on another, for every pair."""
    nodes = start_nodes(otpd_factory)
    k = 0
    for a in nodes:
        for b in nodes:
            phone = phone_n(100 + k)
            k += 1
            assert a.send(phone).status_code == 200
            r = b.verify(phone, get_code(fake, phone))
            assert r.status_code == 200, r.text

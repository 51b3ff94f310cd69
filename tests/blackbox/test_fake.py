"""The fake Kavenegar server itself (tools/fake_kavenegar.py), without otpd: docs/KAVENEGAR.md §11."""

import concurrent.futures
import json
import signal
import subprocess
import sys
import time

import pytest
import requests

from conftest import REPO, fake_kavenegar, free_port, new_api_key

FIXTURES = REPO / "tests" / "fixtures" / "kavenegar"
PERSIAN_CODE_TEXT = "کد ورود شما: 482913"


@pytest.fixture
def fk():
    key = new_api_key()
    f = fake_kavenegar.FakeKavenegar(api_key=key, templates={"otp-login": "کد تایید شما: %token"})
    f.start()
    yield f
    f.stop()


def api(fk, method, key=None, verb="POST", **params):
    url = "%s/v1/%s/%s.json" % (fk.url, key or fk.api_key, method)
    if verb == "GET":
        return requests.get(url, params=params, timeout=10)
    return requests.request(verb, url, data=params, timeout=10)


def fixture(name):
    p = FIXTURES / name
    assert p.exists(), "fixture missing: %s" % p
    return json.loads(p.read_text(encoding="utf-8"))


# -- envelope, success shapes ------------------------------------------------------------

def test_sms_send_post_form(fk):
    r = api(fk, "sms/send", receptor="09123456789", message=PERSIAN_CODE_TEXT)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    ref = fixture("sms_send_success.json")
    assert body["return"] == ref["return"]
    assert isinstance(body["entries"], list) and len(body["entries"]) == 1
    e = body["entries"][0]
    assert set(e) == set(ref["entries"][0])
    assert e["message"] == PERSIAN_CODE_TEXT and e["receptor"] == "09123456789"
    assert e["status"] == 1 and e["sender"] == "10008663" and e["cost"] == 120
    assert "تایید شد".encode() in r.content, "JSON must be raw UTF-8"


def test_sms_send_get_query_and_multi(fk):
    r = api(fk, "sms/send", verb="GET", receptor="09123456789,09367891011", message="hello 1")
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    assert [e["receptor"] for e in entries] == ["09123456789", "09367891011"]
    assert set(entries[0]) == set(fixture("sms_send_success_multi.json")["entries"][0])


def test_post_with_query_params_and_repeated_names(fk):
    url = "%s/v1/%s/sms/send.json?receptor=09123456789" % (fk.url, fk.api_key)
    r = requests.post(url, data=[("message", "a"), ("message", "b")], timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["entries"][0]["message"] == "a,b"


def test_verify_lookup(fk):
    r = api(fk, "verify/lookup", receptor="09123456789", template="otp-login", token="482913")
    assert r.status_code == 200, r.text
    body = r.json()
    ref = fixture("verify_lookup_success.json")
    assert body["return"] == ref["return"]
    assert isinstance(body["entries"], list) and len(body["entries"]) == 1
    assert set(body["entries"][0]) == set(ref["entries"][0])
    assert body["entries"][0]["message"] == "کد تایید شما: 482913"
    assert body["entries"][0]["status"] == 5
    fk.configure(entries_object=True)
    r = api(fk, "verify/lookup", receptor="09123456789", template="otp-login", token="111111")
    assert isinstance(r.json()["entries"], dict)
    assert set(r.json()["entries"]) == set(fixture("verify_lookup_success_entries_object.json")["entries"])


def test_account_info_and_credit(fk):
    r = api(fk, "account/info")
    ref = fixture("account_info.json")
    assert r.status_code == 200 and set(r.json()["entries"]) == set(ref["entries"])
    before = r.json()["entries"]["remaincredit"]
    assert r.json()["entries"]["type"] == "master"
    api(fk, "sms/send", receptor="09123456789", message="x" * 10)          # 1 GSM part
    api(fk, "sms/send", receptor="09123456789", message="ک" * 71)          # 2 UCS-2 parts
    after = api(fk, "account/info").json()["entries"]["remaincredit"]
    assert before - after == 3 * 120
    fk.configure(credit=100)
    r = api(fk, "sms/send", receptor="09123456789", message="x")
    assert r.status_code == 418 and r.json() == fixture("error_418_insufficient_credit.json")


def test_sms_status(fk):
    mid = api(fk, "sms/send", receptor="09123456789", message="x").json()["entries"][0]["messageid"]
    r = api(fk, "sms/status", messageid="%d,123,abc" % mid)
    assert r.status_code == 200
    entries = r.json()["entries"]
    assert entries[0] == {"messageid": mid, "status": 10, "statustext": "رسیده به گیرنده"}
    assert entries[1]["status"] == 100 and entries[2]["status"] == 100
    assert set(entries[0]) == set(fixture("sms_status.json")["entries"][0])
    fk.configure(delivery_status=11)
    assert api(fk, "sms/status", messageid=str(mid)).json()["entries"][0]["status"] == 11


# -- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("status,name", [
    (400, "error_400_missing_params.json"), (403, "error_403_invalid_key.json"),
    (409, "error_409_server_busy.json"), (411, "error_411_invalid_receptor.json"),
    (412, "error_412_invalid_sender.json"), (418, "error_418_insufficient_credit.json"),
    (424, "error_424_template_not_found.json"), (431, "error_431_invalid_token.json"),
])
def test_error_envelopes_match_fixtures(fk, status, name):
    fk.configure(status=status)
    r = api(fk, "sms/send", receptor="09123456789", message="x")
    assert r.status_code == status
    assert r.json() == fixture(name)


def test_natural_errors(fk):
    cases = [
        (403, lambda: api(fk, "sms/send", key="WRONGKEY", receptor="09123456789", message="x")),
        (400, lambda: api(fk, "sms/send", message="x")),
        (411, lambda: api(fk, "sms/send", receptor="", message="x")),
        (411, lambda: api(fk, "sms/send", receptor="02112345678", message="x")),
        (411, lambda: api(fk, "sms/send", receptor="+14155552671", message="x")),
        (400, lambda: api(fk, "sms/send", receptor="09123456789")),
        (413, lambda: api(fk, "sms/send", receptor="09123456789", message="   ")),
        (413, lambda: api(fk, "sms/send", receptor="09123456789", message="x" * 901)),
        (414, lambda: api(fk, "sms/send", receptor=",".join(["09123456789"] * 201), message="x")),
        (412, lambda: api(fk, "sms/send", receptor="09123456789", message="x", sender="999")),
        (417, lambda: api(fk, "sms/send", receptor="09123456789", message="x", date="yesterday")),
        (417, lambda: api(fk, "sms/send", receptor="09123456789", message="x", date=str(int(time.time()) - 3600))),
        (607, lambda: api(fk, "sms/send", receptor="09123456789", message="x", tag="bad tag!")),
        (424, lambda: api(fk, "verify/lookup", receptor="09123456789", template="nope", token="1")),
        (400, lambda: api(fk, "verify/lookup", receptor="09123456789", template="otp-login")),
        (406, lambda: api(fk, "verify/lookup", receptor="09123456789", template="otp-login", token="")),
        (431, lambda: api(fk, "verify/lookup", receptor="09123456789", template="otp-login", token="12 34")),
        (431, lambda: api(fk, "verify/lookup", receptor="09123456789", template="otp-login", token="12_34")),
        (431, lambda: api(fk, "verify/lookup", receptor="09123456789", template="otp-login", token="1" * 101)),
        (411, lambda: api(fk, "verify/lookup", receptor="09123456789,09123456788", template="otp-login", token="1")),
        (428, lambda: api(fk, "verify/lookup", receptor="09123456789", template="otp-login", token="ab1", type="call")),
        (400, lambda: api(fk, "verify/lookup", receptor="09123456789", template="otp-login", token="1", type="fax")),
        (404, lambda: api(fk, "sms/frobnicate")),
        (405, lambda: api(fk, "sms/send", verb="PUT", receptor="09123456789", message="x")),
        (400, lambda: api(fk, "sms/status")),
    ]
    for want, call in cases:
        r = call()
        body = r.json()
        assert body["return"]["status"] == want, (want, body)
        assert r.status_code == want
        assert body["entries"] is None
        assert isinstance(body["return"]["message"], str) and body["return"]["message"]


def test_template_without_token_placeholder(fk):
    fk.configure(templates={"bare": "no placeholder here"})
    r = api(fk, "verify/lookup", receptor="09123456789", template="bare", token="1")
    assert r.json()["return"]["status"] == 432
    fk.configure(templates=["listed"])
    r = api(fk, "verify/lookup", receptor="09123456789", template="listed", token="123456")
    assert r.status_code == 200 and "123456" in r.json()["entries"][0]["message"]


def test_http_200_errors(fk):
    fk.configure(http_200_errors=True)
    r = api(fk, "sms/send", key="WRONG", receptor="09123456789", message="x")
    assert r.status_code == 200 and r.json()["return"]["status"] == 403


def test_receptor_forms(fk):
    for form in ("09123456789", "9123456789", "989123456789", "00989123456789", "+989123456789"):
        r = api(fk, "sms/send", receptor=form, message="x")
        assert r.status_code == 200, (form, r.text)
    fk.configure(strict_receptor=True)
    for form, want in (("09123456789", 200), ("00989123456789", 200), ("+989123456789", 411),
                       ("989123456789", 411), ("9123456789", 411), ("۰۹۱۲۳۴۵۶۷۸۹", 411)):
        assert api(fk, "sms/send", receptor=form, message="x").json()["return"]["status"] == want, form


def test_invalid_utf8_is_422(fk):
    url = "%s/v1/%s/sms/send.json" % (fk.url, fk.api_key)
    r = requests.post(url, data=b"receptor=09123456789&message=%FF%FE",
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert r.json()["return"]["status"] == 422


def test_localid_dedup(fk):
    a = api(fk, "sms/send", receptor="09123456789", message="one", localid="L1").json()["entries"][0]
    b = api(fk, "sms/send", receptor="09123456789", message="two", localid="L1").json()["entries"][0]
    assert a == b
    assert len(fk.messages("09123456789")) == 1


def test_scheduled_date(fk):
    r = api(fk, "sms/send", receptor="09123456789", message="x", date=str(int(time.time()) + 3600))
    assert r.json()["entries"][0]["status"] == 2


# -- failure injection -------------------------------------------------------------------

def test_status_fail_next_then_normal(fk):
    fk.configure(status=418, fail_next=2)
    got = [api(fk, "sms/send", receptor="09123456789", message="c %d" % i).status_code for i in range(4)]
    assert got == [418, 418, 200, 200]
    assert fk.config()["status"] is None
    assert fk.stats()["failures_injected"] == 2


def test_http_status_html(fk):
    fk.configure(http_status=502)
    r = api(fk, "sms/send", receptor="09123456789", message="x")
    assert r.status_code == 502 and r.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        r.json()


def test_drop_closes_without_answer(fk):
    fk.configure(drop=True)
    with pytest.raises(requests.ConnectionError):
        api(fk, "sms/send", receptor="09123456789", message="x 654321")
    assert fk.stats()["drops"] == 1
    refused = fk.messages("09123456789", include_refused=True)
    assert refused[-1]["accepted"] is False and refused[-1]["outcome"] == "dropped"
    assert fake_kavenegar.extract_code(refused[-1]) == "654321"
    assert fk.messages("09123456789") == []


def test_latency_and_max_in_flight(fk):
    fk.configure(latency_ms=400)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda i: api(fk, "sms/send", receptor=fk_phone(i), message="m"), range(8)))
    elapsed = time.monotonic() - t0
    assert all(r.status_code == 200 for r in rs)
    assert 0.4 <= elapsed < 2.0, elapsed
    st = fk.stats()
    assert st["max_in_flight"] >= 4 and st["in_flight"] == 0
    assert st["by_method"]["sms/send"] == 8


def fk_phone(i):
    return "0935%07d" % i


# -- control API -------------------------------------------------------------------------

def test_control_api_over_http(fk):
    api(fk, "sms/send", receptor="09123456789", message="first 111111")
    api(fk, "verify/lookup", receptor="+989123456789", template="otp-login", token="222222")
    api(fk, "sms/send", receptor="09350000000", message="other 333333")
    r = requests.get(fk.url + "/_fake/messages", params={"receptor": "۰۹۱۲۳۴۵۶۷۸۹"}, timeout=5)
    msgs = r.json()
    assert [m["method"] for m in msgs] == ["sms/send", "verify/lookup"]
    assert msgs[-1]["token"] == "222222" and msgs[0]["message"] == "first 111111"
    assert all(m["phone"] == "+989123456789" for m in msgs)

    r = requests.post(fk.url + "/_fake/config", json={"status": 418, "fail_next": 1}, timeout=5)
    assert r.status_code == 200 and r.json()["status"] == 418
    assert api(fk, "sms/send", receptor="09123456789", message="refused 444444").status_code == 418
    all_msgs = requests.get(fk.url + "/_fake/messages",
                            params={"receptor": "+989123456789", "all": "1"}, timeout=5).json()
    assert all_msgs[-1]["accepted"] is False and all_msgs[-1]["outcome"] == 418
    assert fake_kavenegar.extract_code(all_msgs[-1]) == "444444"

    assert requests.post(fk.url + "/_fake/config", json={"nope": 1}, timeout=5).status_code == 400
    assert requests.post(fk.url + "/_fake/config", json={"latency_ms": "x"}, timeout=5).status_code == 400
    assert requests.post(fk.url + "/_fake/config", json=[1], timeout=5).status_code == 400

    st = requests.get(fk.url + "/_fake/stats", timeout=5).json()
    assert st["requests"] == 4 and st["max_in_flight"] >= 1 and st["in_flight"] == 0

    reqs = requests.get(fk.url + "/_fake/requests", timeout=5).json()
    assert len(reqs) == 4
    assert all(fk.api_key in q["path"] for q in reqs)
    assert all(fk.api_key not in q["body"] and fk.api_key not in q["query"] for q in reqs)

    assert requests.post(fk.url + "/_fake/reset", timeout=5).status_code == 200
    assert requests.get(fk.url + "/_fake/messages", timeout=5).json() == []
    assert requests.get(fk.url + "/_fake/stats", timeout=5).json()["requests"] == 0
    cfg = requests.get(fk.url + "/_fake/config", timeout=5).json()
    assert cfg["status"] is None and "otp-login" in cfg["templates"]
    assert requests.get(fk.url + "/_fake/nope", timeout=5).status_code == 404


def test_stop_refuses_then_restart_same_port(fk):
    port = fk.port
    fk.stop()
    with pytest.raises(requests.ConnectionError):
        api(fk, "account/info")
    fk.start()
    assert fk.port == port
    assert api(fk, "account/info").status_code == 200


def test_stop_cuts_keepalive_connections(fk):
    s = requests.Session()
    url = "%s/v1/%s/account/info.json" % (fk.url, fk.api_key)
    assert s.post(url, timeout=5).status_code == 200
    fk.stop()
    with pytest.raises(requests.ConnectionError):
        s.post(url, timeout=5)
    fk.start()


def test_extract_code():
    assert fake_kavenegar.extract_code({"message": "کد ورود شما: ۴۸۲۹۱۳"}) == "482913"
    assert fake_kavenegar.extract_code({"message": "code 012345."}) == "012345"
    assert fake_kavenegar.extract_code({"token": "099999", "message": "x"}) == "099999"
    assert fake_kavenegar.extract_code({"message": "no code 12345 1234567"}) is None
    with pytest.raises(ValueError):
        fake_kavenegar.extract_code({"message": "111111 or 222222"})


def test_cli_port_zero_and_template():
    key = new_api_key()
    p = subprocess.Popen([sys.executable, str(REPO / "tools" / "fake_kavenegar.py"), "--port", "0",
                          "--api-key", key, "--template", "t1=Your code %token", "--template", "t2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stdout.readline().decode().strip()
        port = int(line)
        base = "http://127.0.0.1:%d/v1/%s/verify/lookup.json" % (port, key)
        r = requests.post(base, data={"receptor": "09123456789", "template": "t1", "token": "123456"}, timeout=5)
        assert r.json()["entries"][0]["message"] == "Your code 123456"
        r = requests.post(base, data={"receptor": "09123456789", "template": "t2", "token": "123456"}, timeout=5)
        assert r.status_code == 200
        r = requests.post(base.replace(key, "X" + key[1:]), data={}, timeout=5)
        assert r.status_code == 403
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(5) == 0
        err = p.stderr.read().decode()
        assert key not in err


def test_cli_fixed_port():
    port = free_port()
    p = subprocess.Popen([sys.executable, str(REPO / "tools" / "fake_kavenegar.py"), "--port", str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert int(p.stdout.readline()) == port
        r = requests.post("http://127.0.0.1:%d/v1/ANYKEY/account/info.json" % port, timeout=5)
        assert r.status_code == 200
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(5) == 0

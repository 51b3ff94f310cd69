"""The OpenAPI document (docs/openapi.json): served byte for byte by GET /api/v1/schema, and
in step with what otpd serves, both ways.  (That every response of the suite is as the document
says is checked after every test, by conftest and openapi_check.py.)"""

import json
import re
import types

import jsonschema
import requests
from urllib3._collections import HTTPHeaderDict

import openapi_check
from conftest import REPO

DOC_PATH = REPO / "docs" / "openapi.json"
SCHEMA = "/api/v1/schema"


def doc():
    return json.loads(DOC_PATH.read_text(encoding="utf-8"))


def route_table():
    """(path, METHOD) of every row of the route table in src/http/server.c."""
    src = (REPO / "src" / "http" / "server.c").read_text(encoding="utf-8")
    table = re.search(r"static const struct route routes\[\] = \{(.*?)\n\};", src, re.S)
    assert table, "no route table in src/http/server.c"
    rows = re.findall(r'\{\s*"([^"]+)",\s*"([A-Z]+)",\s*http_h_\w+', table.group(1))
    assert rows and len(rows) == table.group(1).count('{"'), table.group(1)
    return set(rows)


# -- the document as served -----------------------------------------------------------------

def test_schema_is_the_document_byte_for_byte(otpd):
    r = otpd.get(SCHEMA)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers.get("Cache-Control") == "no-store"
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers.get("X-Request-Id", ""))
    assert r.content == DOC_PATH.read_bytes(), "GET /api/v1/schema differs from docs/openapi.json"
    d = r.json()
    assert d["openapi"] == "3.1.0"
    assert d["info"]["version"] == (DOC_PATH.parent.parent / "VERSION").read_text().strip()
    assert d["paths"] and d["components"]["schemas"]["Problem"]


def test_schema_head_and_trailing_slash(otpd):
    size = len(DOC_PATH.read_bytes())
    r = otpd.request("HEAD", SCHEMA)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Type"] == "application/json"
    assert int(r.headers["Content-Length"]) == size
    r = otpd.get(SCHEMA + "/")
    assert r.status_code == 200 and r.content == DOC_PATH.read_bytes()
    r = otpd.post(SCHEMA, json={})
    assert r.status_code == 405 and r.headers.get("Allow") == "GET, HEAD"


# -- the document and the route table, both ways ---------------------------------------------

def test_every_route_is_documented():
    served = openapi_check.Checker(doc()).served_operations()
    routes = route_table()
    assert routes - served == set(), "routes of src/http/server.c missing from the document " \
        "(or marked x-otpd-planned there)"
    assert served - routes == set(), "operations documented as served (no x-otpd-planned) " \
        "that are not in the route table of src/http/server.c"


def resolve(d, obj):
    """obj, or what its local $ref ("#/components/...") names."""
    while isinstance(obj, dict) and "$ref" in obj:
        node = d
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def path_example(d, template, method):
    """template with each {name} replaced by its path parameter's example (of the path item or
    the operation)."""
    item = d["paths"][template]
    params = list(item.get("parameters", [])) + list(item[method.lower()].get("parameters", []))
    params = [resolve(d, p) for p in params]
    out = template
    for name in re.findall(r"\{([^}]+)\}", template):
        p = next((p for p in params if p.get("in") == "path" and p.get("name") == name), None)
        assert p is not None and "example" in p, \
            "%s %s: path parameter %s has no example to call it with" % (method, template, name)
        out = out.replace("{%s}" % name, str(p["example"]))
    return out


def test_every_documented_operation_answers(otpd):
    """Each operation without x-otpd-planned answers on a running server (not 404/405), GET
    ones also to HEAD; a path with parameters is called with their examples.  Planned
    operations are left out of this check (filtered, not skipped)."""
    d = doc()
    checker = openapi_check.Checker(d)
    ops = sorted(checker.served_operations())
    assert ops
    for template, method in ops:
        path = path_example(d, template, method)
        methods = [method] + (["HEAD"] if method == "GET" else [])
        for m in methods:
            r = otpd.request(m, path)
            assert r.status_code not in (404, 405), "%s %s -> %d %s" % (m, path, r.status_code, r.text[:200])


def test_planned_operations_are_marked_and_not_served_yet(otpd):
    """The routes agreed for later are in the document (served, or marked x-otpd-planned on the
    operation); this otpd answers every planned one 404 (and the after-test checks fail a planned
    operation that answers: once it is built, remove its mark) - or 405 method_not_allowed when
    its path already serves another method."""
    checker = openapi_check.Checker(doc())
    planned = checker.planned_operations()
    served = checker.served_operations()
    want = {("/metrics", "GET"), ("/api/v1/docs", "GET"), ("/api/v1/usr/otp/settings", "GET"),
            ("/", "GET"), ("/admin", "GET"), ("/api/v1/admin/codes", "GET"),
            ("/api/v1/admin/users", "GET"), ("/api/v1/admin/users/{id}", "GET"),
            ("/api/v1/admin/users/{id}", "PATCH"), ("/api/v1/admin/audit", "GET"),
            ("/api/v1/admin/stats", "GET")}
    assert want <= planned | served, want - planned - served
    for template, method in sorted(planned):
        r = otpd.request(method, template.replace("{id}", "1"))
        if any(t == template for t, _m in served):
            assert r.status_code == 405, "%s %s -> %d" % (method, template, r.status_code)
            assert method not in r.headers["Allow"]
        else:
            assert r.status_code == 404, "%s %s -> %d" % (method, template, r.status_code)


def test_problem_codes_are_the_table_of_problem_c():
    """Problem.code and the Problem_<code> schemas are exactly the codes of src/http/problem.c,
    each with its HTTP status."""
    src = (REPO / "src" / "http" / "problem.c").read_text(encoding="utf-8")
    table = dict((c, int(s)) for s, c in re.findall(r'\{(\d{3}), "([a-z_]+)"', src) if c != "ok")
    d = doc()
    schemas = d["components"]["schemas"]
    assert set(schemas["Problem"]["properties"]["code"]["enum"]) == set(table)
    named = {k[len("Problem_"):]: v for k, v in schemas.items() if k.startswith("Problem_")}
    assert set(named) == set(table)
    for code, status in table.items():
        assert named[code]["properties"]["code"] == {"const": code}
        assert named[code]["properties"]["status"] == {"const": status}
        assert named[code]["properties"]["type"] == {"const": "urn:otpd:error:" + code}


def test_every_problem_response_names_its_codes():
    """Each problem response of each operation says which codes it can carry, and they have the
    response's status."""
    d = doc()
    checker = openapi_check.Checker(d)
    schemas = d["components"]["schemas"]
    n = 0
    for template, item in d["paths"].items():
        for m in openapi_check.METHODS:
            if m not in item:
                continue
            for status, ref in item[m]["responses"].items():
                ptr, resp = checker._resolve(openapi_check._pointer("paths", template, m, "responses", status))
                media = (resp.get("content") or {}).get("application/problem+json")
                if not media:
                    assert int(status) < 400, "%s %s %s: an error without a problem body" % (m, template, status)
                    continue
                sch = media["schema"]
                refs = [x["$ref"] for x in sch["oneOf"]] if "oneOf" in sch else [sch["$ref"]]
                for ref_ in refs:
                    name = ref_.rsplit("/", 1)[1]
                    assert schemas[name]["properties"]["status"]["const"] == int(status), (m, template, status, name)
                    n += 1
    assert n > 50


def test_examples_validate():
    """Every example in the document validates against its schema (as Spectral checks too)."""
    d = doc()
    checker = openapi_check.Checker(d)
    count = 0

    def walk(node, ptr):
        nonlocal count
        if isinstance(node, dict):
            if "schema" in node and ("example" in node or "examples" in node) and "in" not in node:
                values = [node["example"]] if "example" in node else []
                for ex in (node.get("examples") or {}).values():
                    values.append(ex["value"])
                for v in values:
                    errs = checker._errors(ptr + "/schema", v)
                    assert not errs, (ptr, errs)
                    count += 1
            for k, v in node.items():
                walk(v, ptr + "/" + openapi_check._pointer_escape(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, "%s/%d" % (ptr, i))
    walk(d, "#")
    assert count > 30


# -- the checker itself -------------------------------------------------------------------

def fake_response(method, path, status, body=b"", headers=()):
    r = requests.Response()
    r.status_code = status
    r._content = body
    h = HTTPHeaderDict()
    for k, v in headers:
        h.add(k, v)
    r.headers = requests.structures.CaseInsensitiveDict(h.items())
    r.raw = types.SimpleNamespace(headers=h)
    r.request = requests.Request(method, "http://127.0.0.1:1" + path).prepare()
    return r


STD = (("X-Request-Id", "0123456789abcdef"), ("Cache-Control", "no-store"))
JSONH = STD + (("Content-Type", "application/json"),)
PROBH = STD + (("Content-Type", "application/problem+json"),)


def problem(code, status, **extra):
    body = {"type": "urn:otpd:error:" + code, "title": "t", "status": status, "detail": "d", "code": code}
    body.update(extra)
    return json.dumps(body).encode()


def test_checker_accepts_what_the_document_says():
    c = openapi_check.Checker(doc())
    ok = [
        fake_response("GET", "/healthz", 200, b'{"status":"ok"}', JSONH),
        fake_response("HEAD", "/healthz/", 200, b"", JSONH),
        fake_response("POST", "/api/v1/usr/otp/verify", 400, problem("invalid_code", 400, remaining_attempts=2), PROBH),
        fake_response("GET", "/nope", 404, problem("not_found", 404), PROBH),
        fake_response("GET", "/api/v1/usr/otp/settings", 404, problem("not_found", 404), PROBH),
        fake_response("PUT", "/api/v1/usr/otp", 405, problem("method_not_allowed", 405), PROBH + (("Allow", "POST"),)),
        fake_response("POST", "/api/v1/usr/logout", 204, b"", STD + (
            ("Set-Cookie", "access_token=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"),
            ("Set-Cookie", "refresh_token=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"))),
        fake_response("POST", "/api/v1/usr/otp", 400, b"<html>Bad</html>", (("Content-Type", "text/html"),)),
    ]
    for r in ok:
        assert c.check(r) == [], r.request.path_url


def test_checker_catches_what_the_document_does_not_say():
    c = openapi_check.Checker(doc())
    bad = [
        # a member that is not documented (strict bodies)
        fake_response("GET", "/healthz", 200, b'{"status":"ok","extra":1}', JSONH),
        # a code this operation does not answer with this status
        fake_response("POST", "/api/v1/usr/otp", 400, problem("invalid_code", 400, remaining_attempts=2), PROBH),
        # a code's own member missing
        fake_response("POST", "/api/v1/usr/otp/verify", 400, problem("invalid_code", 400), PROBH),
        # a member of another code
        fake_response("POST", "/api/v1/usr/otp/verify", 400, problem("otp_expired", 400, retry_after=3), PROBH),
        # an undocumented status
        fake_response("GET", "/healthz", 201, b'{"status":"ok"}', JSONH),
        # the wrong content type
        fake_response("GET", "/healthz", 200, b'{"status":"ok"}', STD + (("Content-Type", "text/plain"),)),
        # no X-Request-Id
        fake_response("GET", "/healthz", 200, b'{"status":"ok"}', (("Content-Type", "application/json"), ("Cache-Control", "no-store"))),
        # 405 without Allow
        fake_response("PUT", "/api/v1/usr/otp", 405, problem("method_not_allowed", 405), PROBH),
        # a header where the document has none
        fake_response("GET", "/healthz", 200, b'{"status":"ok"}', JSONH + (("Retry-After", "3"),)),
        # a planned route that answers
        fake_response("GET", "/api/v1/usr/otp/settings", 200, b"{}", JSONH),
        # a path that is not a route answering something else than 404
        fake_response("GET", "/nope", 200, b"{}", JSONH),
        # a body on 204
        fake_response("POST", "/api/v1/usr/logout", 204, b"{}", JSONH + (
            ("Set-Cookie", "access_token=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"),)),
    ]
    for r in bad:
        assert c.check(r), "not caught: %s %s %d %s" % (r.request.method, r.request.path_url, r.status_code, r.content)


def test_validator_is_draft_2020_12():
    assert jsonschema.Draft202012Validator.META_SCHEMA["$schema"].endswith("/2020-12/schema")

"""Every response the black-box suite receives, checked against docs/openapi.json.

conftest's after-test checks call check_response() on every response a test got through its
helpers (Otpd.request and all that uses it).  A response must be documented for its route,
method and status, with its content type, a body that validates against the documented schema
(JSON Schema 2020-12, python3-jsonschema), and the documented headers (those marked required
present, every documented one valid, and none of Set-Cookie, Retry-After, Allow, WWW-Authenticate
where the document does not say so).

Which description a response is held to:
  - a route otpd serves (an operation without x-otpd-planned; HEAD is held to GET): that
    operation's response for the status;
  - a served path with a method it does not have: 405 (that path's MethodNotAllowed), or the
    answers every path can get (below);
  - a path otpd does not serve (not in the document, or only planned there): the answers every
    path can get: 404 NotFound, 400 HeadersTooLarge (request head over 8 KiB), 503 Unavailable
    (shutting down).  So 404s on paths that are not routes are checked too (against NotFound),
    and a planned operation that otpd starts to serve fails until its mark is removed.

EXCEPTIONS below is the one list of responses that are not checked, each with its reason.
"""

import json
import re
import urllib.parse
from pathlib import Path

import jsonschema

REPO = Path(__file__).resolve().parents[2]
DOC_PATH = REPO / "docs" / "openapi.json"

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Status codes libmicrohttpd answers by itself, before otpd's handler sees the request.
MHD_OWN_STATUSES = {400, 413, 414, 431, 505}


def _written_by_libmicrohttpd(r):
    return r.status_code in MHD_OWN_STATUSES and "X-Request-Id" not in r.headers


# The responses that are not checked against the document: (name, predicate, reason).
EXCEPTIONS = [
    ("libmicrohttpd's own answers", _written_by_libmicrohttpd,
     "libmicrohttpd answers a request it cannot parse or hold (a bad request line or header, "
     "headers beyond its connection memory: its own 400/413/414/431/505 HTML page) before otpd "
     "sees it; otpd did not write it (every answer otpd writes carries X-Request-Id)"),
    # Raw-socket tests (tests/blackbox/test_errors.py: a huge announced Content-Length, and the
    # like) talk HTTP by hand on a socket: their answers never reach the harness's request
    # helpers, so there is nothing to check here; each such test asserts its answer itself.
]

# Headers whose presence means something: where the document does not name them for a
# response, the response must not carry them.
MEANINGFUL_HEADERS = ("Set-Cookie", "Retry-After", "Allow", "WWW-Authenticate")


def load_doc():
    return json.loads(DOC_PATH.read_text(encoding="utf-8"))


def _pointer_escape(s):
    return s.replace("~", "~0").replace("/", "~1")


def _pointer(*parts):
    return "#/" + "/".join(_pointer_escape(str(p)) for p in parts)


def _get(doc, pointer):
    node = doc
    for part in pointer[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


class Checker:
    def __init__(self, doc=None):
        self.doc = doc if doc is not None else load_doc()
        self._validators = {}
        self._paths = []
        for template, item in self.doc["paths"].items():
            rx = re.escape(template)
            rx = re.sub(r"\\\{[^}/]+\\\}", "[^/]+", rx)
            # otpd matches a path with one trailing slash too
            self._paths.append((re.compile("^" + rx + ("" if template == "/" else "/?") + "$"),
                                template, item))

    # -- the document ---------------------------------------------------------------------
    def _resolve(self, pointer):
        """Follow $refs from pointer; returns (pointer, object)."""
        node = _get(self.doc, pointer)
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"]
            node = _get(self.doc, pointer)
            seen += 1
            assert seen < 10, pointer
        return pointer, node

    def _validator(self, schema_pointer):
        v = self._validators.get(schema_pointer)
        if v is None:
            # The whole document is the root resource, so that every "#/components/..." of
            # every schema resolves; validation starts at the schema's place in it.
            root = dict(self.doc)
            root["$ref"] = schema_pointer
            v = jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())
            self._validators[schema_pointer] = v
        return v

    def _errors(self, schema_pointer, instance):
        errs = sorted(self._validator(schema_pointer).iter_errors(instance),
                      key=lambda e: list(e.absolute_path))
        out = []
        for e in errs[:4]:
            where = "/".join(str(p) for p in e.absolute_path) or "(top)"
            msg = e.message
            if e.context:  # oneOf: the closest branch's reasons
                best = jsonschema.exceptions.best_match(e.context)
                msg += " [%s]" % best.message
            out.append("%s: %s" % (where, msg[:300]))
        return out

    def route_of(self, path):
        for rx, template, item in self._paths:
            if rx.match(path):
                return template, item
        return None, None

    def served_operations(self):
        """(template, METHOD) of every operation without x-otpd-planned."""
        out = set()
        for template, item in self.doc["paths"].items():
            for m in METHODS:
                if m in item and not item[m].get("x-otpd-planned"):
                    out.add((template, m.upper()))
        return out

    def planned_operations(self):
        out = set()
        for template, item in self.doc["paths"].items():
            for m in METHODS:
                if m in item and item[m].get("x-otpd-planned"):
                    out.add((template, m.upper()))
        return out

    # -- one response ---------------------------------------------------------------------
    def description_for(self, method, path, status):
        """(pointer of the response description, None) or (None, why it has none)."""
        any_path = {"404": "NotFound", "400": "HeadersTooLarge", "503": "Unavailable"}
        template, item = self.route_of(path)
        op_method = "get" if method == "HEAD" else method.lower()
        served = item is not None and any(
            m in item and not item[m].get("x-otpd-planned") for m in METHODS)
        if not served:
            if str(status) in any_path:
                return _pointer("components", "responses", any_path[str(status)]), None
            what = ("only planned in the document (x-otpd-planned)" if item is not None
                    else "not in the document")
            return None, "%s %s is %s, yet it answered %d" % (method, path, what, status)
        op = item.get(op_method)
        if op is None or op.get("x-otpd-planned"):
            if status == 405:
                m = next(m for m in METHODS if m in item and not item[m].get("x-otpd-planned"))
                if "405" in item[m]["responses"]:
                    return _pointer("paths", template, m, "responses", "405"), None
            if str(status) in ("400", "503"):
                return _pointer("components", "responses", any_path[str(status)]), None
            return None, "%s is not a method of %s in the document, yet it answered %d" % (
                method, template, status)
        if str(status) not in op["responses"]:
            return None, "status %d is not documented for %s %s (documented: %s)" % (
                status, op_method.upper(), template, ", ".join(sorted(op["responses"])))
        return _pointer("paths", template, op_method, "responses", str(status)), None

    def check(self, r):
        """The ways response r differs from the document (an empty list when it does not)."""
        for name, pred, _reason in EXCEPTIONS:
            if pred(r):
                return []
        method = r.request.method.upper()
        path = urllib.parse.unquote(urllib.parse.urlsplit(r.request.path_url).path)
        status = r.status_code
        where = "%s %s -> %d" % (method, r.request.path_url[:120], status)
        pointer, why = self.description_for(method, path, status)
        if pointer is None:
            return ["%s: %s" % (where, why)]
        pointer, resp = self._resolve(pointer)
        problems = []

        # content type and body
        body = r.content or b""
        ctype = r.headers.get("Content-Type")
        content = resp.get("content") or {}
        if not content:
            if body:
                problems.append("%d has no body in the document, got %d bytes" % (status, len(body)))
            if ctype:
                problems.append("%d has no body in the document, got Content-Type %r" % (status, ctype))
        else:
            base = (ctype or "").split(";")[0].strip().lower()
            media = next((k for k in content if k.split(";")[0].strip().lower() == base), None)
            if media is None:
                problems.append("Content-Type %r, documented: %s" % (ctype, ", ".join(content)))
            elif method == "HEAD":
                if body:
                    problems.append("HEAD answered with a body")
            else:
                schema_ptr = pointer + "/" + "/".join(
                    _pointer_escape(p) for p in ("content", media, "schema"))
                try:
                    if base == "application/json" or base.endswith("+json"):
                        instance = json.loads(body.decode("utf-8"))
                    else:
                        instance = body.decode("utf-8")
                except ValueError as e:
                    problems.append("body is not %s: %s" % (base, e))
                else:
                    problems += ["body %s" % e for e in self._errors(schema_ptr, instance)]

        # headers
        documented = {}
        for name in (resp.get("headers") or {}):
            hptr, h = self._resolve(pointer + "/headers/" + _pointer_escape(name))
            documented[name.lower()] = (name, hptr, h)
        for lname, (name, hptr, h) in documented.items():
            values = header_values(r, name)
            if h.get("required") and not values:
                problems.append("no %s header" % name)
            for v in values:
                inst = v
                if h.get("schema", {}).get("type") == "integer":
                    if not re.fullmatch(r"[0-9]+", v.strip()):
                        problems.append("%s: %r is not an integer" % (name, v))
                        continue
                    inst = int(v)
                problems += ["%s header %r: %s" % (name, v[:80], e)
                             for e in self._errors(hptr + "/schema", inst)]
        for name in MEANINGFUL_HEADERS:
            if name.lower() not in documented and header_values(r, name):
                problems.append("%s header not documented for this response: %r"
                                % (name, header_values(r, name)[0][:120]))

        return ["%s: %s (%s)" % (where, p, r.text[:200] if method != "HEAD" else "HEAD")
                for p in problems]


def header_values(r, name):
    """Every value of header name (Set-Cookie comes once per cookie)."""
    raw = getattr(r, "raw", None)
    headers = getattr(raw, "headers", None)
    if headers is not None and hasattr(headers, "getlist"):
        return list(headers.getlist(name))
    v = r.headers.get(name)
    return [] if v is None else [v]


_checker = None


def check_response(r):
    """The module's one Checker (the document is read once per test session)."""
    global _checker
    if _checker is None:
        _checker = Checker()
    return _checker.check(r)

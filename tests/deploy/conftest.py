"""The package tests (make test-deploy): build/deb/ made by make deb.  As in the black-box
suite, a skipped test counts as a failure: a missing tool or file must not pass unseen."""

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = "skipped, which this suite counts as a failure: %s" % reason

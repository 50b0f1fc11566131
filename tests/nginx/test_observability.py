"""Observability in a real nginx (Debian nginx + the lua module, LuaJIT,
the FFI path), issue 5:

- /metrics serves buttress.metrics.prometheus(): parsed here with
  prometheus_client's own parser (text_string_to_metric_families), with the
  metric names and types of Python's buttress.metrics.prometheus(), label
  values escaped, values of a known sequence of requests;
- every breaker state change is one ngx.log(ngx.WARN) line in the error log
  the harness configures, carrying the $request_id of the request that made
  it (found here from that request's X-Request-Id header); state changes in
  a timer and in init_worker (no ngx.var there) are logged without one;
- a retry's give-up is one notice line with its reason and request id;
- neither error messages nor argument values reach the log.

    python3 tests/nginx/test_observability.py   (from the repository root,
                                                 after `make lua`)

Needs prometheus_client (pip install prometheus_client).  Ends with
"N passed, N failed".
"""

import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, Nginx, run_main  # noqa: E402

# The server's own error_log at notice (same file as the harness's: paths
# are relative to the prefix, the harness's temp dir), so that the give-up
# lines of requests (notice) are written too.
# $request_id is referenced in the configuration (add_header), so nginx
# keeps one id per request: a variable that nothing in the configuration
# names is computed afresh, a new random id, at each ngx.var read.
SERVER = r"""
error_log error.log notice;
add_header X-Request-Id $request_id always;
location = /call { content_by_lua_block { require("app_obs").call() } }
location = /retry { content_by_lua_block { require("app_obs").retry() } }
location = /timer { content_by_lua_block { require("app_obs").timer() } }
location = /metrics { content_by_lua_block { require("app_obs").metrics() } }
"""
HTTP = r"""init_worker_by_lua_block { require("app_obs").init_worker() }"""

ODD = 'obs "odd"\\name\nline2'

checks = []


def check(name):
    def deco(fn):
        checks.append((name, fn))
        return fn
    return deco


def parse(ng):
    """The /metrics body through prometheus_client's parser:
    {family name: family}, plus the raw text and headers."""
    from prometheus_client.parser import text_string_to_metric_families
    st, body, headers, _ = ng.get("/metrics")
    assert st == 200, (st, body[:300])
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    return fams, body, headers


def sample(fams, family, name=None, **labels):
    """The value of the one sample of `family` named `name` (default: the
    family's own samples; counters end in _total) with these labels."""
    f = fams[family]
    if name is None:
        name = family + "_total" if f.type == "counter" else family
    hits = [s.value for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (family, name, labels, f.samples[:10])
    return hits[0]


def expect(fams, want, family, name=None, **labels):
    got = sample(fams, family, name, **labels)
    assert got == want, (family, name, labels, "expected", want, "got", got)


def log_lines(ng, needle):
    return [ln for ln in ng.log().splitlines() if needle in ln]


def wait_for(fn, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.02)


@check("/metrics: valid exposition text, served as text/plain version 0.0.4")
def t_format(ng):
    fams, body, headers = parse(ng)
    ctype = headers.get("Content-Type", "")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    assert body.endswith("\n")
    expect(fams, 1, "buttress_breaker_state", breaker="obs-upstream", state="closed")
    # the label value survives escaping (quote, backslash, newline)
    expect(fams, 1, "buttress_breaker_state", breaker=ODD, state="closed")


@check("the request that trips the breaker is named in the state-change line")
def t_trip(ng):
    st1, _, h1, _ = ng.get("/call?fail=1")
    st2, _, h2, _ = ng.get("/call?fail=1")   # the second failure opens
    st3, body3, h3, _ = ng.get("/call")     # rejected
    assert (st1, st2, st3) == (502, 502, 503), (st1, st2, st3, body3)
    rid1, rid2, rid3 = h1["X-Request-Id"], h2["X-Request-Id"], h3["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid2), rid2
    lines = log_lines(ng, 'event=state_change breaker="obs-upstream" old=closed new=open')
    assert len(lines) == 1, lines
    line = lines[0]
    assert "[warn]" in line, line
    assert 'correlation_id="%s"' % rid2 in line, (rid2, line)
    for other in (rid1, rid3):
        assert not any(other in ln for ln in log_lines(ng, "event=state_change")), other


@check("recovery: open -> half_open -> closed, logged with the trial's request id")
def t_recover(ng):
    time.sleep(1.1)  # reset_timeout = 1
    st, _, h, _ = ng.get("/call")
    assert st == 200, st
    rid = h["X-Request-Id"]
    for old, new in (("open", "half_open"), ("half_open", "closed")):
        lines = log_lines(ng, 'breaker="obs-upstream" old=%s new=%s' % (old, new))
        assert len(lines) == 1 and 'correlation_id="%s"' % rid in lines[0], (old, new, lines)


@check("a retry's give-up: one notice line with the reason and the request id")
def t_giveup(ng):
    st, body, h, secs = ng.get("/retry?fail=1")
    assert st == 503 and "exhausted" in body, (st, body)
    assert secs >= 0.14, secs  # two ngx.sleep waits: 0.05 + 0.1 s
    rid = h["X-Request-Id"]
    lines = log_lines(ng, 'event=giveup retry="obs-retry"')
    assert len(lines) == 1, lines
    assert "[notice]" in lines[0], lines[0]
    assert "reason=attempts attempts=3" in lines[0], lines[0]
    assert 'correlation_id="%s"' % rid in lines[0], (rid, lines[0])
    assert ng.get("/retry")[0] == 200


@check("a state change in a timer and in init_worker: logged, no request id, no error")
def t_no_request(ng):
    assert ng.get("/timer")[0] == 200
    lines = wait_for(lambda: log_lines(ng, 'breaker="obs-timer" old=closed new=forced_open'))
    assert len(lines) == 1 and "correlation_id" not in lines[0], lines
    for old, new in (("closed", "forced_open"), ("forced_open", "closed")):
        lines = log_lines(ng, 'breaker="obs-init" old=%s new=%s' % (old, new))
        assert len(lines) == 1 and "correlation_id" not in lines[0], (old, new, lines)


@check("no error message and no argument value in the log")
def t_no_secrets(ng):
    log = ng.log()
    assert "buttress" in log
    assert "secret" not in log, [ln for ln in log.splitlines() if "secret" in ln]


@check("/metrics: the values of the requests above")
def t_values(ng):
    fams, _, _ = parse(ng)
    up = {"breaker": "obs-upstream"}
    expect(fams, 3, "buttress_breaker_calls", **up)
    expect(fams, 2, "buttress_breaker_failures", **up)
    expect(fams, 1, "buttress_breaker_successes", **up)
    expect(fams, 1, "buttress_breaker_rejected", **up)
    expect(fams, 1, "buttress_breaker_state", state="closed", **up)
    assert sum(sample(fams, "buttress_breaker_state", state=s, **up)
               for s in ("closed", "open", "half_open", "forced_open", "disabled")) == 1
    for frm, to in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
        hits = [s.value for s in fams["buttress_breaker_transitions"].samples
                if s.labels == {"breaker": "obs-upstream", "from": frm, "to": to}]
        assert hits == [1], (frm, to, hits)
    # timestamps of the transitions, in Unix time (the location passes ngx.now())
    ts = [s.value for s in fams["buttress_breaker_last_transition_timestamp_seconds"].samples
          if s.labels.get("breaker") == "obs-upstream"]
    assert ts and all(abs(t - time.time()) < 120 for t in ts), ts
    # the first br:call is timed: a latency summary with a count
    assert sample(fams, "buttress_breaker_latency_seconds",
                  "buttress_breaker_latency_seconds_count", **up) >= 1
    assert fams["buttress_breaker_latency_seconds"].type == "summary"
    r = {"retry": "obs-retry"}
    expect(fams, 2, "buttress_retry_calls", **r)
    expect(fams, 4, "buttress_retry_attempts", **r)
    expect(fams, 2, "buttress_retry_retries", **r)
    expect(fams, 1, "buttress_retry_giveups", reason="attempts", **r)
    expect(fams, 0, "buttress_retry_giveups", reason="deadline", **r)
    # the first r:call (the failing one, with its two sleeps) was timed
    assert sample(fams, "buttress_retry_latency_max_seconds", **r) >= 0.14
    p99 = sample(fams, "buttress_retry_latency_seconds", quantile="0.99", **r)
    assert not math.isnan(p99) and p99 >= 0.14 * 0.98, p99
    assert sample(fams, "buttress_budget_available", budget="obs-budget") >= 0


@check("/metrics: the metric names and types of Python's buttress.metrics.prometheus()")
def t_same_as_python(ng):
    fams, _, _ = parse(ng)
    lua = {(f.name, f.type) for f in fams.values()}
    sys.path.insert(0, os.path.join(REPO, "python"))
    try:
        import buttress
        import buttress.metrics
    except ImportError as e:
        # the Python extension is not built: compare with the list below
        print("     (python buttress not importable: %s; compared with the list)" % e)
        buttress = None
    expected = {
        ("buttress_breaker_" + n, "counter") for n in
        ("calls", "successes", "failures", "excluded", "cancelled", "stale", "rejected",
         "slow", "transitions")} | {
        ("buttress_breaker_" + n, "gauge") for n in
        ("state", "last_transition_timestamp_seconds", "trips", "consecutive_failures",
         "half_open_successes", "window_calls", "window_failures", "window_slow",
         "failure_rate", "slow_rate", "calls_per_second", "latency_max_seconds")} | {
        ("buttress_breaker_latency_seconds", "summary"),
        ("buttress_retry_latency_seconds", "summary")} | {
        ("buttress_retry_" + n, "counter") for n in
        ("calls", "attempts", "retries", "successes", "failures", "giveups")} | {
        ("buttress_retry_" + n, "gauge") for n in ("calls_per_second", "latency_max_seconds")} | {
        ("buttress_budget_" + n, "counter") for n in ("deposits", "withdrawals", "rejections")} | {
        ("buttress_budget_" + n, "gauge") for n in ("available", "window_calls",
                                                    "window_retries")}
    if buttress is not None:
        from prometheus_client.parser import text_string_to_metric_families
        keep = []
        b = buttress.CircuitBreaker("py-obs", failure_threshold=1)
        try:
            b.call(lambda: 1 / 0)
        except ZeroDivisionError:
            pass
        policy = buttress.retry(name="py-obs", attempts=2,
                                backoff=buttress.Backoff(base=0))(lambda: 1)
        policy()
        budget = buttress.RetryBudget()
        buttress.metrics.register(budget, "py-obs")
        keep += [b, policy, budget]
        py = {(f.name, f.type) for f in
              text_string_to_metric_families(buttress.metrics.prometheus())}
        assert py == expected, ("python's exporter changed", py ^ expected)
    assert lua == expected, ("lua differs", sorted(lua ^ expected))


def main():
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        print("== nginx: metrics and logs")
        print("FAIL prometheus_client is not installed (pip install prometheus_client)")
        print("0 passed, %d failed" % (len(checks) + 1))
        return 1
    return run_main("metrics and logs", lambda: Nginx(SERVER, http_extra=HTTP).start(), checks)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the hand-made inputs of fuzz_api.c: seeds into tests/fuzz/corpus/,
and the scenarios of core bugs the harness found into tests/fuzz/regressions/.

Each seed is a short scenario spelled in the harness's input encoding (see
the decoders in fuzz_api.c: configurations first, then one opcode byte per
step and its operands).  The files are committed; rerun this script only
when the encoding changes:  python3 tests/fuzz/make_seeds.py
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# opcodes (low 4 bits of the step byte); | NOCLOCK makes the step clockless
ALLOW, RECORD, TIME, ALLOW_RECORD, MANUAL, METRICS = 0, 1, 4, 5, 6, 7
BACKOFF, RBEGIN, RNEXT, REND, BUDGET, HIST = 8, 9, 10, 12, 13, 14
NOCLOCK = 0xE0
S, F, X, C = 0, 1, 2, 3  # outcomes


def u16(v):
    return list(struct.pack("<H", v))


def u64(v):
    return list(struct.pack("<Q", v))


# ---- durations: dur() selectors
def ns(v):       # 0..255 ns
    return [2, v]


def us(v):       # v * 1 us, v < 256
    return [3, v]


def ms(v):       # v * 1 ms, v < 256
    return [4, v]


def ms16(v):     # v * 1 ms, v < 65536
    return [5] + u16(v)


def sec(v):      # v * 1 s, v < 256
    return [6, v]


def zero():
    return [0]


NONE = [0]       # opt_dur / trial selector byte with (b & 3) == 0


def opt(d):      # an optional duration that is present
    return [1] + d


# ---- configurations
def backoff(base, cap, mult=2, jitter=1):
    mults = {1: 0, 1.5: 1, 2: 2, 3: 3, 10: 4}
    return base + cap + [mults[mult], jitter]


def breaker(fthr=5, k=1, sthr=1, win=16, min_calls=10, time_window=False,
            window=sec(10), reset=ms(10), trial=NONE, slow=NONE,
            frate=0, srate=0, reset_backoff=None):
    rates = {0: 0, 0.1: 1, 0.5: 2, 1.0: 3, 0.25: 4, 0.75: 7}
    out = [0, fthr, k - 1, sthr - 1, win - 1, min_calls - 1, int(time_window)]
    out += window + reset + trial + slow + [rates[frate], rates[srate]]
    out += [1] + reset_backoff if reset_backoff else [0] + backoff(ms(1), ms(10))
    return out


def retry(attempts=3, deadline=NONE, bo=None, seed=42):
    return [0, attempts - 1] + deadline + (bo or backoff(ms(1), ms(50))) + u64(seed)


def budget(ratio=0.2, per_second=1.0, window=sec(10)):
    vals = {0: 0, 0.1: 1, 0.2: 2, 1.0: 3, 2.5: 5}
    return [0, vals[ratio], vals[per_second]] + window


def start(seconds):
    return [7] + u16(seconds)


def start_pow2(k):
    """now = 2**k ns (2**53 ns is about 104 days of uptime)."""
    return [4, k]


# ---- steps
def allow(slot=0, noclock=False):
    return [ALLOW | (NOCLOCK if noclock else 0), slot]


def duration(d):
    """A record's duration: selector 3 is u8 microseconds, 7 reads a dur()."""
    return [3, 3] if d is None else [7] + d


def call(outcome, d=None, slot=0, noclock=False):
    """allow + record at once; d is a dur() encoding (default 3 us)."""
    return [ALLOW_RECORD | (NOCLOCK if noclock else 0), slot, outcome] + duration(d)


def record(slot, outcome, d=None, noclock=False):
    return [RECORD | (NOCLOCK if noclock else 0), slot, outcome] + duration(d)


def wait(d):     # d: one of the time-step encodings below
    return [TIME] + d


def w_ms(v):
    return [3, v]


W_OPEN_END = [6]     # to the end of the open period
W_TRIAL = [9]        # one trial timeout
W_WINDOW = [15]      # one window


def force_open():
    return [MANUAL, 0]


def disable():
    return [MANUAL, 1]


def reset():
    return [MANUAL, 2]


def metrics():
    return [METRICS, 0]


def rbegin(slot, with_budget=True, outer=None):
    """outer: an enclosing deadline, now + a dur() encoding."""
    if outer is None:
        return [RBEGIN, slot, 1 if with_budget else 0]
    return [RBEGIN, slot, (1 if with_budget else 0) | 6] + outer


def rnext(slot, with_budget=True, override=None):
    if override is None:
        return [RNEXT, slot, 1 if with_budget else 0]
    return [RNEXT, slot, (1 if with_budget else 0) | 10] + override


def rend(slot, failed=False):
    return [REND, slot, 1 if failed else 0]


def deposit():
    return [BUDGET, 3]


def withdraw():
    return [BUDGET, 2]


def hrec(h, d):
    return [HIST, h] + d


def hquant(h, q1=2, q2=3):
    return [HIST, h | 4, q1, q2]


def hsummary(h):
    return [HIST, h | 6]


def hmerge(h):
    return [HIST, h | 8]


def bdraw(retry_byte, prev=0):
    return [BACKOFF, retry_byte, prev]


def header(br, rt, bg, t0=start(1000)):
    return br + rt + bg + t0


def seq(*steps):
    out = []
    for s in steps:
        out += s
    return out


SEEDS = {
    # closed -> open on 3 failures, trials while half-open, closed again
    "breaker_cycle": header(breaker(fthr=3, k=2, sthr=2), retry(), budget()) + seq(
        call(F), call(S), call(F), call(F), call(F), metrics(),
        allow(1), wait(W_OPEN_END), allow(1), allow(2), allow(3),
        record(1, S), record(2, S), metrics(), call(S), metrics()),
    # a failure rate over a count window, excluded and cancelled are neutral
    "rate_count_window": header(breaker(fthr=0, win=8, min_calls=4, frate=0.5),
                                retry(), budget()) + seq(
        call(S), call(X), call(F), call(C), call(S), call(F), call(F), metrics(),
        wait(W_OPEN_END), call(F), wait(W_OPEN_END), call(S), metrics()),
    # slow calls over a time window; trials that are slow count as failures
    "slow_time_window": header(breaker(fthr=0, k=2, time_window=True, window=sec(1),
                                       slow=opt(ms(100)), frate=0.5, srate=0.5,
                                       min_calls=2),
                               retry(), budget()) + seq(
        call(S, ms(150)), call(S, ms(10)), wait(w_ms(120)), call(S, ms(200)),
        call(S, ms(200)), metrics(), wait(W_OPEN_END), call(S, ms16(300)), metrics(),
        wait(W_WINDOW), wait(W_OPEN_END), call(S, ms(1)), metrics()),
    # half-open permits that expire when their caller vanishes
    "trial_expiry": header(breaker(fthr=1, k=1, reset=ms(10), trial=[1] + ms(5)),
                           retry(), budget()) + seq(
        call(F), wait(W_OPEN_END), allow(0), allow(1), allow(0), wait(W_TRIAL),
        allow(2), record(0, S), record(2, S), record(2, S), metrics()),
    # manual transitions: every outstanding ticket goes stale
    "manual": header(breaker(), retry(), budget()) + seq(
        allow(0), allow(1), force_open(), allow(2), record(0, S), disable(),
        allow(3), record(3, F, noclock=True), record(1, F), reset(), allow(4),
        record(4, S, noclock=True), metrics()),
    # reset periods from a backoff: successive openings grow
    "reset_backoff": header(breaker(fthr=1, reset_backoff=backoff(ms(5), ms(200), 2, 0)),
                            retry(), budget()) + seq(
        call(F), wait(W_OPEN_END), call(F), wait(W_OPEN_END), call(F),
        wait(W_OPEN_END), call(S), metrics()),
    # retries against a deadline and a budget
    "retry_deadline_budget": header(breaker(),
                                    retry(attempts=5, deadline=opt(sec(1)),
                                          bo=backoff(ms(100), ms16(800), 2, 1)),
                                    budget(ratio=0.2, per_second=0.1, window=sec(10))) + seq(
        rbegin(0), rnext(0), wait(w_ms(100)), rnext(0), wait(w_ms(200)), rnext(0),
        rnext(0), rnext(0), rend(0), rbegin(1, with_budget=False, outer=ms(200)),
        rnext(1, False, override=ms(250)), rend(1, failed=True),
        deposit(), deposit(), withdraw(), withdraw(), withdraw(), [BUDGET, 6]),
    # backoff draws at extreme retry numbers
    "backoff_extremes": header(breaker(), retry(bo=backoff(ms(1), sec(10), 2, 1)),
                               budget()) + seq(
        bdraw(0), bdraw(8), bdraw(1), bdraw(1 | 8), bdraw(2), bdraw(2 | 0xF8),
        bdraw(3 | 0xF8), bdraw(4, 1)),
    # histogram: records across magnitudes, quantiles, summary, merge
    "histogram": header(breaker(), retry(), budget()) + seq(
        hrec(0, ns(5)), hrec(0, us(70)), hrec(0, ms(3)), hrec(0, sec(200)),
        hrec(0, [8, 45]), hquant(0), hquant(0, 0, 1), hsummary(0),
        hrec(1, ms(250)), hmerge(1), hquant(1, 5, 6), hsummary(1)),
    # everything at once, interleaved: a few hundred steps' worth of bytes
    "mixed_long": header(breaker(fthr=4, k=3, sthr=2, win=12, min_calls=6, frate=0.5,
                                 slow=opt(ms(50)), trial=[1] + ms(20)),
                         retry(attempts=4, deadline=opt(ms(200)),
                               bo=backoff(ms(2), ms(40), 2, 3)),
                         budget(ratio=0.1, per_second=1.0, window=sec(1))) + seq(
        *[seq(call(S, ms(i % 7 * 10)), call(F if i % 3 == 0 else X), allow(i % 8),
              rbegin(i % 3), rnext(i % 3), wait(w_ms(i * 3 % 17)), rnext(i % 3),
              record((i + 5) % 8, C if i % 4 == 0 else S, noclock=i % 5 == 0),
              rend(i % 3, failed=i % 2 == 1), hrec(i % 2, ms(i)), deposit(),
              withdraw(), bdraw(i * 8 + 4, 2), metrics())
          for i in range(16)],
        force_open(), allow(0), reset(), disable(), call(F), reset(), metrics()),
}


# Core bugs found while writing the harness: each input fails until the core
# is fixed, then guards against the bug coming back.
REGRESSIONS = {
    # The time window's 24-bit epoch tags: on a host up ~104 days (1 s
    # buckets: epoch >= 2**23) a fresh budget counts no retries at all, so
    # every withdrawal is granted past reserve + ratio * calls.
    "budget-window-tag-uptime": header(breaker(), retry(),
                                       budget(ratio=0.2, per_second=1.0, window=sec(10)),
                                       start_pow2(53)) + seq(
        *[withdraw() for _ in range(12)]),
    # The same after an idle gap of 2**23+ buckets (97 days with 1 s
    # buckets): the words of the old epochs are neither recycled nor summed.
    "budget-window-tag-idle-gap": header(breaker(), retry(),
                                         budget(ratio=0.2, per_second=1.0, window=sec(10)),
                                         start(1000)) + seq(
        *[withdraw() for _ in range(10)],
        wait([14] + u64(2 * 8388610 * 10**9) + [0]),
        *[withdraw() for _ in range(12)]),
    # The same for a breaker's time window: failures are never counted, the
    # failure-rate rule never opens.
    "breaker-time-window-tag-uptime": header(
        breaker(fthr=0, time_window=True, window=sec(10), min_calls=4, frate=0.5),
        retry(), budget(), start_pow2(53)) + seq(
        call(F), call(F), call(F), call(F), call(F), metrics()),
    # A success recorded without a clock (the ticket is not TIMED) completes
    # min_calls and trips the failure-rate rule: the breaker opens at
    # now = -1, its open period ends at once (reset_timeout after time 0).
    "breaker-rate-trip-without-clock": header(
        breaker(fthr=0, win=8, min_calls=4, frate=0.5), retry(), budget()) + seq(
        call(F), call(F), call(F), call(S, noclock=True), metrics()),
    # metrics_get(NO_CLOCK) sums stale time buckets: a bucket's calls word
    # was recycled by a later success, its failures word still holds
    # failures of a window ago: 2 failures of 1 call, failure_rate 2.0.
    "breaker-metrics-noclock-stale-bucket": header(
        breaker(fthr=0, time_window=True, window=sec(10)), retry(), budget()) + seq(
        call(F), call(F), wait(W_WINDOW), call(S), [METRICS | NOCLOCK, 0]),
}


def write(directory, inputs):
    out = os.path.join(HERE, directory)
    os.makedirs(out, exist_ok=True)
    for name, data in inputs.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes(data))
    print("wrote %d inputs to %s" % (len(inputs), out), file=sys.stderr)


def main():
    write("corpus", SEEDS)
    write("regressions", REGRESSIONS)


if __name__ == "__main__":
    main()

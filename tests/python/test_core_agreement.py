"""Backoff(...).delays(n) with a seed is the C core's own sequence: checked
against the core's functions called directly through ctypes."""
import ctypes

import pytest

import buttress
from buttress import _core


class BackoffConfig(ctypes.Structure):
    _fields_ = [("base_ns", ctypes.c_int64), ("cap_ns", ctypes.c_int64),
                ("multiplier", ctypes.c_double), ("jitter", ctypes.c_int32),
                ("reserved_", ctypes.c_int32)]


@pytest.fixture(scope="module")
def lib():
    lib = ctypes.CDLL(_core.__file__)  # the core is linked into the extension
    lib.buttress_backoff_sizeof.restype = ctypes.c_size_t
    lib.buttress_backoff_init.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                                          ctypes.POINTER(BackoffConfig), ctypes.c_uint64]
    lib.buttress_backoff_next.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int64,
                                          ctypes.POINTER(ctypes.c_int64)]
    return lib


def core_delays(lib, base, multiplier, cap, jitter, seed, n):
    cfg = BackoffConfig(round(base * 1e9), round(cap * 1e9), multiplier,
                        ["none", "full", "equal", "decorrelated"].index(jitter), 0)
    size = lib.buttress_backoff_sizeof()
    mem = ctypes.create_string_buffer(size + 64)
    addr = (ctypes.addressof(mem) + 63) & ~63
    assert lib.buttress_backoff_init(addr, size, ctypes.byref(cfg), seed) == 0
    out, prev = [], -1
    d = ctypes.c_int64()
    for i in range(n):
        assert lib.buttress_backoff_next(addr, i, prev, ctypes.byref(d)) == 0
        out.append(d.value)
        prev = d.value
    return out


@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
@pytest.mark.parametrize("seed", [0, 1, 42, 2**64 - 1])
def test_same_seed_same_delays_as_the_core(lib, jitter, seed):
    args = dict(base=0.05, multiplier=3.0, cap=7.5, jitter=jitter)
    b = buttress.Backoff(seed=seed, **args)
    expected = core_delays(lib, args["base"], args["multiplier"], args["cap"], jitter, seed, 40)
    assert b.delays_ns(40) == expected
    assert b.delays(40) == [d / 1e9 for d in expected]


def test_a_seeded_retry_sleeps_the_backoffs_delays():
    b = buttress.Backoff(seed=5)

    def f():
        raise OSError()

    with buttress.testing() as t:
        with pytest.raises(OSError):
            buttress.retry(attempts=6, backoff=b)(f)()
    assert t.delays == b.delays(5)

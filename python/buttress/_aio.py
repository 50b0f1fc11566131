"""Coroutine wrappers: the same core decisions as the sync C wrapper, driven
from Python so that attempts await the coroutine and sleeps await
asyncio.sleep.  The classification (failure, excluded, cancelled, retry or
give up) happens in C, in RetryCall.failed() / succeeded()."""
from __future__ import annotations

import asyncio
import collections.abc
import functools
import inspect
from typing import Any, Callable, Optional

from . import _core

# What an async wrapper built in C returns behaves as a coroutine (send,
# throw, close, __await__): asyncio.run / create_task accept it.
collections.abc.Coroutine.register(_core.Attempts)

_sleep_hook: Optional[Callable[[float], Any]] = None


def set_sleep_hook(fn: Optional[Callable[[float], Any]]) -> Optional[Callable[[float], Any]]:
    """testing() records async sleeps through this hook."""
    global _sleep_hook
    prev, _sleep_hook = _sleep_hook, fn
    return prev


async def _sleep(run: Any, delay: float) -> None:
    user = run.sleep
    if user is not None:
        r = user(delay)
        if inspect.isawaitable(r):
            await r
    elif _sleep_hook is not None:
        _sleep_hook(delay)
        await asyncio.sleep(0)  # still a scheduling point, as a real sleep is
    else:
        await asyncio.sleep(delay)


def _sleeper(user: Optional[Callable[[float], Any]], delay: float) -> Any:
    """The awaitable the C driver waits on between attempts."""
    if user is not None:
        r = user(delay)
        return r if inspect.isawaitable(r) else asyncio.sleep(0)
    if _sleep_hook is not None:
        _sleep_hook(delay)
        return asyncio.sleep(0)
    return asyncio.sleep(delay)


_core._set_async_sleeper(_sleeper)


async def _sleep_or_close(run: Any, delay: float) -> None:
    try:
        await _sleep(run, delay)
    except BaseException:
        run.close()  # cancelled while waiting: nothing to retry
        raise


async def _fallback(run: Any, exc: BaseException, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    value = run.fallback(exc, *args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


def _need_task() -> None:
    """asyncio.timeout() needs the running task.  Without one it would raise
    inside the attempt, where the error would count as a failed attempt
    (and a breaker failure) and be retried: say so at once instead."""
    if asyncio.current_task() is None:  # RuntimeError too when no loop runs
        raise RuntimeError("timeout= needs an asyncio task: await the call from a "
                           "coroutine that asyncio runs (asyncio.run, create_task)")


async def run_once(run: Any, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any], timeout: Optional[float]) -> Any:
    """Drive one call: attempts, sleeps, fallback.  `run` is a RetryCall;
    its failed() / succeeded() close it when they end the call."""
    while True:
        try:
            run.admit()
            if timeout is None:
                result = await fn(*args, **kwargs)
            else:
                # Each attempt is bounded, and never past the deadline.
                t = timeout
                left = run.remaining()
                if left is not None and left < t:
                    t = left
                async with asyncio.timeout(t):
                    result = await fn(*args, **kwargs)
        except BaseException as exc:
            delay = run.failed(exc)
            if delay is None:
                if run.fallback is None:
                    raise
                return await _fallback(run, exc, args, kwargs)
        else:
            delay = run.succeeded(result)
            if delay is None:
                return result
        if delay > 0:
            await _sleep_or_close(run, delay)


def wrap(fn: Any, policy: Any, breaker: Any, timeout: Optional[float]) -> Any:
    """A coroutine function (inspect.iscoroutinefunction holds) around fn."""
    if policy is not None:
        begin = policy.begin
        metrics = policy.metrics
    else:
        begin = breaker._runner
        metrics = breaker.metrics
    fused = breaker if breaker is not None else (policy.breaker if policy else None)

    if (timeout is None and inspect.isfunction(fn)
            and (fused is None or getattr(fused, "_fallback", None) is None)):
        # The attempts run in C; the wrapper only looks like a coroutine
        # function (inspect.iscoroutinefunction reads __code__ & co).
        cw: Any = _core.Wrapper(fn, policy, breaker, True)
        functools.update_wrapper(cw, fn)
        cw.__code__ = fn.__code__
        cw.__defaults__ = fn.__defaults__
        cw.__kwdefaults__ = fn.__kwdefaults__
        return cw

    if timeout is not None:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            _need_task()  # before begin(): nothing counted, no attempt made
            return await run_once(begin(), fn, args, kwargs, timeout)
    elif fused is not None:
        # run_once without the timeout, inlined: one coroutine level less.
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            run = begin()
            while True:
                try:
                    run.admit()
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    delay = run.failed(exc)
                    if delay is None:
                        if run.fallback is None:
                            raise
                        return await _fallback(run, exc, args, kwargs)
                else:
                    delay = run.succeeded(result)
                    if delay is None:
                        return result
                if delay > 0:
                    await _sleep_or_close(run, delay)
    else:
        # run_once for a retry alone, inlined: no admit(), one level less.
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            run = begin()
            while True:
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    delay = run.failed(exc)
                    if delay is None:
                        raise
                else:
                    delay = run.succeeded(result)
                    if delay is None:
                        return result
                if delay > 0:
                    await _sleep_or_close(run, delay)

    functools.update_wrapper(wrapper, fn)
    w: Any = wrapper
    w.metrics = metrics
    w.retry = policy
    w.breaker = fused
    return wrapper

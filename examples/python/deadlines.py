"""A whole-call deadline, passed on as the timeout of the call inside."""
import time
from typing import Optional

import buttress


def slow_backend(timeout: Optional[float]) -> str:
    # A real client would pass `timeout` to its socket or HTTP library.
    budget = 0.02 if timeout is None else min(timeout, 0.02)
    time.sleep(budget)
    if budget < 0.02:
        raise TimeoutError(f"gave up after {budget:.3f} s")
    raise ConnectionError("backend refused")


@buttress.retry(attempts=10, deadline=0.1, backoff=buttress.Backoff(base=0.01, cap=0.04))
def fetch() -> str:
    return slow_backend(timeout=buttress.remaining())


def main() -> None:
    started = time.monotonic()
    try:
        fetch()
    except (ConnectionError, TimeoutError) as e:
        elapsed = time.monotonic() - started
        print(f"gave up after {elapsed:.3f} s (deadline 0.1 s): {e!r}")
    m = fetch.metrics()
    print("attempts:", m["attempts"], "deadline give-ups:", m["giveups_deadline"])


if __name__ == "__main__":
    main()

"""The two-step breaker form (as in Lua/OpenResty), the block form of retry
and buttress.testing() for test suites."""
import buttress

br = buttress.CircuitBreaker("search", failure_threshold=2, reset_timeout=5.0)


def handle(ok: bool) -> str:
    try:
        ticket = br.allow()
    except buttress.CircuitOpenError:
        return "503 (circuit open)"
    br.record(ticket, ok, duration=0.012)
    return "200" if ok else "502"


def main() -> None:
    print([handle(ok) for ok in (True, False, False, True)])

    attempts = 0
    with buttress.testing() as t:  # no real sleeping; delays recorded
        for attempt in buttress.retrying(attempts=4):
            with attempt:
                attempts += 1
                if attempts < 3:
                    raise ConnectionError("try again")
    print(f"succeeded on attempt {attempts}; would have slept {len(t.delays)} times")


if __name__ == "__main__":
    main()

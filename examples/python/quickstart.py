"""Retry a flaky function, guard a dependency with a circuit breaker."""
import buttress

reads = 0


@buttress.retry(attempts=5, backoff=buttress.Backoff(base=0.01, cap=0.1))
def flaky_read(key: str) -> str:
    """Fails twice, like a busy replica, then answers."""
    global reads
    reads += 1
    if reads <= 2:
        raise ConnectionError("replica busy")
    return f"value of {key}"


payments = buttress.CircuitBreaker("payments", failure_threshold=3, reset_timeout=0.05)


@payments
def charge(card: str, cents: int) -> str:
    if card.startswith("0"):
        raise TimeoutError("payment gateway timed out")
    return f"charged {cents} to {card}"


def main() -> None:
    print(flaky_read("user:42"))
    print("flaky_read:", flaky_read.metrics())

    for _ in range(3):
        try:
            charge("0000", 100)
        except TimeoutError as e:
            print("failed:", e)
    try:
        charge("4242", 100)
    except buttress.CircuitOpenError as e:
        print(f"rejected by {e.breaker!r}; retry in {e.retry_after:.3f} s")
    print("state:", payments.state)


if __name__ == "__main__":
    main()

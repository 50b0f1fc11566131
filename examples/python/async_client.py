"""async def functions: retries await asyncio.sleep; timeout= bounds attempts."""
import asyncio

import buttress

calls = 0


@buttress.retry(attempts=4, timeout=0.05, backoff=buttress.Backoff(base=0.005))
async def lookup(name: str) -> str:
    global calls
    calls += 1
    if calls < 3:
        await asyncio.sleep(1)  # hangs: cancelled by the per-attempt timeout
    return f"{name} -> 10.0.0.{calls}"


inventory = buttress.CircuitBreaker("inventory", failure_threshold=2)


async def stock(item: str) -> int:
    async with inventory:  # each task keeps its own ticket
        await asyncio.sleep(0)
        return len(item)


async def main() -> None:
    print(await lookup("db"), f"after {calls} attempts")
    print(await asyncio.gather(*(stock(i) for i in ("apple", "fig", "kiwi"))))
    print("inventory:", inventory.metrics()["successes"], "successes")


if __name__ == "__main__":
    asyncio.run(main())

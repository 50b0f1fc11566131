/* A circuit breaker guarding a flaky call, inside a retry loop with backoff.
 * make && cc -std=c11 -Icore examples/c/quickstart.c build/libbuttress.a -lpthread -lm */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "buttress.h"

/* The remote call: fails twice, then succeeds. */
static int
flaky_call(void)
{
  static int calls;
  return ++calls <= 2 ? -1 : 0;
}

/* One call through the breaker: 0 it worked, -1 it failed, BUTTRESS_OPEN
 * the breaker rejected it (ticket.retry_after_ns says for how long). */
static int
guarded_call(buttress_breaker *br)
{
  buttress_ticket t;
  int rc = buttress_breaker_allow(br, BUTTRESS_NO_CLOCK, &t);
  if (rc == BUTTRESS_NEED_CLOCK) /* open or half-open: the time is needed */
    rc = buttress_breaker_allow(br, buttress_monotonic_ns(), &t);
  if (rc != 0)
    return rc;

  int result = flaky_call(); /* untimed: see docs/c-api.md for slow calls */
  int outcome = result == 0 ? BUTTRESS_SUCCESS : BUTTRESS_FAILURE;
  rc = buttress_breaker_record(br, &t, outcome, BUTTRESS_NO_CLOCK, BUTTRESS_NO_CLOCK);
  if (rc == BUTTRESS_NEED_CLOCK) /* failures need the time */
    buttress_breaker_record(br, &t, outcome, BUTTRESS_NO_CLOCK, buttress_monotonic_ns());
  return result;
}

int
main(void)
{
  /* Defaults, then changes; the caller places the state (malloc will do). */
  buttress_breaker_config bcfg;
  buttress_breaker_config_init(&bcfg); /* 5 failures in a row open it for 30 s */
  size_t bsize = buttress_breaker_sizeof(&bcfg);
  buttress_breaker *br = malloc(bsize);

  buttress_retry_config rcfg;
  buttress_retry_config_init(&rcfg);
  rcfg.attempts = 4;                              /* the first call included */
  rcfg.backoff.base_ns = 10 * BUTTRESS_NS_PER_MS; /* 10, 20, 40 ms, jittered */
  size_t rsize = buttress_retry_sizeof();
  buttress_retry *r = malloc(rsize);

  if (br == NULL || r == NULL || buttress_breaker_init(br, bsize, &bcfg) != 0 ||
      buttress_retry_init(r, rsize, &rcfg, buttress_entropy_seed()) != 0)
    return 1;

  buttress_retry_call call;
  int rc = buttress_retry_begin(r, &call, NULL, BUTTRESS_NONE, buttress_monotonic_ns());
  while (rc == 0) {
    int result = guarded_call(br);
    if (result == 0 || result == BUTTRESS_OPEN) { /* done, or fail fast */
      buttress_retry_end(r, &call, result == 0 ? BUTTRESS_SUCCESS : BUTTRESS_FAILURE);
      rc = result;
      break;
    }
    rc = buttress_retry_next(r, &call, NULL, BUTTRESS_NONE, buttress_monotonic_ns());
    if (rc == 0) { /* next() has counted the coming attempt */
      printf("failed; attempt %u in %.1f ms\n", (unsigned)call.attempt,
             (double)call.delay_ns / 1e6);
      struct timespec ts = {(time_t)(call.delay_ns / BUTTRESS_NS_PER_S),
                            (long)(call.delay_ns % BUTTRESS_NS_PER_S)};
      if (call.delay_ns > 0) /* zero means at once: no sleep call at all */
        nanosleep(&ts, NULL);
    }
  }
  printf("%s after %u attempt(s); breaker %s\n",
         rc == 0 ? "succeeded" : buttress_strerror(rc), (unsigned)call.attempt,
         buttress_state_name(buttress_breaker_state(br)));
  free(br);
  free(r);
  return rc == 0 ? 0 : 1;
}

/*
 * The baseline: a circuit breaker written the obvious way, one pthread mutex
 * around a consecutive-failure counter, the state and a generation.  It
 * follows the same protocol as buttress (allow hands out the generation,
 * record gives it back) so the two are measured doing the same work.
 */
#ifndef BENCH_MUTEX_BREAKER_H
#define BENCH_MUTEX_BREAKER_H

#include <pthread.h>
#include <stdint.h>

enum { MB_CLOSED = 0, MB_OPEN = 1, MB_HALF_OPEN = 2 };
enum { MB_OK = 0, MB_REJECTED = 1, MB_STALE = 2 };

typedef struct mutex_breaker {
  pthread_mutex_t lock;
  int state;
  uint32_t failure_threshold;
  uint32_t consecutive_failures;
  uint32_t trials_in_flight;
  int64_t reset_timeout_ns;
  int64_t open_until_ns;
  uint64_t generation;
  uint64_t successes, failures, rejected, stale;
} mutex_breaker;

void mutex_breaker_init(mutex_breaker *b, uint32_t failure_threshold,
                        int64_t reset_timeout_ns);
void mutex_breaker_destroy(mutex_breaker *b);
/* MB_OK with *generation set, or MB_REJECTED.  now_ns is read only when the
 * breaker is open, as buttress does. */
int mutex_breaker_allow(mutex_breaker *b, int64_t now_ns, uint64_t *generation);
/* MB_OK, or MB_STALE when the breaker moved on since allow. */
int mutex_breaker_record(mutex_breaker *b, uint64_t generation, int success,
                         int64_t now_ns);

#endif

/* The mutex baseline; see mutex_breaker.h.  One trial call in half-open. */
#include "mutex_breaker.h"

void
mutex_breaker_init(mutex_breaker *b, uint32_t failure_threshold,
                   int64_t reset_timeout_ns)
{
  pthread_mutex_init(&b->lock, NULL);
  b->state = MB_CLOSED;
  b->failure_threshold = failure_threshold;
  b->consecutive_failures = 0;
  b->trials_in_flight = 0;
  b->reset_timeout_ns = reset_timeout_ns;
  b->open_until_ns = 0;
  b->generation = 0;
  b->successes = b->failures = b->rejected = b->stale = 0;
}

void
mutex_breaker_destroy(mutex_breaker *b)
{
  pthread_mutex_destroy(&b->lock);
}

static void
move_to(mutex_breaker *b, int state, int64_t now_ns)
{
  b->state = state;
  b->generation++;
  b->consecutive_failures = 0;
  b->trials_in_flight = 0;
  if (state == MB_OPEN)
    b->open_until_ns = now_ns + b->reset_timeout_ns;
}

int
mutex_breaker_allow(mutex_breaker *b, int64_t now_ns, uint64_t *generation)
{
  int rc = MB_OK;
  pthread_mutex_lock(&b->lock);
  if (b->state == MB_OPEN && now_ns >= b->open_until_ns)
    move_to(b, MB_HALF_OPEN, now_ns);
  if (b->state == MB_OPEN ||
      (b->state == MB_HALF_OPEN && b->trials_in_flight >= 1)) {
    b->rejected++;
    rc = MB_REJECTED;
  } else {
    if (b->state == MB_HALF_OPEN)
      b->trials_in_flight++;
    *generation = b->generation;
  }
  pthread_mutex_unlock(&b->lock);
  return rc;
}

int
mutex_breaker_record(mutex_breaker *b, uint64_t generation, int success,
                     int64_t now_ns)
{
  int rc = MB_OK;
  pthread_mutex_lock(&b->lock);
  if (generation != b->generation) {
    b->stale++;
    rc = MB_STALE;
  } else if (success) {
    b->successes++;
    b->consecutive_failures = 0;
    if (b->state == MB_HALF_OPEN)
      move_to(b, MB_CLOSED, now_ns);
  } else {
    b->failures++;
    if (b->state == MB_HALF_OPEN)
      move_to(b, MB_OPEN, now_ns);
    else if (b->failure_threshold > 0 &&
             ++b->consecutive_failures >= b->failure_threshold)
      move_to(b, MB_OPEN, now_ns);
  }
  pthread_mutex_unlock(&b->lock);
  return rc;
}

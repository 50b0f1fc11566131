/* The only file that touches the operating system's clock and entropy.
 * The decision code never calls these: bindings do, and pass the results in. */
#include "internal.h"

#include <errno.h>
#include <sys/random.h>
#include <time.h>

int64_t
buttress_monotonic_ns(void)
{
  struct timespec ts;
  /* CLOCK_MONOTONIC: never the wall clock, which jumps (PITFALLS #15) */
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * BUTTRESS_NS_PER_S + ts.tv_nsec;
}

uint64_t
buttress_entropy_seed(void)
{
  uint64_t seed = 0;
  ssize_t got;
  do {
    got = getrandom(&seed, sizeof seed, GRND_NONBLOCK);
  } while (got < 0 && errno == EINTR);
  if (got != (ssize_t)sizeof seed) {
    /* No entropy yet (early boot): the clock and this stack's address still
     * differ between processes, which is all jitter needs. */
    uintptr_t here = (uintptr_t)&seed;
    seed = (uint64_t)buttress_monotonic_ns() ^ ((uint64_t)here << 16);
  }
  return buttress__mix64(seed);
}

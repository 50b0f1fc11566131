/* Shared-memory regions: one mapping, many processes, named slots.
 *
 * Slots are taken in table order and never freed, so the first FREE slot
 * ends the search.  Claiming is FREE -> CLAIMING(pid) -> NAMED(pid) -> READY,
 * each step one atomic store or CAS; a waiter that finds the claimer dead
 * takes the slot over, so a process killed half way wedges nothing. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define REGION_MAGIC 0x47527462u /* "btRG" */
#define SPIN_LIMIT 2000000       /* yields before a live claimer counts as busy */

enum { SLOT_FREE = 0, SLOT_CLAIMING = 1, SLOT_NAMED = 2, SLOT_READY = 3, SLOT_DEAD = 4 };
enum { KIND_BREAKER = 1, KIND_BUDGET = 2 };

#define S_STATE(s) ((int)((s) & 7u))
#define S_PID(s) ((pid_t)((s) >> 3))
#define S_MAKE(state, pid) (((uint64_t)(uint32_t)(pid) << 3) | (uint64_t)(state))

typedef struct region_slot {
  buttress__au64 status;
  uint32_t kind;
  uint32_t reserved_;
  uint64_t offset;
  uint64_t size;
  char name[BUTTRESS_SLOT_NAME_MAX + 1];
} region_slot;

struct buttress_region {
  _Atomic uint32_t magic; /* published last, by the creator */
  uint32_t abi;
  uint64_t size;
  buttress__au64 used;
  region_slot slot[BUTTRESS_REGION_SLOTS];
};

static size_t
align64(size_t n)
{
  return (n + 63) & ~(size_t)63;
}

static void
region_format(buttress_region *r, size_t size)
{
  /* fresh mappings are zero-filled: only the header needs writing */
  r->abi = BUTTRESS__ABI;
  r->size = size;
  atomic_store_explicit(&r->used, align64(sizeof *r), memory_order_relaxed);
  /* release: an attacher that sees the magic sees a complete header */
  atomic_store_explicit(&r->magic, REGION_MAGIC, memory_order_release);
}

static int
check_region_name(const char *name)
{
  if (name == NULL || name[0] != '/' || name[1] == '\0') return BUTTRESS_EINVAL;
  size_t len = strlen(name);
  if (len > BUTTRESS_REGION_NAME_MAX) return BUTTRESS_ENAMETOOLONG;
  if (strchr(name + 1, '/') != NULL) return BUTTRESS_EINVAL;
  return BUTTRESS_OK;
}

static int
map_fd(int fd, size_t size, buttress_region **out)
{
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return BUTTRESS_ESYS;
  *out = p;
  return BUTTRESS_OK;
}

/* An existing region: wait briefly for a creator that is still formatting
 * it, then insist on our magic, ABI and size. */
static int
attach_fd(int fd, buttress_region **out)
{
  struct stat st;
  for (long spins = 0;; spins++) {
    if (fstat(fd, &st) != 0) return BUTTRESS_ESYS;
    if ((size_t)st.st_size >= sizeof(buttress_region)) break;
    if (st.st_size != 0 || spins > SPIN_LIMIT) return BUTTRESS_EABI;
    sched_yield();
  }
  buttress_region *r;
  int rc = map_fd(fd, (size_t)st.st_size, &r);
  if (rc != BUTTRESS_OK) return rc;
  uint32_t magic = 0;
  for (long spins = 0; spins <= SPIN_LIMIT; spins++) {
    magic = atomic_load_explicit(&r->magic, memory_order_acquire);
    if (magic != 0) break;
    sched_yield();
  }
  if (magic != REGION_MAGIC || r->abi != BUTTRESS__ABI || r->size != (uint64_t)st.st_size) {
    munmap(r, (size_t)st.st_size);
    return BUTTRESS_EABI;
  }
  *out = r;
  return BUTTRESS_OK;
}

int
buttress_region_open(const char *name, size_t size, int flags, uint32_t mode, buttress_region **out)
{
  if (out == NULL || (flags & ~BUTTRESS_REGION_CREATE) != 0) return BUTTRESS_EINVAL;
  int rc = check_region_name(name);
  if (rc != BUTTRESS_OK) return rc;
  bool create = flags & BUTTRESS_REGION_CREATE;
  if (create && (size < BUTTRESS_REGION_MIN_SIZE || mode > 0777)) return BUTTRESS_EINVAL;

  int fd = -1;
  if (create) {
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, (mode_t)mode);
    if (fd >= 0) {
      if (ftruncate(fd, (off_t)size) != 0) {
        int saved = errno;
        close(fd);
        shm_unlink(name);
        errno = saved;
        return BUTTRESS_ESYS;
      }
      rc = map_fd(fd, size, out);
      close(fd);
      if (rc == BUTTRESS_OK) region_format(*out, size);
      return rc;
    }
    if (errno != EEXIST) return BUTTRESS_ESYS;
  }
  /* Attach: never reformat what is there (PITFALLS #9). */
  fd = shm_open(name, O_RDWR, 0);
  if (fd < 0) return errno == ENOENT ? BUTTRESS_ENOENT : BUTTRESS_ESYS;
  rc = attach_fd(fd, out);
  close(fd);
  return rc;
}

int
buttress_region_anonymous(size_t size, buttress_region **out)
{
  if (out == NULL || size < BUTTRESS_REGION_MIN_SIZE) return BUTTRESS_EINVAL;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return BUTTRESS_ESYS;
  region_format(p, size);
  *out = p;
  return BUTTRESS_OK;
}

static bool
valid(const buttress_region *r)
{
  return r != NULL && atomic_load_explicit(&r->magic, memory_order_acquire) == REGION_MAGIC;
}

int
buttress_region_close(buttress_region *r)
{
  if (!valid(r)) return BUTTRESS_EINVAL;
  return munmap(r, r->size) == 0 ? BUTTRESS_OK : BUTTRESS_ESYS;
}

int
buttress_region_unlink(const char *name)
{
  int rc = check_region_name(name);
  if (rc != BUTTRESS_OK) return rc;
  if (shm_unlink(name) == 0) return BUTTRESS_OK;
  return errno == ENOENT ? BUTTRESS_ENOENT : BUTTRESS_ESYS;
}

int
buttress_region_info(const buttress_region *r, uint64_t *size, uint64_t *used, uint32_t *slots_used)
{
  if (!valid(r)) return BUTTRESS_EINVAL;
  uint32_t n = 0;
  while (n < BUTTRESS_REGION_SLOTS &&
         S_STATE(atomic_load_explicit(&r->slot[n].status, memory_order_acquire)) != SLOT_FREE)
    n++;
  if (size) *size = r->size;
  if (used) *used = atomic_load_explicit(&r->used, memory_order_relaxed);
  if (slots_used) *slots_used = n;
  return BUTTRESS_OK;
}

static bool
pid_alive(pid_t pid)
{
  return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

/* Space for one object, or 0 when the region is full (nothing taken). */
static uint64_t
region_alloc(buttress_region *r, size_t size)
{
  uint64_t used = atomic_load_explicit(&r->used, memory_order_relaxed);
  for (;;) {
    uint64_t end = used + align64(size);
    if (end > r->size) return 0;
    if (atomic_compare_exchange_weak_explicit(&r->used, &used, end, memory_order_relaxed,
                                              memory_order_relaxed))
      return used;
  }
}

/* What kind-specific code does with a slot. */
typedef struct slot_ops {
  uint32_t kind;
  size_t size;
  int (*init)(void *mem, size_t size, const void *cfg);
  int (*same_config)(const void *obj, const void *cfg);
} slot_ops;

/* Finish a slot this process holds in CLAIMING: name it, initialise the
 * object in the space reserved for it, publish it. */
static int
slot_fill(buttress_region *r, region_slot *s, uint64_t mine, uint64_t offset, const char *name,
          const slot_ops *ops, const void *cfg)
{
  memset(s->name, 0, sizeof s->name);
  memcpy(s->name, name, strlen(name));
  s->kind = ops->kind;
  atomic_store_explicit(&s->status, S_MAKE(SLOT_NAMED, S_PID(mine)), memory_order_release);
  int rc = ops->init((char *)r + offset, ops->size, cfg);
  if (rc != BUTTRESS_OK) {
    /* Retire it (not FREE: later slots may be taken). */
    atomic_store_explicit(&s->status, S_MAKE(SLOT_DEAD, 0), memory_order_release);
    return rc;
  }
  s->offset = offset;
  s->size = ops->size;
  atomic_store_explicit(&s->status, S_MAKE(SLOT_READY, 0), memory_order_release);
  return BUTTRESS_OK;
}

static int
find_or_create(buttress_region *r, const char *name, const slot_ops *ops, const void *cfg, void **out,
            int *created)
{
  if (!valid(r) || name == NULL || out == NULL || ops->size == 0) return BUTTRESS_EINVAL;
  size_t len = strlen(name);
  if (len == 0) return BUTTRESS_EINVAL;
  if (len > BUTTRESS_SLOT_NAME_MAX) return BUTTRESS_ENAMETOOLONG;
  uint64_t mine = S_MAKE(SLOT_CLAIMING, getpid());
  uint64_t reserved = 0; /* space taken before claiming a slot, so that a
                            full region changes nothing */
  if (created) *created = 0;

  for (int i = 0; i < BUTTRESS_REGION_SLOTS; i++) {
    region_slot *s = &r->slot[i];
    long spins = 0;
    for (;;) {
      uint64_t st = atomic_load_explicit(&s->status, memory_order_acquire);
      int state = S_STATE(st);
      if (state == SLOT_FREE) {
        if (reserved == 0 && (reserved = region_alloc(r, ops->size)) == 0) return BUTTRESS_ENOSPC;
        if (!atomic_compare_exchange_strong_explicit(&s->status, &st, mine, memory_order_acq_rel,
                                                     memory_order_acquire))
          continue; /* someone else took it: look again, it may be our name */
        int rc = slot_fill(r, s, mine, reserved, name, ops, cfg);
        if (rc != BUTTRESS_OK) return rc;
        if (created) *created = 1;
        *out = (char *)r + s->offset;
        return BUTTRESS_OK;
      }
      if (state == SLOT_DEAD) break;
      if (state == SLOT_READY) {
        if (strcmp(s->name, name) != 0) break;
        if (s->kind != ops->kind) return BUTTRESS_ECONFIG;
        void *obj = (char *)r + s->offset;
        if (!ops->same_config(obj, cfg)) return BUTTRESS_ECONFIG;
        /* Space reserved while racing another creator of this name stays
         * unused: at most one object's worth per lost race. */
        *out = obj;
        return BUTTRESS_OK;
      }
      /* CLAIMING or NAMED: being created right now by S_PID(st). */
      if (state == SLOT_NAMED && strcmp(s->name, name) != 0) break;
      if (!pid_alive(S_PID(st))) {
        /* Its creator died half way: take it over and start it afresh. */
        if (reserved == 0 && (reserved = region_alloc(r, ops->size)) == 0) return BUTTRESS_ENOSPC;
        if (atomic_compare_exchange_strong_explicit(&s->status, &st, mine, memory_order_acq_rel,
                                                    memory_order_acquire)) {
          int rc = slot_fill(r, s, mine, reserved, name, ops, cfg);
          if (rc != BUTTRESS_OK) return rc;
          if (created) *created = 1;
          *out = (char *)r + s->offset;
          return BUTTRESS_OK;
        }
        continue;
      }
      if (++spins > SPIN_LIMIT) return BUTTRESS_EBUSY;
      sched_yield();
    }
  }
  return BUTTRESS_ENOSPC;
}

static int
breaker_init(void *mem, size_t size, const void *cfg)
{
  return buttress_breaker_init(mem, size, cfg);
}

static int
breaker_same(const void *obj, const void *cfg)
{
  buttress_breaker_config have;
  if (buttress_breaker_get_config(obj, &have) != BUTTRESS_OK) return 0;
  return memcmp(&have, cfg, sizeof have) == 0;
}

int
buttress_region_breaker(buttress_region *r, const char *name, const buttress_breaker_config *cfg,
                        buttress_breaker **out, int *created)
{
  slot_ops ops = {KIND_BREAKER, buttress_breaker_sizeof(cfg), breaker_init, breaker_same};
  if (ops.size == 0) return BUTTRESS_EINVAL;
  return find_or_create(r, name, &ops, cfg, (void **)out, created);
}

static int
budget_init(void *mem, size_t size, const void *cfg)
{
  return buttress_budget_init(mem, size, cfg);
}

static int
budget_same(const void *obj, const void *cfg)
{
  buttress_budget_config have;
  if (buttress__budget_get_config(obj, &have) != BUTTRESS_OK) return 0;
  return memcmp(&have, cfg, sizeof have) == 0;
}

int
buttress_region_budget(buttress_region *r, const char *name, const buttress_budget_config *cfg,
                       buttress_budget **out, int *created)
{
  if (buttress_budget_config_check(cfg) != BUTTRESS_OK) return BUTTRESS_EINVAL;
  slot_ops ops = {KIND_BUDGET, buttress_budget_sizeof(), budget_init, budget_same};
  return find_or_create(r, name, &ops, cfg, (void **)out, created);
}

/*
 * A virtio driver in Linux user space for scenario 2 (grant-based DMA on a real hypervisor).
 *
 * Debian's guest kernel has no CONFIG_XEN_VIRTIO, so this program plays the part of Linux's
 * xen-grant-dma: it grants its rings and buffers to the backend domain through
 * /dev/xen/gntalloc and puts grant DMA addresses (1<<63 | gref<<12 | offset) on a split
 * virtqueue. The device is xvio's virtio-rng behind virtio-mmio version 2 windows (virtio
 * spec 4.2.2) that xvio serves from dom0 through an ioreq server: the windows are mapped from
 * /dev/mem, every register access traps to Xen and becomes an ioreq.
 *
 * Usage: guest-virtio-mmio BASE BACKEND_DOMID STRATEGY...
 *   window i (at BASE + 0x200 * i) is served with memory strategy i (names as xvio's
 *   @xvio/grant-pool: grant-map, grant-copy, persistent-pool); one round per window.
 *
 * Every round: device initialization (3.1.1), REQUESTS requests of one 4 KiB page each,
 * polled on the used ring (no interrupt, VIRTQ_AVAIL_F_NO_INTERRUPT), one request on a grant
 * already revoked and one whose buffer is a read-only grant (the device must fail both alone,
 * used length 0, and must not write the read-only page),
 * then a device reset. Per-request rounds (grant-map, grant-copy) grant each buffer for one
 * request and revoke it (gntalloc dealloc) right after the used element appears, as
 * xen-grant-dma does on dma_unmap; the persistent-pool round grants a pool once, publishes its
 * table in xenstore, and at the end revokes a pool page the backend still maps.
 *
 * Whether Linux had to defer a revocation (the grant was still mapped by the backend) is read
 * from the kernel log: gnttab_add_deferred logs "deferring g.e." with pr_debug, enabled here
 * through dynamic debug, and the deferred entry is later logged as "freeing g.e.".
 *
 * Output: DOMU-PASS/DOMU-FAIL/DOMU-NOTE/DOMU-MEASURE lines on stdout (the serial console).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <xen/sys/gntalloc.h>

#define PAGE 4096u
#define QSIZE 16u
#define REQUESTS 256u
#define POOL_PAGES 8u
#define POLL_TIMEOUT_NS 20000000000ull /* 20 s: TCG is slow, but a lost request must not hang */

/* virtio-mmio version 2 registers (virtio spec 4.2.2, Table "MMIO Device Register Layout"). */
enum {
  R_MAGIC = 0x000, R_VERSION = 0x004, R_DEVICE_ID = 0x008, R_DEVICE_FEATURES = 0x010,
  R_DEVICE_FEATURES_SEL = 0x014, R_DRIVER_FEATURES = 0x020, R_DRIVER_FEATURES_SEL = 0x024,
  R_QUEUE_SEL = 0x030, R_QUEUE_NUM_MAX = 0x034, R_QUEUE_NUM = 0x038, R_QUEUE_READY = 0x044,
  R_QUEUE_NOTIFY = 0x050, R_STATUS = 0x070, R_QUEUE_DESC_LOW = 0x080, R_QUEUE_DESC_HIGH = 0x084,
  R_QUEUE_DRIVER_LOW = 0x090, R_QUEUE_DRIVER_HIGH = 0x094, R_QUEUE_DEVICE_LOW = 0x0a0,
  R_QUEUE_DEVICE_HIGH = 0x0a4,
};
#define MMIO_MAGIC 0x74726976u /* "virt" */
#define VIRTIO_ID_RNG 4u
/* Device status bits (2.1). */
#define S_ACKNOWLEDGE 1u
#define S_DRIVER 2u
#define S_DRIVER_OK 4u
#define S_FEATURES_OK 8u
#define S_NEEDS_RESET 64u
#define S_FAILED 128u
/* Feature bits (6): VIRTIO_F_VERSION_1 32, VIRTIO_F_ACCESS_PLATFORM 33 (the device reaches
 * only what the platform grants: here, grant references). */
#define F_VERSION_1 (1ull << 32)
#define F_ACCESS_PLATFORM (1ull << 33)

/* Split virtqueue (2.7), all in one granted page: gntalloc does not promise consecutive
 * references, so each ring part must not cross the page. Alignments: desc 16, avail 2, used 4. */
#define DESC_OFF 0u     /* 16 bytes x QSIZE */
#define AVAIL_OFF 256u  /* flags, idx, ring[QSIZE], used_event */
#define USED_OFF 512u   /* flags, idx, {id u32, len u32}[QSIZE], avail_event */
#define VIRTQ_DESC_F_WRITE 2u
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1u

/* The pool table xvio's persistent-pool strategy reads (its pool-table-wire module):
 * u32 magic "XVPT" @0, u32 count @4, u32 refs[count] @8, little-endian. */
#define POOL_TABLE_MAGIC 0x54505658u

struct grant {
  uint32_t ref;
  uint64_t index;
  uint8_t *page;
};

static int gnt_fd = -1;
static uint16_t backend_domid;
static int failures;

static void fail(const char *round, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(const char *round, const char *fmt, ...) {
  char text[512];
  va_list args;
  va_start(args, fmt);
  vsnprintf(text, sizeof text, fmt, args);
  va_end(args);
  printf("DOMU-FAIL mmio-%s %s\n", round, text);
  failures++;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- grants (/dev/xen/gntalloc) ---- */

static int grant_alloc(struct grant *g, int writable) {
  struct ioctl_gntalloc_alloc_gref op;
  memset(&op, 0, sizeof op);
  op.domid = backend_domid;
  op.flags = writable ? GNTALLOC_FLAG_WRITABLE : 0;
  op.count = 1;
  if (ioctl(gnt_fd, IOCTL_GNTALLOC_ALLOC_GREF, &op) != 0) return -1;
  g->ref = op.gref_ids[0];
  g->index = op.index;
  void *page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gnt_fd, (off_t)op.index);
  if (page == MAP_FAILED) {
    struct ioctl_gntalloc_dealloc_gref back = {.index = op.index, .count = 1};
    ioctl(gnt_fd, IOCTL_GNTALLOC_DEALLOC_GREF, &back);
    return -1;
  }
  g->page = page;
  return 0;
}

/* Ends access: gntalloc ends the foreign access once the page is neither mapped here nor
 * indexed; if the backend still maps it, Linux defers (gnttab_add_deferred). */
static int grant_revoke(struct grant *g) {
  if (!g->page) return 0;
  munmap(g->page, PAGE);
  g->page = NULL;
  struct ioctl_gntalloc_dealloc_gref op = {.index = g->index, .count = 1};
  return ioctl(gnt_fd, IOCTL_GNTALLOC_DEALLOC_GREF, &op);
}

static uint64_t grant_address(const struct grant *g, uint32_t offset) {
  return (1ull << 63) | ((uint64_t)g->ref << 12) | offset;
}

/* ---- the kernel log: deferred revocations ---- */

static void enable_grant_debug(void) {
  const char *query = "file grant-table.c +p\n";
  const char *paths[] = {"/proc/dynamic_debug/control", "/sys/kernel/debug/dynamic_debug/control"};
  for (unsigned i = 0; i < 2; i++) {
    int fd = open(paths[i], O_WRONLY);
    if (fd < 0) continue;
    ssize_t n = write(fd, query, strlen(query));
    close(fd);
    if (n == (ssize_t)strlen(query)) return;
  }
  printf("DOMU-FAIL mmio-setup dynamic debug for grant-table.c not enabled (errno %d)\n", errno);
  failures++;
}

static unsigned count_log(const char *needle) {
  static char buf[1 << 20];
  int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, sizeof buf - 1);
  if (n < 0) return 0;
  buf[n] = 0;
  unsigned count = 0;
  for (char *p = buf; (p = strstr(p, needle)) != NULL; p += strlen(needle)) count++;
  return count;
}

static unsigned deferred(void) { return count_log("deferring g.e."); }
static unsigned freed(void) { return count_log("freeing g.e."); }

/* ---- xenstore, just enough to publish the pool table (/dev/xen/xenbus wire format) ---- */

struct xsd_header {
  uint32_t type, req_id, tx_id, len;
};
#define XS_READ 2u
#define XS_WRITE 11u
#define XS_ERROR 16u

static int xs_request(uint32_t type, const char *path, const char *value, char *reply, size_t size) {
  int fd = open("/dev/xen/xenbus", O_RDWR);
  if (fd < 0) return -1;
  char msg[256];
  size_t plen = strlen(path) + 1, vlen = value ? strlen(value) : 0;
  struct xsd_header h = {.type = type, .req_id = 1, .tx_id = 0, .len = (uint32_t)(plen + vlen)};
  memcpy(msg, &h, sizeof h);
  memcpy(msg + sizeof h, path, plen);
  if (value) memcpy(msg + sizeof h + plen, value, vlen);
  int rc = -1;
  if (write(fd, msg, sizeof h + plen + vlen) == (ssize_t)(sizeof h + plen + vlen)) {
    struct xsd_header r;
    if (read(fd, &r, sizeof r) == sizeof r && r.len < size) {
      ssize_t got = r.len ? read(fd, reply, r.len) : 0;
      if (got == (ssize_t)r.len) {
        reply[got] = 0;
        rc = r.type == XS_ERROR ? -1 : (int)got;
      }
    }
  }
  close(fd);
  return rc;
}

/* ---- the device ---- */

struct device {
  volatile uint8_t *regs;
  struct grant ring;
  uint16_t avail_idx, used_idx;
};

static uint32_t rd(struct device *d, unsigned off) { return *(volatile uint32_t *)(d->regs + off); }
static void wr(struct device *d, unsigned off, uint32_t v) { *(volatile uint32_t *)(d->regs + off) = v; }

static void put16(uint8_t *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED); }
static uint16_t get16(uint8_t *p) { return __atomic_load_n((uint16_t *)p, __ATOMIC_RELAXED); }

/* Device initialization, 3.1.1, with the queue setup of 4.2.3.2. */
static int device_start(struct device *d, const char *round) {
  wr(d, R_STATUS, 0); /* reset */
  if (rd(d, R_MAGIC) != MMIO_MAGIC || rd(d, R_VERSION) != 2 || rd(d, R_DEVICE_ID) != VIRTIO_ID_RNG) {
    fail(round, "not a virtio-mmio v2 rng: magic %#x version %u device %u", rd(d, R_MAGIC), rd(d, R_VERSION),
         rd(d, R_DEVICE_ID));
    return -1;
  }
  wr(d, R_STATUS, S_ACKNOWLEDGE);
  wr(d, R_STATUS, S_ACKNOWLEDGE | S_DRIVER);
  wr(d, R_DEVICE_FEATURES_SEL, 0);
  uint64_t features = rd(d, R_DEVICE_FEATURES);
  wr(d, R_DEVICE_FEATURES_SEL, 1);
  features |= (uint64_t)rd(d, R_DEVICE_FEATURES) << 32;
  if (!(features & F_VERSION_1) || !(features & F_ACCESS_PLATFORM)) {
    fail(round, "device features %#llx lack VERSION_1 or ACCESS_PLATFORM", (unsigned long long)features);
    return -1;
  }
  uint64_t driver = F_VERSION_1 | F_ACCESS_PLATFORM;
  wr(d, R_DRIVER_FEATURES_SEL, 0);
  wr(d, R_DRIVER_FEATURES, (uint32_t)driver);
  wr(d, R_DRIVER_FEATURES_SEL, 1);
  wr(d, R_DRIVER_FEATURES, (uint32_t)(driver >> 32));
  wr(d, R_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
  if (!(rd(d, R_STATUS) & S_FEATURES_OK)) {
    fail(round, "FEATURES_OK not accepted");
    return -1;
  }
  wr(d, R_QUEUE_SEL, 0);
  if (rd(d, R_QUEUE_READY) != 0 || rd(d, R_QUEUE_NUM_MAX) < QSIZE) {
    fail(round, "queue 0 not usable: ready %u max %u", rd(d, R_QUEUE_READY), rd(d, R_QUEUE_NUM_MAX));
    return -1;
  }
  memset(d->ring.page, 0, PAGE);
  put16(d->ring.page + AVAIL_OFF, VIRTQ_AVAIL_F_NO_INTERRUPT);
  d->avail_idx = d->used_idx = 0;
  uint64_t desc = grant_address(&d->ring, DESC_OFF), avail = grant_address(&d->ring, AVAIL_OFF),
           used = grant_address(&d->ring, USED_OFF);
  wr(d, R_QUEUE_NUM, QSIZE);
  wr(d, R_QUEUE_DESC_LOW, (uint32_t)desc);
  wr(d, R_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
  wr(d, R_QUEUE_DRIVER_LOW, (uint32_t)avail);
  wr(d, R_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
  wr(d, R_QUEUE_DEVICE_LOW, (uint32_t)used);
  wr(d, R_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
  wr(d, R_QUEUE_READY, 1);
  wr(d, R_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
  uint32_t status = rd(d, R_STATUS);
  if (status & (S_NEEDS_RESET | S_FAILED) || !(status & S_DRIVER_OK)) {
    fail(round, "device status %#x after DRIVER_OK", status);
    return -1;
  }
  return 0;
}

/* One device-writable buffer on the ring, notify, poll the used ring. Returns the used length,
 * or -1 on timeout or a malformed used element. */
static long request(struct device *d, uint64_t address, uint32_t length, const char *round) {
  uint8_t *ring = d->ring.page;
  uint16_t slot = d->avail_idx % QSIZE;
  uint8_t *desc = ring + DESC_OFF + 16u * slot;
  memcpy(desc, &address, 8);
  memcpy(desc + 8, &length, 4);
  put16(desc + 12, VIRTQ_DESC_F_WRITE);
  put16(desc + 14, 0);
  put16(ring + AVAIL_OFF + 4 + 2u * slot, slot);
  /* 2.7.13: the descriptor and ring entry are visible before the index that publishes them. */
  __atomic_thread_fence(__ATOMIC_RELEASE);
  put16(ring + AVAIL_OFF + 2, ++d->avail_idx);
  /* The index is visible before the notification (the MMIO write traps: a full fence). */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  wr(d, R_QUEUE_NOTIFY, 0);
  uint64_t deadline = now_ns() + POLL_TIMEOUT_NS;
  unsigned spins = 0;
  while (get16(ring + USED_OFF + 2) == d->used_idx) {
    /* Spin briefly, then sleep between polls: a vCPU spinning under emulation takes host CPU
     * time from dom0, whose backend is what we wait for. */
    if (++spins > 2000) usleep(50);
    if (now_ns() > deadline) {
      fail(round, "no used element within %llu s (status %#x)", POLL_TIMEOUT_NS / 1000000000ull, rd(d, R_STATUS));
      return -1;
    }
    __builtin_ia32_pause();
  }
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  uint8_t *elem = ring + USED_OFF + 4 + 8u * (d->used_idx % QSIZE);
  uint32_t id, len;
  memcpy(&id, elem, 4);
  memcpy(&len, elem + 4, 4);
  d->used_idx++;
  if (id != slot || len > length) {
    fail(round, "used element id %u len %u for slot %u length %u", id, len, slot, length);
    return -1;
  }
  return len;
}

/* ---- one round per strategy ---- */

struct tally {
  uint64_t bytes;
  uint64_t histogram[256];
  uint64_t ns_total, ns_min, ns_max;
  uint64_t ns[REQUESTS];
  unsigned requests;
};

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void tally_request(struct tally *t, const uint8_t *page, long len, uint64_t ns) {
  t->bytes += (uint64_t)len;
  for (long i = 0; i < len; i++) t->histogram[page[i]]++;
  t->ns_total += ns;
  if (t->requests == 0 || ns < t->ns_min) t->ns_min = ns;
  if (ns > t->ns_max) t->ns_max = ns;
  if (t->requests < REQUESTS) t->ns[t->requests] = ns;
  t->requests++;
}

/* The bytes past what the device reported must still hold the driver's pattern. */
static int untouched_after(const uint8_t *page, long len, uint8_t pattern) {
  for (unsigned i = (unsigned)len; i < PAGE; i++)
    if (page[i] != pattern) return 0;
  return 1;
}

static void round_report(const char *round, struct tally *t, unsigned defer_delta, const char *extra) {
  unsigned distinct = 0;
  uint64_t lo = UINT64_MAX, hi = 0;
  for (unsigned v = 0; v < 256; v++) {
    if (t->histogram[v]) distinct++;
    if (t->histogram[v] < lo) lo = t->histogram[v];
    if (t->histogram[v] > hi) hi = t->histogram[v];
  }
  /* Spread: with 1 MiB of random bytes each value is expected 4096 times (sd ~64). */
  uint64_t expected = t->bytes / 256;
  int spread_ok = distinct == 256 && lo * 2 > expected && hi < expected * 2;
  uint64_t avg_us = t->requests ? t->ns_total / t->requests / 1000 : 0;
  /* The median: under TCG a few requests wait for dom0's scheduler and skew the mean. */
  unsigned n = t->requests < REQUESTS ? t->requests : REQUESTS;
  qsort(t->ns, n, sizeof t->ns[0], compare_u64);
  uint64_t median_us = n ? t->ns[n / 2] / 1000 : 0;
  printf("DOMU-MEASURE mmio-%s-request %llu us\n", round, (unsigned long long)median_us);
  if (t->requests == REQUESTS && t->bytes > 0 && spread_ok && defer_delta == 0) {
    printf("DOMU-PASS mmio-%s %u requests, %llu bytes, %u distinct byte values (each %llu..%llu times), "
           "request round trip median %llu us (mean %llu, min %llu, max %llu); deferred revocations %u%s\n",
           round, t->requests, (unsigned long long)t->bytes, distinct, (unsigned long long)lo,
           (unsigned long long)hi, (unsigned long long)median_us, (unsigned long long)avg_us,
           (unsigned long long)(t->ns_min / 1000),
           (unsigned long long)(t->ns_max / 1000), defer_delta, extra);
  } else {
    fail(round, "%u/%u requests, %llu bytes, %u distinct (each %llu..%llu), deferred revocations %u%s",
         t->requests, REQUESTS, (unsigned long long)t->bytes, distinct, (unsigned long long)lo,
         (unsigned long long)hi, defer_delta, extra);
  }
}

/* A read-only grant offered as a device-writable buffer: the device must refuse it (used
 * length 0) and must not have written a byte. Returns 1 when it held. */
static int read_only_case(struct device *d, const char *round) {
  struct grant ro;
  if (grant_alloc(&ro, 0) != 0) {
    fail(round, "gntalloc read-only grant failed (errno %d)", errno);
    return 0;
  }
  memset(ro.page, 0x3c, PAGE);
  long len = request(d, grant_address(&ro, 0), PAGE, round);
  int held = len == 0 && untouched_after(ro.page, 0, 0x3c);
  if (!held) fail(round, "read-only grant: used length %ld, page %s", len, untouched_after(ro.page, 0, 0x3c) ? "intact" : "WRITTEN");
  grant_revoke(&ro);
  return held;
}

/* A grant the guest revoked (nobody mapped it, so access ended at once) put on the ring: the
 * device must fail that request alone (used length 0) and keep serving. Runs before the
 * read-only case, whose request then shows the device still works. */
static int revoked_case(struct device *d, const char *round) {
  struct grant gone;
  if (grant_alloc(&gone, 1) != 0) {
    fail(round, "gntalloc for the revoked case failed (errno %d)", errno);
    return 0;
  }
  uint64_t address = grant_address(&gone, 0);
  if (grant_revoke(&gone) != 0) {
    fail(round, "revoking an unmapped grant failed (errno %d)", errno);
    return 0;
  }
  long len = request(d, address, PAGE, round);
  if (len != 0) fail(round, "revoked grant: used length %ld", len);
  return len == 0;
}

/* grant-map and grant-copy: every buffer is granted for one request and revoked as soon as
 * its used element is seen, as Linux's xen-grant-dma does. */
static void round_per_request(struct device *d, const char *round) {
  struct tally t;
  memset(&t, 0, sizeof t);
  unsigned before = deferred();
  if (device_start(d, round) != 0) return;
  for (unsigned r = 0; r < REQUESTS; r++) {
    struct grant buf;
    if (grant_alloc(&buf, 1) != 0) {
      fail(round, "gntalloc failed at request %u (errno %d)", r, errno);
      break;
    }
    memset(buf.page, 0xa5, PAGE);
    uint64_t start = now_ns();
    long len = request(d, grant_address(&buf, 0), PAGE, round);
    uint64_t ns = now_ns() - start;
    if (len <= 0 || !untouched_after(buf.page, len, 0xa5)) {
      if (len == 0) fail(round, "request %u: used length 0", r);
      grant_revoke(&buf);
      break;
    }
    tally_request(&t, buf.page, len, ns);
    grant_revoke(&buf); /* right after the used element: no mapping may be left */
  }
  unsigned after_requests = deferred();
  int revoked = revoked_case(d, round);
  int ro = read_only_case(d, round);
  wr(d, R_STATUS, 0);
  unsigned after = deferred();
  char extra[256];
  snprintf(extra, sizeof extra,
           "; revoked grant %s; read-only grant %s; revocations after each completion deferred: %u",
           revoked ? "refused (length 0)" : "NOT refused", ro ? "refused (length 0, page intact)" : "NOT refused",
           after_requests - before);
  round_report(round, &t, after - before, extra);
}

/* persistent-pool: the pool is granted once and its table published; buffers come from the
 * pool. At the end a pool page the backend still maps is revoked: the case Linux defers. */
static void round_pool(struct device *d, const char *round) {
  struct tally t;
  memset(&t, 0, sizeof t);
  struct grant pool[POOL_PAGES], table;
  for (unsigned i = 0; i < POOL_PAGES; i++)
    if (grant_alloc(&pool[i], 1) != 0) {
      fail(round, "gntalloc pool page %u failed (errno %d)", i, errno);
      return;
    }
  if (grant_alloc(&table, 0) != 0) {
    fail(round, "gntalloc table failed (errno %d)", errno);
    return;
  }
  uint32_t words[2 + POOL_PAGES] = {POOL_TABLE_MAGIC, POOL_PAGES};
  for (unsigned i = 0; i < POOL_PAGES; i++) words[2 + i] = pool[i].ref;
  memset(table.page, 0, PAGE);
  memcpy(table.page, words, sizeof words);
  char value[32], reply[64];
  snprintf(value, sizeof value, "%u", table.ref);
  if (xs_request(XS_WRITE, "data/persistent-pool-table", value, reply, sizeof reply) < 0) {
    fail(round, "xenstore write of the pool table failed (errno %d)", errno);
    return;
  }
  /* The backend loads the table and acknowledges, so the first request already hits the pool. */
  uint64_t deadline = now_ns() + 60000000000ull;
  while (xs_request(XS_READ, "data/persistent-pool-loaded", NULL, reply, sizeof reply) <= 0) {
    if (now_ns() > deadline) {
      fail(round, "the backend never loaded the pool table");
      return;
    }
    usleep(100000);
  }
  unsigned before = deferred();
  if (device_start(d, round) != 0) return;
  for (unsigned r = 0; r < REQUESTS; r++) {
    struct grant *buf = &pool[r % POOL_PAGES];
    memset(buf->page, 0xa5, PAGE);
    uint64_t start = now_ns();
    long len = request(d, grant_address(buf, 0), PAGE, round);
    uint64_t ns = now_ns() - start;
    if (len <= 0 || !untouched_after(buf->page, len, 0xa5)) {
      if (len == 0) fail(round, "request %u: used length 0", r);
      break;
    }
    tally_request(&t, buf->page, len, ns);
  }
  unsigned after_requests = deferred();
  int revoked = revoked_case(d, round);
  int ro = read_only_case(d, round);
  /* Revoke-while-mapped: pool page 0 is still mapped by the backend (it keeps pool pages
   * until reset). gntalloc cannot end the access; Linux defers it. Then the device must go on
   * serving the other pool pages. */
  unsigned before_revoke = deferred(), freed_before = freed();
  grant_revoke(&pool[0]);
  unsigned revoke_deferred = deferred() - before_revoke;
  unsigned more = 0;
  for (unsigned r = 0; r < 8; r++) {
    struct grant *buf = &pool[1 + r % (POOL_PAGES - 1)];
    memset(buf->page, 0xa5, PAGE);
    long len = request(d, grant_address(buf, 0), PAGE, round);
    if (len > 0 && untouched_after(buf->page, len, 0xa5)) more++;
  }
  /* Reset: the backend unmaps the pool; the deferred revocation then completes (Linux retries
   * deferred entries from a timer, about once a second). */
  wr(d, R_STATUS, 0);
  unsigned completed = 0;
  for (unsigned i = 0; i < 100 && completed < revoke_deferred; i++) {
    usleep(100000);
    completed = freed() - freed_before;
  }
  char extra[400];
  snprintf(extra, sizeof extra,
           "; revoked grant %s; read-only grant %s; pooled grant revoked while the backend held it: %u "
           "deferred by Linux, %u/8 requests served after it, the deferred revocation %s after the reset",
           revoked ? "refused (length 0)" : "NOT refused", ro ? "refused (length 0, page intact)" : "NOT refused",
           revoke_deferred, more,
           completed >= revoke_deferred && revoke_deferred > 0 ? "completed" : "did NOT complete");
  round_report(round, &t, after_requests - before, extra);
  if (revoke_deferred == 1 && more == 8 && completed >= 1)
    printf("DOMU-PASS mmio-revoke-while-mapped revoking a pooled grant the backend maps is deferred by "
           "Linux (1 deferral), the device kept serving (%u/8), the revocation completed once the reset "
           "unmapped the pool\n", more);
  else
    fail("revoke-while-mapped", "deferred %u, served after %u/8, completed %u", revoke_deferred, more, completed);
  for (unsigned i = 1; i < POOL_PAGES; i++) grant_revoke(&pool[i]);
  grant_revoke(&table);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 4) {
    printf("DOMU-FAIL mmio-setup usage: %s BASE BACKEND_DOMID STRATEGY...\n", argv[0]);
    return 2;
  }
  uint64_t base = strtoull(argv[1], NULL, 0);
  backend_domid = (uint16_t)strtoul(argv[2], NULL, 0);
  unsigned rounds = (unsigned)(argc - 3);
  if (rounds > 8 || (base & (PAGE - 1)) != 0) {
    printf("DOMU-FAIL mmio-setup base %#llx must be page aligned, at most 8 windows\n", (unsigned long long)base);
    return 2;
  }
  gnt_fd = open("/dev/xen/gntalloc", O_RDWR);
  int mem_fd = open("/dev/mem", O_RDWR | O_SYNC);
  if (gnt_fd < 0 || mem_fd < 0) {
    printf("DOMU-FAIL mmio-setup open gntalloc %d /dev/mem %d (errno %d)\n", gnt_fd, mem_fd, errno);
    return 1;
  }
  volatile uint8_t *windows = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mem_fd, (off_t)base);
  if (windows == MAP_FAILED) {
    printf("DOMU-FAIL mmio-setup mmap /dev/mem at %#llx (errno %d)\n", (unsigned long long)base, errno);
    return 1;
  }
  enable_grant_debug();
  for (unsigned i = 0; i < rounds; i++) {
    const char *round = argv[3 + i];
    struct device d;
    memset(&d, 0, sizeof d);
    d.regs = windows + 0x200u * i;
    if (grant_alloc(&d.ring, 1) != 0) {
      fail(round, "gntalloc ring failed (errno %d)", errno);
      continue;
    }
    uint64_t start = now_ns();
    if (strcmp(round, "persistent-pool") == 0)
      round_pool(&d, round);
    else
      round_per_request(&d, round);
    wr(&d, R_STATUS, 0);
    /* The reset unmapped the ring: ending its access must not be deferred either. */
    unsigned before = deferred();
    grant_revoke(&d.ring);
    unsigned ring_deferred = deferred() - before;
    if (ring_deferred) fail(round, "the ring's revocation was deferred after the reset");
    printf("DOMU-NOTE mmio-%s round took %llu ms\n", round, (unsigned long long)((now_ns() - start) / 1000000));
  }
  printf("DOMU-MMIO-DONE failures=%d\n", failures);
  return failures ? 1 : 0;
}

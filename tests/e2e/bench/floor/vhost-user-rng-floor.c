/*
 * The floor of an out-of-process vhost-user rng backend, for the rng benchmark only.
 *
 * A single-threaded C backend with nothing between the kick and the call: one epoll loop,
 * the split ring read in place, 64-byte requests served from a 64 KiB getrandom() pool (as
 * xvio's OS source does), the same ring features as xvio's rng (VERSION_1, EVENT_IDX,
 * INDIRECT_DESC). It trusts its frontend and its guest completely: no bounds checks, no
 * NEEDS_RESET, no reconnect, one connection. It is what any vhost-user rng backend costs
 * at the least on this machine: the process hop itself (kick eventfd -> backend -> call
 * eventfd), which QEMU's built-in virtio-rng-pci does not have. It is not a device: never
 * point a guest you do not own at it.
 *
 *   cc -O2 -o vhost-user-rng-floor vhost-user-rng-floor.c
 *   ./vhost-user-rng-floor /path/to.sock      (listens; QEMU dials with -chardev socket,path=...)
 *
 * Prints FLOOR-READY when listening and, at exit (the frontend hangs up or SIGTERM), one line
 * "floor: {"requests":N,"kicks":N,"calls":N}".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum {
  GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, RESET_OWNER = 4, SET_MEM_TABLE = 5,
  SET_VRING_NUM = 8, SET_VRING_ADDR = 9, SET_VRING_BASE = 10, GET_VRING_BASE = 11,
  SET_VRING_KICK = 12, SET_VRING_CALL = 13, SET_VRING_ERR = 14, GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16, GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18,
};
#define FLAG_VERSION 0x1u
#define FLAG_REPLY 0x4u
#define VRING_NOFD 0x100u
#define F_INDIRECT_DESC (1ull << 28)
#define F_EVENT_IDX (1ull << 29)
#define F_PROTOCOL_FEATURES (1ull << 30)
#define F_VERSION_1 (1ull << 32)
#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define DESC_F_INDIRECT 4

struct header { uint32_t request, flags, size; } __attribute__((packed));
struct region { uint64_t gpa, size, uaddr, offset; };
struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };

static struct { uint64_t gpa, size, uaddr; uint8_t *host; size_t maplen; } regions[8];
static unsigned nregions;
static struct {
  unsigned num;
  struct desc *desc;
  volatile uint16_t *avail; /* flags, idx, ring[num], used_event */
  volatile uint16_t *used;  /* flags, idx, then {u32 id, u32 len}[num], avail_event */
  uint16_t last_avail, used_idx;
  int kick, call, enabled, started;
} vq = { .kick = -1, .call = -1 };
static uint64_t features;
static uint8_t pool[65536];
static size_t pool_used = sizeof pool;
static unsigned long requests, kicks, calls;
static int epfd;
static volatile sig_atomic_t stop;

static void *uva(uint64_t a) {
  for (unsigned i = 0; i < nregions; i++)
    if (a >= regions[i].uaddr && a < regions[i].uaddr + regions[i].size) return regions[i].host + (a - regions[i].uaddr);
  return NULL;
}
static void *gpa(uint64_t a) {
  for (unsigned i = 0; i < nregions; i++)
    if (a >= regions[i].gpa && a < regions[i].gpa + regions[i].size) return regions[i].host + (a - regions[i].gpa);
  return NULL;
}

static void fill(uint8_t *to, uint32_t len) {
  while (len > 0) {
    if (pool_used == sizeof pool) {
      if (getrandom(pool, sizeof pool, 0) != (ssize_t)sizeof pool) abort();
      pool_used = 0;
    }
    size_t n = sizeof pool - pool_used < len ? sizeof pool - pool_used : len;
    memcpy(to, pool + pool_used, n);
    pool_used += n, to += n, len -= n;
  }
}

static uint32_t serve_chain(uint16_t head) {
  struct desc *table = vq.desc;
  unsigned size = vq.num, i = head;
  uint32_t written = 0;
  if (table[i].flags & DESC_F_INDIRECT) {
    table = gpa(table[i].addr), size = table ? vq.desc[head].len / sizeof *table : 0, i = 0;
    if (!table) return 0;
  }
  for (unsigned n = 0; n < size; n++) {
    struct desc d = table[i];
    if (d.flags & DESC_F_WRITE) {
      uint8_t *to = gpa(d.addr);
      if (to) fill(to, d.len), written += d.len;
    }
    if (!(d.flags & DESC_F_NEXT)) break;
    i = d.next;
  }
  return written;
}

static void serve(void) {
  uint16_t old = vq.used_idx;
  for (;;) {
    uint16_t avail_idx = __atomic_load_n(&vq.avail[1], __ATOMIC_ACQUIRE);
    while (vq.last_avail != avail_idx) {
      uint16_t head = vq.avail[2 + vq.last_avail % vq.num];
      uint32_t len = serve_chain(head);
      volatile uint32_t *elem = (volatile uint32_t *)(vq.used + 2) + 2 * (vq.used_idx % vq.num);
      elem[0] = head, elem[1] = len;
      vq.last_avail++, vq.used_idx++, requests++;
    }
    __atomic_store_n(&vq.used[1], vq.used_idx, __ATOMIC_RELEASE);
    if (!(features & F_EVENT_IDX)) break;
    /* avail_event: kick me when you publish past what I have seen; then look once more. */
    *(volatile uint16_t *)((volatile uint32_t *)(vq.used + 2) + 2 * vq.num) = vq.last_avail;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&vq.avail[1], __ATOMIC_ACQUIRE) == vq.last_avail) break;
  }
  if (vq.used_idx == old || vq.call < 0) return;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  int notify;
  if (features & F_EVENT_IDX) {
    uint16_t used_event = vq.avail[2 + vq.num];
    notify = (uint16_t)(vq.used_idx - used_event - 1) < (uint16_t)(vq.used_idx - old);
  } else {
    notify = !(vq.avail[0] & 1);
  }
  if (notify) {
    uint64_t one = 1;
    if (write(vq.call, &one, 8) == 8) calls++;
  }
}

static void start_if_ready(void) {
  if (vq.started || vq.kick < 0 || !vq.desc || !vq.enabled) return;
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = vq.kick };
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, vq.kick, &ev) == 0) vq.started = 1;
}

static void stop_ring(void) {
  if (vq.started) epoll_ctl(epfd, EPOLL_CTL_DEL, vq.kick, NULL);
  vq.started = 0;
}

static int reply(int fd, struct header *h, const void *body, uint32_t size) {
  uint8_t out[12 + 64];
  struct header r = { h->request, FLAG_VERSION | FLAG_REPLY, size };
  memcpy(out, &r, 12), memcpy(out + 12, body, size);
  return write(fd, out, 12 + size) == (ssize_t)(12 + size) ? 0 : -1;
}

/* One message from the frontend; -1 ends the connection. */
static int message(int fd) {
  struct header h;
  uint8_t body[256];
  int fds[8], nfds = 0;
  char control[CMSG_SPACE(sizeof fds)];
  struct iovec iov = { &h, sizeof h };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
  ssize_t got = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  if (got != sizeof h) return -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      memcpy(fds, CMSG_DATA(c), nfds * sizeof(int));
    }
  if (h.size > sizeof body || (h.size && read(fd, body, h.size) != (ssize_t)h.size)) return -1;
  uint64_t u64 = 0;
  if (h.size >= 8) memcpy(&u64, body, 8);
  switch (h.request) {
  case GET_FEATURES: {
    uint64_t offered = F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC | F_PROTOCOL_FEATURES;
    return reply(fd, &h, &offered, 8);
  }
  case SET_FEATURES: features = u64; break;
  case GET_PROTOCOL_FEATURES: { uint64_t none = 0; return reply(fd, &h, &none, 8); }
  case GET_QUEUE_NUM: { uint64_t one = 1; return reply(fd, &h, &one, 8); }
  case SET_MEM_TABLE: {
    uint32_t n;
    memcpy(&n, body, 4);
    if (n > 8 || (int)n != nfds) return -1;
    for (unsigned i = 0; i < nregions; i++) munmap(regions[i].host, regions[i].maplen);
    nregions = n;
    for (unsigned i = 0; i < n; i++) {
      struct region r;
      memcpy(&r, body + 8 + i * sizeof r, sizeof r);
      size_t len = r.size + r.offset;
      uint8_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0);
      close(fds[i]);
      if (map == MAP_FAILED) return -1;
      regions[i].gpa = r.gpa, regions[i].size = r.size, regions[i].uaddr = r.uaddr;
      regions[i].host = map + r.offset, regions[i].maplen = len;
    }
    return 0;
  }
  case SET_VRING_NUM: memcpy(&vq.num, body + 4, 4); break;
  case SET_VRING_ADDR: {
    uint64_t a[4];
    memcpy(a, body + 8, sizeof a); /* desc, used, avail, log */
    vq.desc = uva(a[0]), vq.used = uva(a[1]), vq.avail = uva(a[2]);
    if (!vq.desc || !vq.used || !vq.avail) return -1;
    vq.used_idx = vq.used[1];
    break;
  }
  case SET_VRING_BASE: { uint32_t base; memcpy(&base, body + 4, 4); vq.last_avail = (uint16_t)base; break; }
  case GET_VRING_BASE: {
    stop_ring();
    uint32_t state[2] = { 0, vq.last_avail };
    return reply(fd, &h, state, 8);
  }
  case SET_VRING_KICK: case SET_VRING_CALL: case SET_VRING_ERR: {
    int newfd = (u64 & VRING_NOFD) || nfds < 1 ? -1 : fds[0];
    if (h.request == SET_VRING_ERR) { if (newfd >= 0) close(newfd); break; }
    int *slot = h.request == SET_VRING_KICK ? &vq.kick : &vq.call;
    if (h.request == SET_VRING_KICK) stop_ring();
    if (*slot >= 0) close(*slot);
    *slot = newfd;
    if (h.request == SET_VRING_KICK && !(features & F_PROTOCOL_FEATURES)) vq.enabled = 1;
    break;
  }
  case SET_VRING_ENABLE: { uint32_t on; memcpy(&on, body + 4, 4); vq.enabled = on; if (!on) stop_ring(); break; }
  default:
    for (int i = 0; i < nfds; i++) close(fds[i]);
    break;
  }
  start_if_ready();
  return 0;
}

static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: %s SOCKET\n", argv[0]); return 2; }
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (strlen(argv[1]) >= sizeof addr.sun_path) { fprintf(stderr, "socket path too long\n"); return 2; }
  strcpy(addr.sun_path, argv[1]);
  unlink(argv[1]);
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1)) { perror("listen"); return 1; }
  struct sigaction sa = { .sa_handler = on_signal };
  sigaction(SIGTERM, &sa, NULL), sigaction(SIGINT, &sa, NULL);
  printf("FLOOR-READY\n");
  fflush(stdout);
  int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  if (conn < 0) { perror("accept"); return 1; }
  epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = conn };
  epoll_ctl(epfd, EPOLL_CTL_ADD, conn, &ev);
  while (!stop) {
    struct epoll_event events[4];
    int n = epoll_wait(epfd, events, 4, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    int done = 0;
    for (int i = 0; i < n; i++) {
      if (events[i].data.fd == conn) {
        if (message(conn) < 0) done = 1;
      } else if (vq.started && events[i].data.fd == vq.kick) {
        uint64_t count;
        if (read(vq.kick, &count, 8) == 8) kicks++;
        serve();
      }
    }
    if (done) break;
  }
  printf("floor: {\"requests\":%lu,\"kicks\":%lu,\"calls\":%lu}\n", requests, kicks, calls);
  unlink(argv[1]);
  return 0;
}

/* rawdump: the floor of scripts/bench. Dumps the current network namespace's whole conntrack
 * table over ctnetlink and walks only the netlink message headers: no attribute is parsed,
 * nothing is kept. Any dump-based count (ctguard top, count, doctor) does at least this work,
 * so its time is the reference the bench's "x floor" ratios divide by.
 *
 * Usage: rawdump [RECV_BUFFER_BYTES]   (default 131072; at least 32768)
 * Prints: entries=N bytes=N recvs=N secs=S   (and exits 0), or one line on stderr and exits 1.
 * Read-only: it sends one IPCTNL_MSG_CT_GET dump request and nothing else.
 *
 * Built by scripts/bench with `gcc -O2`; needs only the uapi headers of linux-libc-dev. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>

/* The kernel's receive buffer for the dump, as conntrack-tools and ctguard ask for. A dump is
 * flow-controlled (the kernel fills the next skb only when we have read the last), so this only
 * has to hold what is queued between two recv calls. */
#define SOCK_RCVBUF (8 << 20)
/* netlink_dump sizes each dump skb from the reader's buffer, up to 32 KiB: a smaller buffer
 * would truncate messages, a larger one changes nothing. */
#define DUMP_SKB_MAX 32768
/* A dump that sends nothing for this long is stuck: fail instead of waiting for ever. */
#define RECV_TIMEOUT_S 30

static int fail(const char *what) {
  fprintf(stderr, "rawdump: %s: %s\n", what, strerror(errno));
  return 1;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  long bufsz = 128 << 10;
  if (argc > 2) {
    fprintf(stderr, "usage: rawdump [RECV_BUFFER_BYTES]\n");
    return 2;
  }
  if (argc == 2) {
    char *end;
    errno = 0;
    bufsz = strtol(argv[1], &end, 10);
    if (errno || *end || end == argv[1] || bufsz < DUMP_SKB_MAX || bufsz > INT_MAX) {
      fprintf(stderr, "rawdump: RECV_BUFFER_BYTES must be a number from %d to %d, not '%s'\n",
              DUMP_SKB_MAX, INT_MAX, argv[1]);
      return 2;
    }
  }

  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return fail("socket(NETLINK_NETFILTER)");
  int rb = SOCK_RCVBUF;
  /* SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN; without it, ask for
   * what rmem_max allows. */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rb, sizeof rb) < 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb) < 0)
    return fail("setsockopt(SO_RCVBUF)");
  struct timeval tv = {.tv_sec = RECV_TIMEOUT_S};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
    return fail("setsockopt(SO_RCVTIMEO)");

  /* IPCTNL_MSG_CT_GET with NLM_F_DUMP: `conntrack -L`'s request. AF_UNSPEC asks for every
   * family (the kernel filters by nfgen_family otherwise); no attributes, so no filter. */
  struct {
    struct nlmsghdr n;
    struct nfgenmsg g;
  } req;
  memset(&req, 0, sizeof req);
  req.n.nlmsg_len = sizeof req;
  req.n.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
  req.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.n.nlmsg_seq = 1;
  req.g.nfgen_family = AF_UNSPEC;
  req.g.version = NFNETLINK_V0;
  req.g.res_id = 0;

  char *buf = malloc(bufsz);
  if (!buf) return fail("malloc");
  const unsigned entry_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
  long entries = 0, bytes = 0, recvs = 0, interrupted = 0;
  int done = 0;

  double started = now();
  if (send(fd, &req, sizeof req, 0) != (ssize_t)sizeof req) return fail("send");
  while (!done) {
    struct iovec iov = {.iov_base = buf, .iov_len = bufsz};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n = recvmsg(fd, &mh, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      fprintf(stderr, "rawdump: the dump sent nothing for %d s\n", RECV_TIMEOUT_S);
      return 1;
    }
    if (n < 0) return fail("recv"); /* ENOBUFS: the kernel dropped part of the reply */
    if (n == 0) {
      fprintf(stderr, "rawdump: the socket closed before the dump ended\n");
      return 1;
    }
    if (mh.msg_flags & MSG_TRUNC) {
      fprintf(stderr, "rawdump: a message did not fit in %ld bytes\n", bufsz);
      return 1;
    }
    recvs++;
    bytes += n;
    int left = (int)n;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        done = 1;
        break;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = NLMSG_DATA(h);
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof *e) || e->error == 0) continue; /* an ACK */
        errno = -e->error;
        return fail("the kernel refused the dump (is nf_conntrack_netlink loaded?)");
      }
      /* Set when the table changed under the dump so that it may have missed or repeated
       * entries: the count is then approximate, the timing still honest. */
      if (h->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = 1;
      if (h->nlmsg_type == entry_type) entries++;
    }
  }
  double secs = now() - started;

  printf("entries=%ld bytes=%ld recvs=%ld secs=%.3f\n", entries, bytes, recvs, secs);
  if (interrupted) fprintf(stderr, "rawdump: note: the kernel flagged the dump as interrupted\n");
  free(buf);
  close(fd);
  return 0;
}

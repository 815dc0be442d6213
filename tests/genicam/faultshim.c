/* FaultShim.cti: a GenTL proxy producer for tests. It forwards every GenTL call to a
 * real producer (GC_SHIM_TARGET, e.g. TLSimu.cti) and, on command, fails the calls a
 * cable pull fails, or relabels the pixel format of delivered buffers.
 *
 * Control: GC_SHIM_CTL names a file of at least 64 bytes, mapped shared and read on
 * every call, so a test switches faults while a stream runs. Text layout:
 *   "<faults>|<pixel format hex>|<width divisor>"   e.g. "RSBE|0|1", "|1100003|2"
 * faults: R remote register access fails (GC_ERR_IO)
 *         S DSStartAcquisition fails (GC_ERR_IO)
 *         B no buffer is delivered (EventGetData waits, then GC_ERR_TIMEOUT)
 *         E the device vanishes from enumeration, IFOpenDevice fails
 * A cable pull is "RSBE". A non-zero pixel format replaces BUFFER_INFO_PIXELFORMAT
 * and BUFFER_INFO_WIDTH is divided by the divisor (Mono8 bytes read as 16-bit pixels).
 *
 * Every GenTL function takes at most 8 pointer-sized or smaller integer arguments,
 * all passed in registers or stack slots of one word (x86_64 and aarch64), so one
 * 8-argument forwarder fits all. The exported names come from forwards.h, made at
 * build time from the target's dynamic symbols: the proxy exports exactly what the
 * target does, so the GenTL consumer sees the same set of functions.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef uintptr_t A;
typedef int32_t (*fn8)(A, A, A, A, A, A, A, A);

#define GC_ERR_SUCCESS 0
#define GC_ERR_NOT_IMPLEMENTED -1003
#define GC_ERR_INVALID_INDEX -1009
#define GC_ERR_IO -1010
#define GC_ERR_TIMEOUT -1011
#define GC_ERR_NOT_AVAILABLE -1014
#define BUFFER_INFO_WIDTH 10
#define BUFFER_INFO_PIXELFORMAT 20
#define CTL_SIZE 64
#define PASS 1 /* inject(): forward the call */

static void *lib;
static const volatile char *ctl;
static A remote[256]; /* port handles of remote devices (from DevGetPort) */
static unsigned nremote;

static void init(void) {
  if (lib) return;
  const char *t = getenv("GC_SHIM_TARGET");
  if (!t || !(lib = dlopen(t, RTLD_NOW | RTLD_LOCAL))) {
    fprintf(stderr, "faultshim: cannot load %s: %s\n", t ? t : "(GC_SHIM_TARGET unset)", dlerror());
    abort();
  }
  const char *c = getenv("GC_SHIM_CTL");
  if (c) {
    int fd = open(c, O_RDONLY);
    if (fd >= 0) {
      void *m = mmap(0, CTL_SIZE, PROT_READ, MAP_SHARED, fd, 0);
      if (m != MAP_FAILED) ctl = m;
      close(fd);
    }
  }
}

struct state { char faults[CTL_SIZE + 1]; uint64_t pixfmt; unsigned long div; };

static struct state read_ctl(void) {
  struct state s = {{0}, 0, 1};
  if (!ctl) return s;
  char buf[CTL_SIZE + 1];
  for (int i = 0; i < CTL_SIZE; i++) buf[i] = ctl[i];
  buf[CTL_SIZE] = 0;
  char *bar = strchr(buf, '|');
  if (bar) *bar = 0;
  memcpy(s.faults, buf, sizeof buf); /* buf is NUL-terminated within its CTL_SIZE + 1 bytes */
  if (!bar) return s;
  char *end;
  s.pixfmt = strtoull(bar + 1, &end, 16);
  if (*end == '|') s.div = strtoul(end + 1, 0, 10);
  if (s.div == 0) s.div = 1;
  return s;
}

static int is_remote(A port) {
  unsigned n = nremote < 256 ? nremote : 256;
  for (unsigned i = 0; i < n; i++) if (remote[i] == port) return 1;
  return 0;
}

/* Before the call: PASS to forward, else the error to return instead. */
static int32_t inject(const char *n, A a, A b, A c, A d) {
  struct state s = read_ctl();
  if (strchr(s.faults, 'B') && !strcmp(n, "EventGetData")) {
    uint64_t ms = d > 200 ? 200 : d; /* d: timeout in ms */
    usleep(ms * 1000);
    return GC_ERR_TIMEOUT;
  }
  if (strchr(s.faults, 'R') && (!strncmp(n, "GCReadPort", 10) || !strncmp(n, "GCWritePort", 11)) && is_remote(a))
    return GC_ERR_IO; /* TL, interface and host-side ports keep working, as on a real cable pull */
  if (strchr(s.faults, 'E')) {
    if (!strcmp(n, "IFGetNumDevices")) { *(uint32_t *)b = 0; return GC_ERR_SUCCESS; }
    if (!strcmp(n, "IFGetDeviceID")) return GC_ERR_INVALID_INDEX;
    if (!strcmp(n, "IFOpenDevice")) return GC_ERR_NOT_AVAILABLE;
  }
  if (strchr(s.faults, 'S') && !strcmp(n, "DSStartAcquisition")) return GC_ERR_IO;
  (void)c;
  return PASS;
}

/* After a successful call. */
static void observe(const char *n, A a, A b, A c, A d, A e, A f) {
  (void)a; (void)d;
  if (!strcmp(n, "DevGetPort")) { remote[nremote++ % 256] = *(A *)b; return; }
  if (!strcmp(n, "DSGetBufferInfo") && e) {
    struct state s = read_ctl();
    if (!s.pixfmt) return;
    size_t size = f ? *(size_t *)f : 0;
    if (c == BUFFER_INFO_PIXELFORMAT && size >= sizeof(uint64_t)) *(uint64_t *)e = s.pixfmt;
    if (c == BUFFER_INFO_WIDTH && size >= sizeof(size_t)) *(size_t *)e /= s.div;
  }
}

#define FWD(name)                                                            \
  int32_t name(A a, A b, A c, A d, A e, A f, A g, A h) {                     \
    static fn8 p;                                                            \
    init();                                                                  \
    if (!p) p = (fn8)dlsym(lib, #name);                                      \
    if (!p) return GC_ERR_NOT_IMPLEMENTED;                                   \
    int32_t r = inject(#name, a, b, c, d);                                   \
    if (r != PASS) return r;                                                 \
    r = p(a, b, c, d, e, f, g, h);                                           \
    if (r == GC_ERR_SUCCESS) observe(#name, a, b, c, d, e, f);               \
    return r;                                                                \
  }

#include "forwards.h"

/* core_pingpong.c: how long one cache line takes to go from one core to
 * another and back, on the first two CPUs this process may run on.
 *
 * A thread on each CPU; they pass a counter back and forth through one
 * 64-byte line, each waiting for the other's increment. The time of a
 * round trip is two transfers of the line between the cores' caches: the
 * latency every cross-core handoff of a training step pays (the pool's
 * claim and done words, a product's rows written on one core and read on
 * the other). On the development machine (a virtual machine) it is bimodal
 * from one minute to the next, ~130 or ~470 ns, as the host places the two
 * virtual CPUs, and the MLP step's speed follows it (docs/performance.md):
 * bench/peak.sh prints it with each round.
 *
 *   build-rel/bench/core_pingpong [ROUND_TRIPS]   (default 100000)
 *   CORE_PINGPONG cpus=0,1 round_trip_ns=131.2 (median of 5 runs ...)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Alignas(64) atomic_long line;

typedef struct side {
  int cpu;
  long n;
} side;

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* The other side: answers each odd value v with v + 1. */
static void *answer(void *arg) {
  const side *s = arg;
  pin(s->cpu);
  for (long i = 0; i < s->n; i++) {
    while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 1)
      ;
    atomic_store_explicit(&line, 2 * i + 2, memory_order_release);
  }
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One run of n round trips between cpus a and b: ns per round trip. */
static double run(int a, int b, long n) {
  atomic_store(&line, 0);
  side other = {b, n};
  pthread_t t;
  if (pthread_create(&t, NULL, answer, &other)) return -1;
  pin(a);
  double t0 = now();
  for (long i = 0; i < n; i++) {
    atomic_store_explicit(&line, 2 * i + 1, memory_order_release);
    while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 2)
      ;
  }
  double t1 = now();
  pthread_join(t, NULL);
  return 1e9 * (t1 - t0) / (double)n;
}

static int by_value(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  if (n < 1) {
    fprintf(stderr, "usage: core_pingpong [ROUND_TRIPS]\n");
    return 2;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set)) {
    perror("core_pingpong: sched_getaffinity");
    return 1;
  }
  int cpus[2], found = 0;
  for (int c = 0; c < CPU_SETSIZE && found < 2; c++)
    if (CPU_ISSET(c, &set)) cpus[found++] = c;
  if (found < 2) {
    fprintf(stderr, "core_pingpong: needs two CPUs, has %d\n", found);
    return 1;
  }
  double t[5];
  for (int r = 0; r < 5; r++)
    if ((t[r] = run(cpus[0], cpus[1], n / 5 + 1)) < 0) {
      fprintf(stderr, "core_pingpong: cannot start a thread\n");
      return 1;
    }
  qsort(t, 5, sizeof t[0], by_value);
  printf("CORE_PINGPONG cpus=%d,%d round_trip_ns=%.1f (median of 5 runs of %ld; %.1f-%.1f)\n",
         cpus[0], cpus[1], t[2], n / 5 + 1, t[0], t[4]);
  return 0;
}

/* pool.c: the thread pool that generated kernels split their work over.
 *
 * nnc_rt_pool_create starts nthreads-1 persistent workers; the thread that
 * calls nnc_rt_parallel is the remaining one and runs chunk 0 itself. A
 * training step calls nnc_rt_parallel dozens of times, so a call must cost a
 * few microseconds, not a futex round trip per worker: the caller publishes
 * the job by bumping a generation counter, and workers that finished the
 * previous job spin on that counter for a while (NNC_RT_SPIN_S) before they
 * fall asleep on a condition variable (at once when the pool has more
 * threads than the machine has cores). The caller likewise spins on the
 * count of workers still busy before it sleeps. Sleepers are counted, so the
 * mutex and condition variables are touched only when someone sleeps (the
 * counter/flag pairs are a Dekker handshake, hence seq_cst atomics).
 *
 * Chunks 1.. are claimed, not assigned: whoever comes first (a worker, or
 * the caller once chunk 0 is done) takes the next one from an atomic
 * counter. On a machine whose cores are shared with other processes a
 * worker may not be scheduled for milliseconds; the caller then runs its
 * chunk instead of waiting. Which thread runs a chunk does not change its
 * bounds, so results stay the same.
 *
 * Invariants: one job is in flight at a time; every worker acknowledges
 * every job (even one with no chunk left for it), so the caller never
 * rewrites the job while a worker may still read it. Chunks are contiguous,
 * as many as threads (at most n), and depend only on n and the thread
 * count; chunk 0 runs on the caller. A call made
 * from inside a task runs inline. One pool serves one calling thread at a
 * time. Every worker sets FTZ/DAZ when it starts; so does the creator.
 */
#include "rt_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define NNC_RT_PAUSE() _mm_pause()
#else
#define NNC_RT_PAUSE() ((void)0)
#endif

enum { NNC_RT_MAX_THREADS = 1024 };
/* How long an idle thread spins before it sleeps: long enough to bridge the
 * gap between two kernels of a step and the batch gather between steps. */
static const double NNC_RT_SPIN_S = 200e-6;

struct nnc_rt_pool {
  int nthreads;  /* including the caller */
  double spin_s; /* NNC_RT_SPIN_S, or 0 when there are more threads than cores */
  pthread_t *workers;
  int nworkers_started;
  pthread_mutex_t mu;
  pthread_cond_t wake; /* workers sleep here waiting for a new generation */
  pthread_cond_t done; /* the caller sleeps here waiting for remaining == 0 */
  atomic_ulong generation;
  atomic_int remaining;  /* workers that have not yet acknowledged the job */
  atomic_int next_chunk; /* the next chunk to claim (1..nchunks-1) */
  atomic_int sleeping_workers;
  atomic_int caller_sleeping;
  atomic_int stop;
  /* The current job; written by the caller only while no worker reads it. */
  nnc_rt_task fn;
  void *arg;
  int64_t n;
  int nchunks;
};

typedef struct worker_start {
  nnc_rt_pool *pool;
  int index; /* 1..nthreads-1 */
} worker_start;

/* Set while this thread runs a task, so nested parallel calls run inline. */
static _Thread_local int in_task;

void nnc_rt_set_ftz_daz(void) {
#if defined(__x86_64__) || defined(__i386__)
  _mm_setcsr(_mm_getcsr() | 0x8040); /* bit 15 FTZ, bit 6 DAZ */
#elif defined(__aarch64__)
  uint64_t fpcr;
  __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
  fpcr |= UINT64_C(1) << 24; /* FZ */
  __asm__ volatile("msr fpcr, %0" : : "r"(fpcr));
#endif
}

/* Chunk c of k over [0, n): the first n % k chunks get one extra index. */
static void chunk_bounds(int64_t n, int k, int c, int64_t *begin, int64_t *end) {
  int64_t base = n / k, extra = n % k;
  *begin = c * base + (c < extra ? c : extra);
  *end = *begin + base + (c < extra ? 1 : 0);
}

static void run_chunk(nnc_rt_task fn, void *arg, int64_t n, int nchunks, int c) {
  int64_t begin, end;
  chunk_bounds(n, nchunks, c, &begin, &end);
  in_task = 1;
  fn(arg, begin, end);
  in_task = 0;
}

/* Runs chunks of the current job until none is left to claim. */
static void claim_chunks(nnc_rt_pool *pool) {
  for (;;) {
    int c = atomic_fetch_add(&pool->next_chunk, 1);
    if (c >= pool->nchunks) return;
    run_chunk(pool->fn, pool->arg, pool->n, pool->nchunks, c);
  }
}

/* Spins, then sleeps, until the generation moves past seen. */
static unsigned long wait_for_job(nnc_rt_pool *pool, unsigned long seen) {
  double deadline = nnc_rt_now() + pool->spin_s;
  for (int i = 1;; i++) {
    unsigned long g = atomic_load_explicit(&pool->generation, memory_order_acquire);
    if (g != seen) return g;
    NNC_RT_PAUSE();
    if (i % 64 == 0 && nnc_rt_now() > deadline) break;
  }
  pthread_mutex_lock(&pool->mu);
  atomic_fetch_add(&pool->sleeping_workers, 1);
  unsigned long g;
  while ((g = atomic_load(&pool->generation)) == seen)
    pthread_cond_wait(&pool->wake, &pool->mu);
  atomic_fetch_sub(&pool->sleeping_workers, 1);
  pthread_mutex_unlock(&pool->mu);
  return g;
}

static void *worker_main(void *p) {
  worker_start start = *(worker_start *)p;
  free(p);
  nnc_rt_pool *pool = start.pool;
  nnc_rt_set_ftz_daz();
  unsigned long seen = 0;
  for (;;) {
    seen = wait_for_job(pool, seen);
    if (atomic_load(&pool->stop)) break;
    claim_chunks(pool);
    /* After this decrement the job may be rewritten: touch nothing of it. */
    if (atomic_fetch_sub(&pool->remaining, 1) == 1 && atomic_load(&pool->caller_sleeping)) {
      pthread_mutex_lock(&pool->mu);
      pthread_cond_signal(&pool->done);
      pthread_mutex_unlock(&pool->mu);
    }
  }
  return NULL;
}

/* Wakes every worker for the job already written into pool. */
static void publish(nnc_rt_pool *pool) {
  atomic_store(&pool->remaining, pool->nthreads - 1);
  atomic_fetch_add(&pool->generation, 1);
  if (atomic_load(&pool->sleeping_workers) > 0) {
    pthread_mutex_lock(&pool->mu);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
  }
}

static void wait_for_workers(nnc_rt_pool *pool) {
  double deadline = nnc_rt_now() + pool->spin_s;
  for (int i = 1;; i++) {
    if (atomic_load_explicit(&pool->remaining, memory_order_acquire) == 0) return;
    NNC_RT_PAUSE();
    if (i % 64 == 0 && nnc_rt_now() > deadline) break;
  }
  pthread_mutex_lock(&pool->mu);
  atomic_store(&pool->caller_sleeping, 1);
  while (atomic_load(&pool->remaining) > 0)
    pthread_cond_wait(&pool->done, &pool->mu);
  atomic_store(&pool->caller_sleeping, 0);
  pthread_mutex_unlock(&pool->mu);
}

static void stop_workers(nnc_rt_pool *pool) {
  atomic_store(&pool->stop, 1);
  atomic_fetch_add(&pool->generation, 1);
  pthread_mutex_lock(&pool->mu);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->mu);
  for (int i = 0; i < pool->nworkers_started; i++)
    pthread_join(pool->workers[i], NULL);
}

static void free_pool(nnc_rt_pool *pool) {
  pthread_cond_destroy(&pool->done);
  pthread_cond_destroy(&pool->wake);
  pthread_mutex_destroy(&pool->mu);
  free(pool->workers);
  free(pool);
}

nnc_rt_pool *nnc_rt_pool_create(int nthreads, nnc_rt_error *err) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (nthreads == 0) {
    nthreads = cores < 1 ? 1 : cores > NNC_RT_MAX_THREADS ? NNC_RT_MAX_THREADS : (int)cores;
  }
  if (nthreads < 0 || nthreads > NNC_RT_MAX_THREADS) {
    nnc_rt_fail(err, "thread count %d out of range (1..%d, or 0 for all cores)", nthreads,
                NNC_RT_MAX_THREADS);
    return NULL;
  }
  nnc_rt_pool *pool = calloc(1, sizeof *pool);
  pthread_t *workers = calloc((size_t)nthreads, sizeof *workers);
  if (!pool || !workers) {
    free(pool);
    free(workers);
    nnc_rt_fail(err, "out of memory creating a pool of %d threads", nthreads);
    return NULL;
  }
  pool->nthreads = nthreads;
  /* Spinning threads that share a core only delay the one with work. */
  pool->spin_s = nthreads <= cores ? NNC_RT_SPIN_S : 0;
  pool->workers = workers;
  pthread_mutex_init(&pool->mu, NULL);
  pthread_cond_init(&pool->wake, NULL);
  pthread_cond_init(&pool->done, NULL);
  nnc_rt_set_ftz_daz();
  for (int i = 1; i < nthreads; i++) {
    worker_start *start = malloc(sizeof *start);
    int rc = start ? 0 : ENOMEM;
    if (start) {
      *start = (worker_start){pool, i};
      rc = pthread_create(&pool->workers[i - 1], NULL, worker_main, start);
      if (rc) free(start);
    }
    if (rc) {
      stop_workers(pool);
      free_pool(pool);
      nnc_rt_fail(err, "cannot start worker thread %d of %d: %s", i, nthreads - 1, strerror(rc));
      return NULL;
    }
    pool->nworkers_started++;
  }
  return pool;
}

void nnc_rt_pool_destroy(nnc_rt_pool *pool) {
  if (!pool) return;
  stop_workers(pool);
  free_pool(pool);
}

int nnc_rt_pool_threads(const nnc_rt_pool *pool) {
  return pool ? pool->nthreads : 1;
}

void nnc_rt_parallel(nnc_rt_pool *pool, nnc_rt_task fn, void *arg, int64_t n) {
  if (n <= 0) return;
  if (!pool || pool->nthreads == 1 || n == 1 || in_task) {
    int nested = in_task;
    in_task = 1;
    fn(arg, 0, n);
    in_task = nested;
    return;
  }
  pool->fn = fn;
  pool->arg = arg;
  pool->n = n;
  pool->nchunks = n < pool->nthreads ? (int)n : pool->nthreads;
  atomic_store(&pool->next_chunk, 1);
  publish(pool);
  run_chunk(fn, arg, n, pool->nchunks, 0);
  claim_chunks(pool);
  wait_for_workers(pool);
}

/* pool.c: the thread pool that generated kernels split their work over.
 *
 * nnc_rt_pool_create starts nthreads-1 persistent workers; the thread that
 * calls nnc_rt_parallel is the remaining one. A training step calls
 * nnc_rt_parallel dozens of times, so a call must cost a few microseconds,
 * not a futex round trip per worker.
 *
 * A job is [0, n) cut into nchunks contiguous chunks (as many as threads,
 * at most n; bounds depend only on n and the thread count, so results do
 * not depend on which thread runs a chunk). Chunk 0 runs on the caller.
 * Chunks 1.. are claimed through one atomic word, `claim`, that packs the
 * job's generation, the next chunk to hand out and the chunk count: a
 * thread claims with a compare-and-swap that only succeeds for the current
 * generation, so a worker that wakes late cannot take a chunk of a job that
 * is gone. The caller, once chunk 0 is done, claims chunks too, and then
 * waits only until every claimed chunk has finished (`done`). A worker the
 * scheduler has not run — common when the machine's cores are shared with
 * other processes — therefore costs nothing: the caller does its chunk.
 *
 * Idle workers spin on the claim word for a while (NNC_RT_SPIN_S) before
 * they sleep on a condition variable (at once when the pool has more
 * threads than the machine has cores); the caller likewise spins on `done`
 * before it sleeps. Sleepers are counted, so the mutex and condition
 * variables are touched only when someone sleeps (the counter/flag pairs
 * are a Dekker handshake, hence seq_cst atomics).
 *
 * Invariants: one job is in flight at a time; the job's fields (fn, arg, n)
 * are written only while no chunk of the previous job is claimed and
 * unfinished, and read by a worker only after it claimed a chunk of the
 * current generation. A call made from inside a task runs inline. One pool
 * serves one calling thread at a time. Every worker sets FTZ/DAZ when it
 * starts; so does the creator.
 */
#include "rt_internal.h"

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

/* The claim word: generation in bits 32..63, next chunk in 16..31, chunk
 * count in 0..15 (chunks <= NNC_RT_MAX_THREADS < 2^16). */
#define CLAIM(gen, next, count) (((uint64_t)(gen) << 32) | ((uint64_t)(next) << 16) | (count))
#define CLAIM_GEN(w)            ((uint32_t)((w) >> 32))
#define CLAIM_NEXT(w)           ((int)(((w) >> 16) & 0xffff))
#define CLAIM_COUNT(w)          ((int)((w)&0xffff))

struct nnc_rt_pool {
  int nthreads;  /* including the caller */
  double spin_s; /* NNC_RT_SPIN_S, or 0 when there are more threads than cores */
  pthread_t *workers;
  int nworkers_started;
  pthread_mutex_t mu;
  pthread_cond_t wake;    /* workers sleep here waiting for a new generation */
  pthread_cond_t done_cv; /* the caller sleeps here waiting for claimed chunks */
  _Atomic uint64_t claim;
  atomic_int done; /* chunks 1.. of the current job finished by workers */
  atomic_int sleeping_workers;
  atomic_int caller_sleeping;
  atomic_int stop;
  uint32_t gen; /* the caller's copy of the current generation */
  /* The current job (see the invariants above). */
  nnc_rt_task fn;
  void *arg;
  int64_t n;
};

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

/* Claims the next chunk of generation gen; -1 when none is left (or the
 * job is no longer current). *count receives the job's chunk count. */
static int claim_chunk(nnc_rt_pool *pool, uint32_t gen, int *count) {
  uint64_t w = atomic_load(&pool->claim);
  for (;;) {
    if (CLAIM_GEN(w) != gen || CLAIM_NEXT(w) >= CLAIM_COUNT(w)) return -1;
    if (atomic_compare_exchange_weak(&pool->claim, &w, w + ((uint64_t)1 << 16))) {
      *count = CLAIM_COUNT(w);
      return CLAIM_NEXT(w);
    }
  }
}

/* Spins, then sleeps, until the claim word's generation moves past seen. */
static uint32_t wait_for_job(nnc_rt_pool *pool, uint32_t seen) {
  double deadline = nnc_rt_now() + pool->spin_s;
  for (int i = 1;; i++) {
    uint32_t g = CLAIM_GEN(atomic_load_explicit(&pool->claim, memory_order_acquire));
    if (g != seen) return g;
    NNC_RT_PAUSE();
    if (i % 64 == 0 && nnc_rt_now() > deadline) break;
  }
  pthread_mutex_lock(&pool->mu);
  atomic_fetch_add(&pool->sleeping_workers, 1);
  uint32_t g;
  while ((g = CLAIM_GEN(atomic_load(&pool->claim))) == seen)
    pthread_cond_wait(&pool->wake, &pool->mu);
  atomic_fetch_sub(&pool->sleeping_workers, 1);
  pthread_mutex_unlock(&pool->mu);
  return g;
}

/* Workers are interchangeable: any of them may claim any chunk 1.. */
static void *worker_main(void *p) {
  nnc_rt_pool *pool = p;
  nnc_rt_set_ftz_daz();
  uint32_t seen = 0;
  for (;;) {
    seen = wait_for_job(pool, seen);
    if (atomic_load(&pool->stop)) break;
    int c, count;
    while ((c = claim_chunk(pool, seen, &count)) >= 0) {
      /* The claim holds the job still until `done` counts this chunk. */
      run_chunk(pool->fn, pool->arg, pool->n, count, c);
      /* The caller re-checks its target under the mutex: wake it for any
       * finished chunk once it sleeps (rare: only after its spin). */
      atomic_fetch_add(&pool->done, 1);
      if (atomic_load(&pool->caller_sleeping)) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_signal(&pool->done_cv);
        pthread_mutex_unlock(&pool->mu);
      }
    }
  }
  return NULL;
}

/* Waits until workers have finished every chunk they claimed. */
static void wait_for_workers(nnc_rt_pool *pool, int expect) {
  double deadline = nnc_rt_now() + pool->spin_s;
  for (int i = 1;; i++) {
    if (atomic_load_explicit(&pool->done, memory_order_acquire) == expect) return;
    NNC_RT_PAUSE();
    if (i % 64 == 0 && nnc_rt_now() > deadline) break;
  }
  pthread_mutex_lock(&pool->mu);
  atomic_store(&pool->caller_sleeping, 1);
  while (atomic_load(&pool->done) != expect)
    pthread_cond_wait(&pool->done_cv, &pool->mu);
  atomic_store(&pool->caller_sleeping, 0);
  pthread_mutex_unlock(&pool->mu);
}

static void stop_workers(nnc_rt_pool *pool) {
  atomic_store(&pool->stop, 1);
  atomic_store(&pool->claim, CLAIM(++pool->gen, 0, 0));
  pthread_mutex_lock(&pool->mu);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->mu);
  for (int i = 0; i < pool->nworkers_started; i++)
    pthread_join(pool->workers[i], NULL);
}

static void free_pool(nnc_rt_pool *pool) {
  pthread_cond_destroy(&pool->done_cv);
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
  pthread_cond_init(&pool->done_cv, NULL);
  nnc_rt_set_ftz_daz();
  for (int i = 1; i < nthreads; i++) {
    int rc = pthread_create(&pool->workers[i - 1], NULL, worker_main, pool);
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
  int nchunks = n < pool->nthreads ? (int)n : pool->nthreads;
  pool->fn = fn;
  pool->arg = arg;
  pool->n = n;
  atomic_store(&pool->done, 0);
  /* Publishing the claim word hands out chunks 1..nchunks-1. */
  uint32_t gen = ++pool->gen;
  atomic_store(&pool->claim, CLAIM(gen, 1, nchunks));
  if (atomic_load(&pool->sleeping_workers) > 0) {
    pthread_mutex_lock(&pool->mu);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
  }
  run_chunk(fn, arg, n, nchunks, 0);
  int c, count, mine = 0;
  while ((c = claim_chunk(pool, gen, &count)) >= 0) {
    run_chunk(fn, arg, n, count, c);
    mine++;
  }
  wait_for_workers(pool, nchunks - 1 - mine);
}

/* fastloss's worker pool: fixed blocks claimed from a shared counter, the caller first.
 *
 * A job is `nblocks` calls fn(ctx, b), in runs of `grain` consecutive blocks (about an eighth
 * of a thread's share: each thread streams through long stretches of memory, and the shared
 * counter is touched a few dozen times per job, not once per block). The runs are tickets
 * [first, end) of one counter that only grows; every thread taking part, the caller
 * included, claims the next ticket with a compare-and-swap and runs its blocks. The caller never waits for a worker to start: it
 * claims blocks until none are left, so when the workers are late (their cores busy with
 * another job) it runs them all itself, and it waits only for blocks a worker has already
 * claimed, that is for a thread that is running. A worker that wakes after its job has ended
 * finds the counter past that job's end and claims nothing (a ticket of a later job is never
 * below an earlier job's end, so a stale worker cannot take one).
 *
 * Which thread runs a block never changes what the block computes (the kernels write each
 * block's result at the block's index), so results are the same bits for any thread count.
 * A thread's slot (0 for the caller, 1..slots-1 for the workers that joined the job) says
 * which of the per-thread scratch buffers, allocated by the kernel for `slots` threads
 * before the job, it may use: at most `slots` threads join a job.
 *
 * Workers spin briefly after a job (a short burst, not milliseconds: a spinning thread takes
 * a core from whatever runs beside us), then sleep on a condition variable. One job runs at
 * a time; a caller that finds the pool busy (another Python thread's kernel, the GIL being
 * released) runs its blocks alone. After fork() the child starts with an empty pool.
 *
 * Without POSIX threads (or FASTLOSS_NO_POOL) every job runs on the caller. */
#ifndef FASTLOSS_POOL_H
#define FASTLOSS_POOL_H

#include <stdint.h>

typedef void (*fl_task)(void *ctx, Py_ssize_t block);

#define FL_POOL_MAX_THREADS 256

#if defined(__GNUC__) && !defined(_WIN32) && !defined(FASTLOSS_NO_POOL)
#define FL_POOL_THREADS 1
#include <pthread.h>
#include <sched.h>
#define FL_THREAD_LOCAL __thread
#define FL_EXPORT __attribute__((visibility("default")))
#else
#define FL_POOL_THREADS 0
#if defined(_MSC_VER)
#define FL_THREAD_LOCAL __declspec(thread)
#define FL_EXPORT __declspec(dllexport)
#else
#define FL_THREAD_LOCAL _Thread_local
#define FL_EXPORT
#endif
#endif

static FL_THREAD_LOCAL int fl_slot_of_this_thread = 0;

/* The thread limit that threadpoolctl (and fastloss.set_num_threads) sets: 0 until set. */
static volatile int fl_thread_limit = 0;

FL_EXPORT int fastloss_pool_get_num_threads(void) { return fl_thread_limit; }
FL_EXPORT void fastloss_pool_set_num_threads(int n) { fl_thread_limit = n < 1 ? 1 : n; }

static inline int fl_pool_slot(void) { return fl_slot_of_this_thread; }

#if FL_POOL_THREADS

#if defined(__x86_64__) || defined(__i386__)
#define FL_PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define FL_PAUSE() __asm__ __volatile__("yield")
#else
#define FL_PAUSE() ((void)0)
#endif

enum { FL_WORKER_SPINS = 2000, FL_CALLER_SPINS = 4000 };

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;       /* workers sleep here between jobs */
    pthread_cond_t finished;   /* the caller sleeps here for the last claimed blocks */
    int started;               /* worker threads running */
    int busy;                  /* a job is in progress */
    int caller_waiting;
    uint64_t job;              /* the current job's number (atomic reads outside the lock) */
    fl_task fn;                /* the current job, written under the lock */
    void *ctx;
    int64_t first, end;
    Py_ssize_t nblocks, grain;
    int slots, taken;
    /* the two counters every thread updates, each on a cache line of its own */
    _Alignas(64) int64_t next; /* atomic: the next ticket */
    _Alignas(64) int64_t completed;   /* atomic: tickets whose blocks have finished */
} fl_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

/* Claim and run runs of the job's blocks (tickets [first, end)) until its tickets are gone. */
static void fl_pool_claim(fl_task fn, void *ctx, int64_t first, int64_t end, Py_ssize_t nblocks, Py_ssize_t grain) {
    int64_t t = __atomic_load_n(&fl_pool.next, __ATOMIC_ACQUIRE);
    while (t < end) {
        Py_ssize_t b, stop;
        if (!__atomic_compare_exchange_n(&fl_pool.next, &t, t + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue;   /* t now holds the counter's value */
        b = (Py_ssize_t)(t - first) * grain;
        stop = nblocks - b < grain ? nblocks : b + grain;
        for (; b < stop; b++)
            fn(ctx, b);
        if (__atomic_add_fetch(&fl_pool.completed, 1, __ATOMIC_ACQ_REL) == end) {
            pthread_mutex_lock(&fl_pool.lock);
            if (fl_pool.caller_waiting)
                pthread_cond_signal(&fl_pool.finished);
            pthread_mutex_unlock(&fl_pool.lock);
        }
        t = __atomic_load_n(&fl_pool.next, __ATOMIC_ACQUIRE);
    }
}

static void *fl_pool_worker(void *unused) {
    uint64_t seen = 0;
    (void)unused;
    for (;;) {
        int spins;
        fl_task fn;
        void *ctx;
        int64_t first, end;
        Py_ssize_t nblocks, grain;
        for (spins = 0; spins < FL_WORKER_SPINS && __atomic_load_n(&fl_pool.job, __ATOMIC_ACQUIRE) == seen; spins++)
            FL_PAUSE();
        pthread_mutex_lock(&fl_pool.lock);
        while (fl_pool.job == seen)
            pthread_cond_wait(&fl_pool.wake, &fl_pool.lock);
        seen = fl_pool.job;
        if (!fl_pool.busy || fl_pool.taken >= fl_pool.slots) {   /* over, or has its threads */
            pthread_mutex_unlock(&fl_pool.lock);
            continue;
        }
        fl_slot_of_this_thread = fl_pool.taken++;
        fn = fl_pool.fn, ctx = fl_pool.ctx, first = fl_pool.first, end = fl_pool.end;
        nblocks = fl_pool.nblocks, grain = fl_pool.grain;
        pthread_mutex_unlock(&fl_pool.lock);
        fl_pool_claim(fn, ctx, first, end, nblocks, grain);
    }
    return NULL;
}

/* After fork() only the forking thread exists in the child: start from an empty pool. */
static void fl_pool_after_fork(void) {
    pthread_mutex_init(&fl_pool.lock, NULL);
    pthread_cond_init(&fl_pool.wake, NULL);
    pthread_cond_init(&fl_pool.finished, NULL);
    fl_pool.started = fl_pool.busy = fl_pool.caller_waiting = 0;
    fl_pool.taken = fl_pool.slots = 0;
    fl_pool.completed = fl_pool.next;   /* a job cut short by the fork is forgotten */
}

static int fl_pool_init(void) { return pthread_atfork(NULL, NULL, fl_pool_after_fork); }

/* Run fn(ctx, b) for b in [0, nblocks) on up to `threads` threads, the caller one of them.
 * Returns when every block has finished. */
static void fl_pool_run(fl_task fn, void *ctx, Py_ssize_t nblocks, int threads) {
    int64_t first, end, wanted;
    Py_ssize_t grain;
    int spins, k;
    if (threads > FL_POOL_MAX_THREADS)
        threads = FL_POOL_MAX_THREADS;
    if (threads > nblocks)
        threads = (int)nblocks;
    if (threads <= 1)
        goto alone;
    pthread_mutex_lock(&fl_pool.lock);
    if (fl_pool.busy) {   /* another thread's job: run this one alone */
        pthread_mutex_unlock(&fl_pool.lock);
        goto alone;
    }
    while (fl_pool.started < threads - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        int failed;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        failed = pthread_create(&thread, &attr, fl_pool_worker, NULL);
        pthread_attr_destroy(&attr);
        if (failed)
            break;   /* fewer workers: the caller and the others claim their blocks */
        fl_pool.started++;
    }
    grain = nblocks / ((Py_ssize_t)threads * 8);
    grain = grain < 1 ? 1 : grain;
    first = __atomic_load_n(&fl_pool.next, __ATOMIC_RELAXED);
    end = first + (int64_t)((nblocks + grain - 1) / grain);
    fl_pool.busy = 1;
    fl_pool.fn = fn, fl_pool.ctx = ctx, fl_pool.first = first, fl_pool.end = end;
    fl_pool.nblocks = nblocks, fl_pool.grain = grain;
    fl_pool.slots = threads, fl_pool.taken = 1;   /* slot 0 is the caller's */
    __atomic_store_n(&fl_pool.job, fl_pool.job + 1, __ATOMIC_RELEASE);
    wanted = threads - 1 < fl_pool.started ? threads - 1 : fl_pool.started;
    for (k = 0; k < wanted; k++)
        pthread_cond_signal(&fl_pool.wake);
    pthread_mutex_unlock(&fl_pool.lock);

    fl_slot_of_this_thread = 0;
    fl_pool_claim(fn, ctx, first, end, nblocks, grain);
    /* every ticket is claimed: wait for the blocks still running on workers */
    for (spins = 0; spins < FL_CALLER_SPINS && __atomic_load_n(&fl_pool.completed, __ATOMIC_ACQUIRE) < end; spins++)
        FL_PAUSE();
    pthread_mutex_lock(&fl_pool.lock);
    fl_pool.caller_waiting = 1;
    while (__atomic_load_n(&fl_pool.completed, __ATOMIC_ACQUIRE) < end)
        pthread_cond_wait(&fl_pool.finished, &fl_pool.lock);
    fl_pool.caller_waiting = 0;
    fl_pool.busy = 0;
    pthread_mutex_unlock(&fl_pool.lock);
    return;
alone:
    {
        Py_ssize_t b;
        fl_slot_of_this_thread = 0;
        for (b = 0; b < nblocks; b++)
            fn(ctx, b);
    }
}

static int fl_pool_workers(void) { return fl_pool.started; }
static unsigned long long fl_pool_jobs(void) { return __atomic_load_n(&fl_pool.job, __ATOMIC_RELAXED); }

#else  /* no threads: every job runs on the caller */

static int fl_pool_init(void) { return 0; }
static void fl_pool_run(fl_task fn, void *ctx, Py_ssize_t nblocks, int threads) {
    Py_ssize_t b;
    (void)threads;
    for (b = 0; b < nblocks; b++)
        fn(ctx, b);
}
static int fl_pool_workers(void) { return 0; }
static unsigned long long fl_pool_jobs(void) { return 0; }

#endif
#endif

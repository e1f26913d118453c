/*
 * shm.h - memory shared by the workers of one server: one anonymous
 * MAP_SHARED region that the supervisor maps before it forks, so that every
 * worker (and every restarted one) sees the same pages at the same address.
 * The rate limiter's table (ratelimit.h) and the metrics registry (metrics.h)
 * are carved out of it; nothing in it is a pointer into process memory.
 *
 * Locking: a pthread mutex made PTHREAD_PROCESS_SHARED (it lives in the
 * shared pages and works across the forked workers) and PTHREAD_MUTEX_ROBUST.
 * Robust, because a worker can be killed at any instruction (kill -9, the
 * OOM killer, a crash): with a plain mutex a worker killed while holding it
 * would wedge every other worker forever; with a robust one the next locker
 * gets EOWNERDEAD, and srv_shm_lock makes the mutex consistent again and
 * tells the caller, who repairs what the dead holder may have left half
 * written. A mutex rather than lock-free atomics for the limiter: admitting a
 * request reads and updates several windows of one or more keys, and may
 * evict a key, as one decision; counters that only add (the metrics) use
 * atomics and take no lock at all.
 */
#ifndef SRV_SHM_H
#define SRV_SHM_H

#include <pthread.h>
#include <stddef.h>

typedef struct srv_shm {
    unsigned char *base; /* NULL when not mapped */
    size_t size;
    size_t used; /* carved so far */
} srv_shm;

/* Map `size` bytes of zeroed anonymous shared memory. 0, or -1 (errno). */
int srv_shm_map(srv_shm *shm, size_t size);
void srv_shm_unmap(srv_shm *shm);

/* The next `size` bytes of the region, 64-byte aligned (a cache line: the
 * parts written by different workers do not share one). NULL when the
 * region is too small. */
void *srv_shm_carve(srv_shm *shm, size_t size);

/* What srv_shm_carve needs for pieces of these sizes (alignment included). */
size_t srv_shm_piece(size_t size);

typedef struct srv_shm_mutex {
    pthread_mutex_t mutex;
} srv_shm_mutex;

/* Make a process-shared, robust mutex in shared memory. 0, or -1. */
int srv_shm_lock_init(srv_shm_mutex *l);

/* Lock. Returns 0, or 1 when the previous holder died holding it: the lock
 * is held and consistent again, and the data it guards may be half
 * updated (the caller repairs it before use); -1 when it could not be
 * taken (not held; only a broken mutex does that). */
int srv_shm_lock(srv_shm_mutex *l);
void srv_shm_unlock(srv_shm_mutex *l);

#endif

/*
 * shm.c - the shared region and its robust, process-shared lock (shm.h).
 */
#include "shm.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define PIECE_ALIGN 64

int srv_shm_map(srv_shm *shm, size_t size)
{
    memset(shm, 0, sizeof *shm);
    /* MAP_SHARED | MAP_ANONYMOUS: inherited by fork() as the same pages,
     * zero-filled, and touched (resident) only where written. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    shm->base = p;
    shm->size = size;
    return 0;
}

void srv_shm_unmap(srv_shm *shm)
{
    if (shm->base)
        munmap(shm->base, shm->size);
    memset(shm, 0, sizeof *shm);
}

size_t srv_shm_piece(size_t size)
{
    return (size + PIECE_ALIGN - 1) / PIECE_ALIGN * PIECE_ALIGN;
}

void *srv_shm_carve(srv_shm *shm, size_t size)
{
    size_t need = srv_shm_piece(size);
    if (!shm->base || need > shm->size - shm->used)
        return NULL;
    void *p = shm->base + shm->used;
    shm->used += need;
    return p;
}

int srv_shm_lock_init(srv_shm_mutex *l)
{
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a) != 0)
        return -1;
    int rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) == 0 &&
                     pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) == 0 &&
                     pthread_mutex_init(&l->mutex, &a) == 0
                 ? 0
                 : -1;
    pthread_mutexattr_destroy(&a);
    return rc;
}

int srv_shm_lock(srv_shm_mutex *l)
{
    int rc = pthread_mutex_lock(&l->mutex);
    if (rc == EOWNERDEAD) {
        /* The holder died in its critical section: we hold the lock now.
         * Marking it consistent keeps it usable for everyone after us;
         * without this the next unlock would make it unrecoverable. */
        pthread_mutex_consistent(&l->mutex);
        return 1;
    }
    return rc == 0 ? 0 : -1;
}

void srv_shm_unlock(srv_shm_mutex *l)
{
    pthread_mutex_unlock(&l->mutex);
}

/*
 * listeners.h - the listening sockets of one server, created by the
 * supervisor before it forks: one per worker, sharing the port through
 * SO_REUSEPORT (the kernel spreads connections over them), and only after
 * the address was proven free, so that a second server on a port in use
 * fails instead of joining the first one's SO_REUSEPORT group.
 */
#ifndef SRV_LISTENERS_H
#define SRV_LISTENERS_H

#include "config.h"

#include <stddef.h>

/*
 * Open n listening sockets (non-blocking, close-on-exec) on cfg's address
 * into fds. Port 0 picks a free port, written back to cfg->port. Returns 0,
 * or -1 after logging why (the address is in use, cannot be resolved...),
 * with nothing left open.
 */
int srv_listeners_open(srv_config *cfg, int *fds, int n);

/* Close every descriptor of fds that is not -1, and set it to -1. */
void srv_listeners_close(int *fds, int n);

/* "HOST:PORT" of cfg, with an IPv6 host in brackets ("[::1]:5001"). */
void srv_listen_addr_str(const srv_config *cfg, char *buf, size_t cap);

#endif

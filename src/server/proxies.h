/*
 * proxies.h - which address a request really comes from. Behind a reverse
 * proxy every connection's peer is the proxy; the client's address is in
 * X-Forwarded-For or X-Real-IP, which only a trusted proxy may set (anyone
 * else could write any address there). TRUSTED_PROXIES lists the proxies:
 * comma- or space-separated CIDRs or bare addresses, IPv4 and IPv6, empty by
 * default (no header is believed).
 *
 * Plain strings and sockaddrs only, no HTTP library: the HTTP front may
 * change, and per-client limits will want the same answer as the access log.
 */
#ifndef SRV_PROXIES_H
#define SRV_PROXIES_H

#include <stddef.h>

struct sockaddr;
typedef struct srv_proxies srv_proxies;

/* Enough for any address srv_proxies_client_addr writes (INET6_ADDRSTRLEN). */
#define SRV_PROXIES_ADDR_MAX 46

/*
 * Parse a TRUSTED_PROXIES value ("10.0.0.0/8, ::1, 192.168.1.10"). NULL or
 * blank: *out = NULL, which trusts nobody. Returns 0, or -1 with a message
 * naming the bad entry in errbuf (*out untouched).
 */
int srv_proxies_parse(const char *spec, srv_proxies **out, char *errbuf, size_t errlen);

/* The same list for another setting (METRICS_ALLOW), whose name the
 * messages give; srv_proxies_trusts then says whether an address is in it. */
int srv_cidrs_parse(const char *setting, const char *spec, srv_proxies **out,
                    char *errbuf, size_t errlen);

void srv_proxies_free(srv_proxies *p);

/* 1 when addr (AF_INET or AF_INET6) is in the list; 0 otherwise or p NULL. */
int srv_proxies_trusts(const srv_proxies *p, const struct sockaddr *addr);

/*
 * The client's address for a request from `peer` with these header values
 * (NULL when absent; several header lines joined with ','). Only when the
 * peer is trusted: X-Forwarded-For is walked from the right, skipping
 * trusted addresses (nginx's real_ip_recursive on), and the first untrusted
 * one is the client (the leftmost when all are trusted); without
 * X-Forwarded-For, X-Real-IP. An entry that is not an IP address (bare, or
 * [v6] / v4:port as some proxies write) makes the header count for nothing.
 * Writes the address in canonical text form (inet_ntop) to out and returns
 * 1; returns 0 when the client is the peer itself (out: the peer's address,
 * or "-" for a non-IP peer).
 */
int srv_proxies_client_addr(const srv_proxies *p, const struct sockaddr *peer,
                            const char *x_forwarded_for, const char *x_real_ip, char *out,
                            size_t cap);

#endif

/*
 * proxies.c - TRUSTED_PROXIES and the client address behind them. Addresses
 * are parsed by inet_pton only; an IPv4-mapped IPv6 address (::ffff:a.b.c.d,
 * what a dual-stack listener reports for an IPv4 peer) counts as the IPv4
 * address, so "127.0.0.1/32" matches it too.
 */
#include "proxies.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef struct ip_addr {
    int family;          /* AF_INET (4 bytes used) or AF_INET6 */
    unsigned char b[16]; /* network byte order */
} ip_addr;

typedef struct ip_net {
    ip_addr addr;
    unsigned bits; /* prefix length */
} ip_net;

struct srv_proxies {
    size_t n;
    ip_net nets[];
};

/* ::ffff:a.b.c.d becomes a.b.c.d */
static void unmap_v4(ip_addr *a)
{
    static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (a->family == AF_INET6 && memcmp(a->b, prefix, 12) == 0) {
        memmove(a->b, a->b + 12, 4);
        a->family = AF_INET;
    }
}

/* A bare IPv4 or IPv6 address in s[0..len). 0, or -1 when it is not one. */
static int addr_parse(const char *s, size_t len, ip_addr *a)
{
    char buf[64]; /* longer than any address text */
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(a, 0, sizeof *a);
    if (inet_pton(AF_INET, buf, a->b) == 1)
        a->family = AF_INET;
    else if (inet_pton(AF_INET6, buf, a->b) == 1)
        a->family = AF_INET6;
    else
        return -1;
    unmap_v4(a);
    return 0;
}

static int all_digits(const char *s, size_t len)
{
    if (len == 0 || len > 5)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* A header entry: a bare address, or "[v6]", "[v6]:port", "v4:port" (some
 * proxies, e.g. cloud load balancers, add the client's port). */
static int header_addr_parse(const char *s, size_t len, ip_addr *a)
{
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return -1;
        size_t rest = len - (size_t)(close + 1 - s);
        if (rest > 0 && !(close[1] == ':' && all_digits(close + 2, rest - 1)))
            return -1;
        if (addr_parse(s + 1, (size_t)(close - s - 1), a) < 0 || a->family != AF_INET6)
            return -1;
        return 0;
    }
    const char *colon = memchr(s, ':', len);
    if (colon && !memchr(colon + 1, ':', len - (size_t)(colon + 1 - s))) {
        size_t host = (size_t)(colon - s);
        if (!all_digits(colon + 1, len - host - 1) || addr_parse(s, host, a) < 0 ||
            a->family != AF_INET)
            return -1;
        return 0;
    }
    return addr_parse(s, len, a);
}

static int addr_from_sockaddr(const struct sockaddr *sa, ip_addr *a)
{
    memset(a, 0, sizeof *a);
    if (!sa)
        return -1;
    if (sa->sa_family == AF_INET) {
        a->family = AF_INET;
        memcpy(a->b, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        a->family = AF_INET6;
        memcpy(a->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        unmap_v4(a);
    } else {
        return -1;
    }
    return 0;
}

static int in_net(const ip_addr *a, const ip_net *net)
{
    if (a->family != net->addr.family)
        return 0;
    unsigned full = net->bits / 8, rest = net->bits % 8;
    if (memcmp(a->b, net->addr.b, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a->b[full] & mask) == (net->addr.b[full] & mask);
}

static int trusted(const srv_proxies *p, const ip_addr *a)
{
    for (size_t i = 0; p && i < p->n; i++)
        if (in_net(a, &p->nets[i]))
            return 1;
    return 0;
}

static void addr_text(const ip_addr *a, char *out, size_t cap)
{
    if (!inet_ntop(a->family, a->b, out, (socklen_t)cap))
        snprintf(out, cap, "-");
}

/* "addr" or "addr/bits" in s[0..len) into net. 0, or -1 with errbuf. */
static int net_parse(const char *setting, const char *s, size_t len, ip_net *net,
                     char *errbuf, size_t errlen)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    if (addr_parse(s, alen, &net->addr) < 0) {
        snprintf(errbuf, errlen,
                 "%s entry \"%.*s\" is not an IP address or CIDR (e.g. "
                 "10.0.0.0/8, 192.168.1.10, ::1, fd00::/8)",
                 setting, (int)(len > 80 ? 80 : len), s);
        return -1;
    }
    /* The address as written: a v4-mapped v6 CIDR counts in IPv4 bits. */
    int mapped = net->addr.family == AF_INET && memchr(s, ':', alen) != NULL;
    unsigned max = net->addr.family == AF_INET ? 32 : 128;
    net->bits = max;
    if (slash) {
        size_t dlen = len - alen - 1;
        char digits[4] = "";
        if (dlen == 0 || dlen > 3 || !all_digits(slash + 1, dlen)) {
            net->bits = 999; /* reported below */
        } else {
            memcpy(digits, slash + 1, dlen);
            digits[dlen] = '\0';
            net->bits = (unsigned)atoi(digits);
            if (mapped)
                net->bits = net->bits >= 96 ? net->bits - 96 : 999;
        }
        if (net->bits > max) {
            snprintf(errbuf, errlen,
                     "%s entry \"%.*s\": the prefix length must be 0-32 for "
                     "IPv4 and 0-128 for IPv6",
                     setting, (int)(len > 80 ? 80 : len), s);
            return -1;
        }
    }
    return 0;
}

static int is_separator(char c)
{
    return c == ',' || isspace((unsigned char)c);
}

int srv_proxies_parse(const char *spec, srv_proxies **out, char *errbuf, size_t errlen)
{
    return srv_cidrs_parse("TRUSTED_PROXIES", spec, out, errbuf, errlen);
}

int srv_cidrs_parse(const char *setting, const char *spec, srv_proxies **out,
                    char *errbuf, size_t errlen)
{
    size_t n = 0;
    for (const char *p = spec ? spec : ""; *p;) {
        while (*p && is_separator(*p))
            p++;
        if (*p)
            n++;
        while (*p && !is_separator(*p))
            p++;
    }
    if (n == 0) {
        *out = NULL;
        return 0;
    }
    srv_proxies *list = calloc(1, sizeof *list + n * sizeof list->nets[0]);
    if (!list) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    for (const char *p = spec; *p;) {
        while (*p && is_separator(*p))
            p++;
        const char *start = p;
        while (*p && !is_separator(*p))
            p++;
        if (p > start && net_parse(setting, start, (size_t)(p - start),
                                   &list->nets[list->n++], errbuf, errlen) < 0) {
            free(list);
            return -1;
        }
    }
    *out = list;
    return 0;
}

void srv_proxies_free(srv_proxies *p)
{
    free(p);
}

int srv_proxies_trusts(const srv_proxies *p, const struct sockaddr *addr)
{
    ip_addr a;
    return addr_from_sockaddr(addr, &a) == 0 && trusted(p, &a);
}

static int blank(const char *s)
{
    for (; s && *s; s++)
        if (!is_separator(*s))
            return 0;
    return 1;
}

/* Walk X-Forwarded-For from the right. 0 with *client, or -1 when an entry
 * reached is not an address. */
static int forwarded_client(const srv_proxies *p, const char *xff, ip_addr *client)
{
    const char *end = xff + strlen(xff);
    for (;;) {
        while (end > xff && is_separator(end[-1]))
            end--;
        if (end == xff)
            return 0; /* every entry was trusted: the leftmost is the client */
        const char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        const char *s = start;
        while (isspace((unsigned char)*s))
            s++;
        if (header_addr_parse(s, (size_t)(end - s), client) < 0)
            return -1;
        if (!trusted(p, client))
            return 0;
        end = start;
    }
}

/* X-Real-IP: one address, surrounding blanks allowed (two header lines,
 * joined with ',', are not one address). */
static int single_addr(const char *s, ip_addr *a)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    return header_addr_parse(s, len, a);
}

int srv_proxies_client_addr(const srv_proxies *p, const struct sockaddr *peer,
                            const char *x_forwarded_for, const char *x_real_ip, char *out,
                            size_t cap)
{
    ip_addr addr;
    if (addr_from_sockaddr(peer, &addr) < 0) {
        snprintf(out, cap, "-");
        return 0;
    }
    int forwarded = 0;
    if (trusted(p, &addr)) {
        ip_addr client;
        if (!blank(x_forwarded_for))
            forwarded = forwarded_client(p, x_forwarded_for, &client) == 0;
        else if (!blank(x_real_ip))
            forwarded = single_addr(x_real_ip, &client) == 0;
        if (forwarded)
            addr = client;
    }
    addr_text(&addr, out, cap);
    return forwarded;
}

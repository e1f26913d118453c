/*
 * config.c - settings from the environment and a .env file. The .env file
 * is read by src/lib/dotenv.c, shared with the CLI: the common format
 * (python-dotenv, docker), and variables already in the environment win.
 */
#include "config.h"
#include "dotenv.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/resource.h>
#include <unistd.h>

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* The CLI reads .env with the same code (src/lib/dotenv.c). */
int srv_config_load_env_file(const char *env_file, int required, char *errbuf,
                             size_t errlen)
{
    return zjuchat__dotenv_load(env_file, required, errbuf, errlen);
}

int srv_config_truthy(const char *v)
{
    if (!v)
        return 0;
    return !strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
           !strcasecmp(v, "on");
}

/* Non-negative integer from env `name`; `def` when unset or empty. */
static int env_long(const char *name, long def, long *out, char *errbuf, size_t errlen)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *trim(end) != '\0' || x < 0) {
        snprintf(errbuf, errlen, "%s must be a non-negative integer, got \"%s\"", name,
                 v);
        return -1;
    }
    *out = x;
    return 0;
}

static char *env_dup(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? strdup(v) : NULL;
}

int srv_config_parse_bind(srv_config *cfg, const char *spec)
{
    const char *colon = strrchr(spec, ':');
    const char *port = colon ? colon + 1 : spec;
    char *end;
    long p = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || p < 0 || p > 65535)
        return -1;
    if (colon) {
        size_t hl = (size_t)(colon - spec);
        /* [::1]:5001 */
        if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
            spec++;
            hl -= 2;
        }
        if (hl >= sizeof cfg->host)
            return -1;
        if (hl > 0) {
            memcpy(cfg->host, spec, hl);
            cfg->host[hl] = '\0';
        }
    }
    cfg->port = (int)p;
    return 0;
}

struct addrinfo *srv_config_bind_addr(const srv_config *cfg, char *errbuf, size_t errlen)
{
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(cfg->host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot resolve bind address %s: %s", cfg->host,
                 gai_strerror(rc));
        return NULL;
    }
    return ai;
}

/* Each relay holds two descriptors (client and upstream) and main() raises
 * the soft limit to the hard one: allow what that limit can carry, leaving
 * room for listeners, logs and idle connections. */
static long default_max_connections(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_max == RLIM_INFINITY)
        return 4096;
    long n = ((long)rl.rlim_max - 128) / 2;
    return n < 64 ? 64 : n;
}

static int from_env(srv_config *cfg, char *errbuf, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->host, sizeof cfg->host, "0.0.0.0");
    long v;
    if (env_long("PORT", 5001, &v, errbuf, errlen) < 0)
        return -1;
    if (v > 65535) {
        snprintf(errbuf, errlen, "PORT out of range");
        return -1;
    }
    cfg->port = (int)v;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = cores > 0 ? (int)cores : 1;
    cfg->api_key = env_dup("ZJU_API_KEY");
    cfg->base_url = env_dup("ZJU_BASE_URL");
    cfg->ca_file = env_dup("ZJU_CA_FILE");
    cfg->default_model = env_dup("DEFAULT_MODEL");
    cfg->cors_origins = env_dup("CORS_ORIGINS");
    if (!cfg->cors_origins)
        cfg->cors_origins = strdup("*");
    cfg->debug =
        srv_config_truthy(getenv("FLASK_DEBUG")) || srv_config_truthy(getenv("DEBUG"));
    struct {
        const char *name;
        long def;
        long *out;
    } longs[] = {
        {"ZJU_CONNECT_TIMEOUT_MS", -1, &cfg->connect_ms},
        {"ZJU_FIRST_BYTE_TIMEOUT_MS", -1, &cfg->first_byte_ms},
        {"ZJU_IDLE_TIMEOUT_MS", -1, &cfg->idle_ms},
        {"ZJU_TOTAL_TIMEOUT_MS", -1, &cfg->total_ms},
        {"HEARTBEAT_MS", 15000, &cfg->heartbeat_ms},
        {"MAX_CONNECTIONS", default_max_connections(), &cfg->max_connections},
        {"DRAIN_TIMEOUT", 30, &cfg->drain_timeout_s},
        {"REQUEST_TIMEOUT", 30, &cfg->request_timeout_s},
    };
    for (size_t i = 0; i < sizeof longs / sizeof longs[0]; i++)
        if (env_long(longs[i].name, longs[i].def, longs[i].out, errbuf, errlen) < 0)
            return -1;
    if (env_long("MAX_BODY_BYTES", 1024 * 1024, &v, errbuf, errlen) < 0)
        return -1;
    cfg->max_body = (size_t)v;
    if (env_long("MAX_HEADER_BYTES", 16 * 1024, &v, errbuf, errlen) < 0)
        return -1;
    cfg->max_headers = (size_t)v;
    if (cfg->request_timeout_s == 0)
        cfg->request_timeout_s = 30; /* never unlimited: idle sockets must be reaped */
    if (cfg->max_connections == 0)
        cfg->max_connections = LONG_MAX;
    if (!cfg->cors_origins) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int srv_config_from_env(srv_config *cfg, char *errbuf, size_t errlen)
{
    int rc = from_env(cfg, errbuf, errlen);
    if (rc < 0)
        srv_config_free(cfg); /* nothing half-filled is left to the caller */
    return rc;
}

void srv_config_free(srv_config *cfg)
{
    free(cfg->api_key);
    free(cfg->base_url);
    free(cfg->ca_file);
    free(cfg->default_model);
    free(cfg->cors_origins);
    memset(cfg, 0, sizeof *cfg);
}

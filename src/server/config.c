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
#include <strings.h>
#include <netdb.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <curl/curl.h>
#include <jansson.h>
#include <zjuchat.h>

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
    if (errno || end == v || *zjuchat__trim(end) != '\0' || x < 0) {
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

/*
 * One CORS_ORIGINS entry as the browser will send it in Origin: lower-case
 * scheme and host, no default port, nothing after the authority. A single
 * trailing '/' is dropped (a common slip that otherwise never matches);
 * anything else after the host is refused, since it can never match either.
 * libcurl parses; the shape check before it catches what curl forgives (an
 * empty query or fragment, "http:///host"). Returns 0 with *out (malloc), or
 * -1 with *why (static text), or -2 when out of memory.
 */
static int origin_normalise(const char *raw, char **out, const char **why)
{
    const char *sep = strstr(raw, "://");
    if (!sep || sep == raw) {
        *why = "no scheme";
        return -1;
    }
    const char *after = strpbrk(sep + 3, "/?#");
    if (after && !(after[0] == '/' && after[1] == '\0')) {
        *why = "an origin has no path, query or fragment";
        return -1;
    }
    if (sep[3] == '/' || strchr(sep + 3, '@')) {
        *why = "no host, or a user name before it";
        return -1;
    }
    CURLU *u = curl_url();
    if (!u)
        return -2;
    char *scheme = NULL, *host = NULL, *port = NULL, *zone = NULL;
    int rc = -1;
    *why = "not a valid URL origin";
    if (curl_url_set(u, CURLUPART_URL, raw, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
        goto done;
#ifdef CURLU_PUNYCODE /* browsers send an internationalised host as xn-- */
    if (curl_url_get(u, CURLUPART_HOST, &host, CURLU_PUNYCODE) != CURLUE_OK) {
#else
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
#endif
        *why = "the host is not valid (write an international name as xn--...)";
        goto done;
    }
    if (curl_url_get(u, CURLUPART_ZONEID, &zone, 0) == CURLUE_OK) {
        *why = "an origin has no IPv6 zone";
        goto done;
    }
    /* NULL port: none given, or the scheme's default, which Origin omits */
    curl_url_get(u, CURLUPART_PORT, &port, CURLU_NO_DEFAULT_PORT);
    for (char *p = scheme; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    for (char *p = host; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    rc = asprintf(out, "%s://%s%s%s", scheme, host, port ? ":" : "", port ? port : "") < 0
             ? -2
             : 0;
done:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(zone);
    curl_url_cleanup(u);
    return rc;
}

/* Append ", text" (or text) to the malloc'd string *list. -1 on OOM. */
static int list_append(char **list, const char *text)
{
    char *grown = NULL;
    if (asprintf(&grown, "%s%s%s", *list ? *list : "", *list ? ", " : "", text) < 0)
        return -1;
    free(*list);
    *list = grown;
    return 0;
}

/*
 * CORS_ORIGINS: unset means "*" (the Flask seed's default). Set but empty is
 * refused rather than read as "*": whoever set it meant to restrict. Each
 * entry is normalised (origin_normalise); rewritten entries are listed in
 * cfg->cors_notice for the startup report.
 */
static int cors_from_env(srv_config *cfg, char *errbuf, size_t errlen)
{
    const char *v = getenv("CORS_ORIGINS");
    char *copy = strdup(v ? v : "*"), *save = NULL, *notes = NULL;
    int rc = copy ? 0 : -2;
    for (char *e = copy ? strtok_r(copy, ",", &save) : NULL; e && rc == 0;
         e = strtok_r(NULL, ",", &save)) {
        e = zjuchat__trim(e);
        char *norm = NULL;
        const char *why = NULL;
        int r = 0; /* 0: keep (norm or e), 1: skip, -1: refuse, -2: out of memory */
        if (*e == '\0')
            r = 1;
        else if (strcmp(e, "*") != 0)
            r = origin_normalise(e, &norm, &why);
        if (r == -1) {
            snprintf(errbuf, errlen,
                     "CORS_ORIGINS entry \"%.100s\" is not an origin (%s): want "
                     "scheme://host[:port], e.g. https://chat.example.com",
                     e, why);
            rc = -1;
        } else if (r < 0 ||
                   (r == 0 && list_append(&cfg->cors_origins, norm ? norm : e))) {
            rc = -2;
        } else if (norm && strcmp(norm, e) != 0) {
            char *note = NULL;
            if (asprintf(&note, "\"%.100s\" taken as \"%s\"", e, norm) < 0)
                note = NULL;
            if (!note || list_append(&notes, note) < 0)
                rc = -2;
            free(note);
        }
        free(norm);
    }
    free(copy);
    if (rc == 0 && !cfg->cors_origins) {
        snprintf(errbuf, errlen,
                 "CORS_ORIGINS is set but empty; unset it for '*' (any origin) or list "
                 "the allowed origins, e.g. https://chat.example.com");
        rc = -1;
    }
    if (rc == 0 && notes &&
        asprintf(&cfg->cors_notice,
                 "CORS_ORIGINS: %s (browsers send an origin with a lower-case scheme "
                 "and host, no default port and no trailing '/')",
                 notes) < 0) {
        cfg->cors_notice = NULL;
        rc = -2;
    }
    free(notes);
    if (rc == -2)
        snprintf(errbuf, errlen, "out of memory");
    return rc < 0 ? -1 : 0;
}

/* Longest model id MODELS takes: what the access log's model field holds. */
#define MODEL_ID_MAX 127
/* A year: the cache's millisecond arithmetic stays far from overflow. */
#define MODELS_CACHE_TTL_MAX (365L * 24 * 3600)

/*
 * MODELS: comma-separated model ids, spaces around them ignored (models.c
 * drops repeats). An id is what OpenAI's and vLLM's ids are made of: any bytes but
 * spaces and control characters ('.', '-', ':', '/' and UTF-8 are fine).
 * Set but empty is refused, like CORS_ORIGINS: whoever set it meant a list.
 */
static int models_from_env(srv_config *cfg, char *errbuf, size_t errlen)
{
    const char *v = getenv("MODELS");
    if (!v)
        return 0;
    char *copy = strdup(v), *save = NULL;
    int rc = copy ? 0 : -2;
    for (char *e = copy ? strtok_r(copy, ",", &save) : NULL; e && rc == 0;
         e = strtok_r(NULL, ",", &save)) {
        e = zjuchat__trim(e);
        size_t n = strlen(e);
        if (n == 0)
            continue;
        for (const unsigned char *c = (const unsigned char *)e; *c && rc == 0; c++)
            if (*c <= ' ' || *c == 0x7f)
                rc = -1;
        json_t *utf8 = json_string(e); /* ids go out in JSON: valid UTF-8 only */
        if (rc == 0 && (n > MODEL_ID_MAX || !utf8))
            rc = -1;
        json_decref(utf8);
        if (rc < 0) {
            snprintf(errbuf, errlen,
                     "MODELS entry \"%.100s\" is not a model id (UTF-8, at most %d "
                     "bytes, no spaces or control characters)",
                     e, MODEL_ID_MAX);
            break;
        }
        if (list_append(&cfg->models, e) < 0)
            rc = -2;
    }
    free(copy);
    if (rc == 0 && !cfg->models) {
        snprintf(errbuf, errlen,
                 "MODELS is set but empty; unset it for the default list or name the "
                 "models, e.g. MODELS=deepseek-r1-671b,deepseek-v3-671b");
        rc = -1;
    }
    if (rc == -2)
        snprintf(errbuf, errlen, "out of memory");
    return rc < 0 ? -1 : 0;
}

#define LIMITS_KEYS_DEFAULT 8192
#define LIMITS_KEYS_MAX (1L << 20) /* about 1 GiB of shared memory */
#define LIMIT_MAX 1000000000L      /* a window's slot counts to 2^32 */
#define METRICS_TOKEN_MIN_LEN 16   /* shorter is guessable */

/* IP_RPM, IP_TPM, LIMITS_KEYS (read with the other numbers) in range;
 * METRICS_ALLOW (parsed in shared.c) and METRICS_TOKEN. */
static int limits_from_env(srv_config *cfg, char *errbuf, size_t errlen)
{
    if (cfg->ip_rpm > LIMIT_MAX || cfg->ip_tpm > LIMIT_MAX) {
        snprintf(errbuf, errlen, "IP_RPM and IP_TPM must be at most %ld", LIMIT_MAX);
        return -1;
    }
    if (cfg->limits_keys < 1 || cfg->limits_keys > LIMITS_KEYS_MAX) {
        snprintf(errbuf, errlen, "LIMITS_KEYS must be 1..%ld", LIMITS_KEYS_MAX);
        return -1;
    }
    const char *allow = getenv("METRICS_ALLOW"); /* set but empty: no address */
    if (allow && !(cfg->metrics_allow = strdup(allow))) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    cfg->metrics_token = env_dup("METRICS_TOKEN");
    if (cfg->metrics_token && strlen(cfg->metrics_token) < METRICS_TOKEN_MIN_LEN) {
        snprintf(errbuf, errlen,
                 "METRICS_TOKEN is shorter than %d characters: too easy to guess",
                 METRICS_TOKEN_MIN_LEN);
        return -1;
    }
    return 0;
}

#define REDIS_PORT_DEFAULT 6379
#define REDIS_TIMEOUT_DEFAULT_MS 1000
#define REDIS_TIMEOUT_MAX_MS 60000
#define REDIS_PREFIX_MAX 64

/* A part of u, URL-decoded; NULL when the URL has none (or it is empty). */
static char *url_part(CURLU *u, CURLUPart what)
{
    char *v = NULL;
    if (curl_url_get(u, what, &v, CURLU_URLDECODE) != CURLUE_OK || !v)
        return NULL;
    char *copy = *v ? strdup(v) : NULL;
    curl_free(v);
    return copy;
}

/* REDIS_URL: redis://[[user]:password@]host[:port][/db] (libcurl's URL
 * parser: brackets, percent-escapes, ports) or unix:///path. Messages
 * never quote the URL: it may hold a password. */
static int redis_url_parse(srv_redis_config *rc, const char *url, char *errbuf,
                           size_t errlen)
{
    if (strncmp(url, "unix://", 7) == 0) {
        if (url[7] != '/' || url[8] == '\0') {
            snprintf(errbuf, errlen, "REDIS_URL: a unix socket is unix:///absolute/path");
            return -1;
        }
        rc->socket = strdup(url + 7);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(errbuf, errlen,
                 "REDIS_URL must be redis://[:password@]host[:port][/db] or "
                 "unix:///path (rediss:// TLS is not supported)");
        return -1;
    }
    CURLU *u = curl_url();
    if (!u)
        return -1;
    int result = -1;
    char *port = NULL, *path = NULL, *query = NULL;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (uc != CURLUE_OK) {
        snprintf(errbuf, errlen, "REDIS_URL is not a valid URL: %s",
                 curl_url_strerror(uc));
        goto out;
    }
    rc->host = url_part(u, CURLUPART_HOST);
    rc->user = url_part(u, CURLUPART_USER);
    rc->password = url_part(u, CURLUPART_PASSWORD);
    port = url_part(u, CURLUPART_PORT);
    path = url_part(u, CURLUPART_PATH);
    query = url_part(u, CURLUPART_QUERY);
    if (!rc->host) {
        snprintf(errbuf, errlen, "REDIS_URL has no host");
        goto out;
    }
    size_t hl = strlen(rc->host);
    if (hl >= 2 && rc->host[0] == '[' && rc->host[hl - 1] == ']') {
        memmove(rc->host, rc->host + 1, hl - 2); /* [::1] -> ::1 */
        rc->host[hl - 2] = '\0';
    }
    rc->port = port ? atoi(port) : REDIS_PORT_DEFAULT; /* curl checked 0..65535 */
    if (rc->port <= 0) {
        snprintf(errbuf, errlen, "REDIS_URL: port must be 1..65535");
        goto out;
    }
    const char *db = path && path[0] == '/' ? path + 1 : "";
    char *end;
    errno = 0;
    rc->db = *db ? strtol(db, &end, 10) : 0;
    if (*db && (errno || *end || rc->db < 0 || !isdigit((unsigned char)*db))) {
        snprintf(errbuf, errlen,
                 "REDIS_URL: the path is the database number (/0, /1, ...)");
        goto out;
    }
    if (query) {
        snprintf(errbuf, errlen, "REDIS_URL: options (?...) are not supported");
        goto out;
    }
    result = 0;
out:
    free(port);
    free(path);
    free(query);
    curl_url_cleanup(u);
    return result;
}

/* REDIS_URL, REDIS_FAILURE, REDIS_PREFIX, REDIS_TIMEOUT_MS (limits_redis.h). */
static int redis_from_env(srv_redis_config *rc, char *errbuf, size_t errlen)
{
    const char *failure = getenv("REDIS_FAILURE");
    rc->failure_open = 1; /* the service stays up when Redis dies (README) */
    if (failure && *failure) {
        if (strcasecmp(failure, "closed") == 0) {
            rc->failure_open = 0;
        } else if (strcasecmp(failure, "open") != 0) {
            snprintf(errbuf, errlen, "REDIS_FAILURE must be open or closed, got \"%s\"",
                     failure);
            return -1;
        }
    }
    if (env_long("REDIS_TIMEOUT_MS", REDIS_TIMEOUT_DEFAULT_MS, &rc->timeout_ms, errbuf,
                 errlen) < 0)
        return -1;
    if (rc->timeout_ms < 1 || rc->timeout_ms > REDIS_TIMEOUT_MAX_MS) {
        snprintf(errbuf, errlen, "REDIS_TIMEOUT_MS must be 1..%d", REDIS_TIMEOUT_MAX_MS);
        return -1;
    }
    rc->prefix = env_dup("REDIS_PREFIX");
    if (!rc->prefix)
        rc->prefix = strdup("zju:");
    if (!rc->prefix)
        return -1;
    for (const char *p = rc->prefix; *p; p++)
        if (!isgraph((unsigned char)*p) || p - rc->prefix >= REDIS_PREFIX_MAX) {
            snprintf(errbuf, errlen,
                     "REDIS_PREFIX must be up to %d printable characters without spaces",
                     REDIS_PREFIX_MAX);
            return -1;
        }
    rc->url = env_dup("REDIS_URL");
    if (rc->url && redis_url_parse(rc, rc->url, errbuf, errlen) < 0)
        return -1;
    if (rc->url && !rc->host && !rc->socket) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* WEB_ROOT: unset or empty, the page built into the binary; "off", none;
 * else a directory, resolved once here so that static.c can tell a path
 * that leaves it (a symlink) by its prefix. */
static int web_from_env(srv_config *cfg, char *errbuf, size_t errlen)
{
    const char *v = getenv("WEB_ROOT");
    if (!v || !*v)
        return 0;
    if (strcmp(v, "off") == 0) {
        cfg->web_off = 1;
        return 0;
    }
    struct stat st;
    cfg->web_root = realpath(v, NULL);
    if (!cfg->web_root || stat(cfg->web_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(errbuf, errlen,
                 "WEB_ROOT \"%.200s\" is not a directory (%s); set off for no page", v,
                 cfg->web_root ? "not a directory" : strerror(errno));
        return -1;
    }
    if (strcmp(cfg->web_root, "/") == 0) {
        snprintf(errbuf, errlen, "WEB_ROOT must not be / (the whole file system)");
        return -1;
    }
    return 0;
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
    if (cfg->api_key && strlen(cfg->api_key) < ZJUCHAT_MIN_KEY_LEN) {
        /* Never quote the key, nor its length. Why a minimum: zjuchat.h. */
        snprintf(errbuf, errlen,
                 "ZJU_API_KEY is shorter than %d characters: too short to keep out of "
                 "replies and logs safely (every occurrence is masked, so a short key "
                 "would mask ordinary text); set the full key",
                 ZJUCHAT_MIN_KEY_LEN);
        return -1;
    }
    cfg->base_url = env_dup("ZJU_BASE_URL");
    cfg->ca_file = env_dup("ZJU_CA_FILE");
    if (cfg->ca_file) {
        /* Each worker loads it at start (the TLS context is built before
         * the first call), as nginx reads proxy_ssl_trusted_certificate:
         * a file that cannot be read, or holds no certificate, is said
         * now, not by every call. */
        zjuchat_error e;
        if (zjuchat_ca_file_check(cfg->ca_file, &e) != ZJUCHAT_OK) {
            snprintf(errbuf, errlen, "ZJU_CA_FILE %s %s", cfg->ca_file, e.message);
            return -1;
        }
    }
    cfg->default_model = env_dup("DEFAULT_MODEL");
    cfg->default_embedding_model = env_dup("DEFAULT_EMBEDDING_MODEL");
    if (!cfg->default_embedding_model)
        cfg->default_embedding_model = strdup("bge-m3"); /* the upstream's */
    if (cors_from_env(cfg, errbuf, errlen) < 0)
        return -1;
    cfg->trusted_proxies = env_dup("TRUSTED_PROXIES");
    const char *fmt = getenv("ACCESS_LOG_FORMAT");
    if (fmt && *fmt && strcasecmp(fmt, "text") != 0 && strcasecmp(fmt, "json") != 0) {
        snprintf(errbuf, errlen, "ACCESS_LOG_FORMAT must be text or json");
        return -1;
    }
    cfg->access_log_json = fmt && strcasecmp(fmt, "json") == 0;
    if (models_from_env(cfg, errbuf, errlen) < 0)
        return -1;
    cfg->access_tokens_file = env_dup("ACCESS_TOKENS_FILE");
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
        {"ZJU_RETRY_BUDGET_MS", -1, &cfg->retry_budget_ms},
        {"HEARTBEAT_MS", 15000, &cfg->heartbeat_ms},
        {"MAX_CONNECTIONS", default_max_connections(), &cfg->max_connections},
        {"DRAIN_TIMEOUT", 30, &cfg->drain_timeout_s},
        {"REQUEST_TIMEOUT", 30, &cfg->request_timeout_s},
        {"MODELS_CACHE_TTL", 300, &cfg->models_cache_ttl_s},
        {"IP_RPM", 0, &cfg->ip_rpm},
        {"IP_TPM", 0, &cfg->ip_tpm},
        {"LIMITS_KEYS", LIMITS_KEYS_DEFAULT, &cfg->limits_keys},
    };
    for (size_t i = 0; i < sizeof longs / sizeof longs[0]; i++)
        if (env_long(longs[i].name, longs[i].def, longs[i].out, errbuf, errlen) < 0)
            return -1;
    if (cfg->models_cache_ttl_s > MODELS_CACHE_TTL_MAX) {
        snprintf(errbuf, errlen, "MODELS_CACHE_TTL must be at most %ld seconds (a year)",
                 MODELS_CACHE_TTL_MAX);
        return -1;
    }
    if (limits_from_env(cfg, errbuf, errlen) < 0)
        return -1;
    if (redis_from_env(&cfg->redis, errbuf, errlen) < 0)
        return -1;
    if (web_from_env(cfg, errbuf, errlen) < 0)
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
    free(cfg->default_embedding_model);
    free(cfg->cors_origins);
    free(cfg->cors_notice);
    free(cfg->trusted_proxies);
    free(cfg->models);
    free(cfg->access_tokens_file);
    free(cfg->metrics_allow);
    free(cfg->metrics_token);
    free(cfg->redis.url);
    free(cfg->redis.host);
    free(cfg->redis.socket);
    free(cfg->redis.user);
    free(cfg->redis.password);
    free(cfg->redis.prefix);
    free(cfg->web_root);
    memset(cfg, 0, sizeof *cfg);
}

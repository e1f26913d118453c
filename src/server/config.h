/*
 * config.h - the server's settings: defaults, the process environment and an
 * optional .env file (the process environment wins over the file).
 */
#ifndef SRV_CONFIG_H
#define SRV_CONFIG_H

#include <stddef.h>

/* REDIS_URL and its companions: the rate limits shared by several instances
 * (limits_redis.h). url NULL: no Redis, the limits are this server's own. */
typedef struct srv_redis_config {
    char *url;             /* REDIS_URL as given: may hold a password, never logged */
    char *host;            /* redis://: the host (an IPv6 address without []) */
    int port;              /* default 6379 */
    char *socket;          /* unix:///path: the socket's path (host NULL) */
    char *user, *password; /* from the URL, NULL: none (AUTH is not sent) */
    long db;               /* redis://host/N, default 0 */
    int failure_open;      /* REDIS_FAILURE: 1 open (default), 0 closed */
    char *prefix;          /* REDIS_PREFIX, default "zju:" */
    long timeout_ms;       /* REDIS_TIMEOUT_MS: connect and each command */
} srv_redis_config;

typedef struct srv_config {
    char host[256];                /* bind address, default 0.0.0.0 */
    int port;                      /* PORT, default 5001 */
    int workers;                   /* -w, default: number of cores */
    char *api_key;                 /* ZJU_API_KEY, NULL when unset or empty */
    char *base_url;                /* ZJU_BASE_URL, NULL: the library default */
    char *ca_file;                 /* ZJU_CA_FILE: CA bundle for the upstream's TLS */
    char *default_model;           /* DEFAULT_MODEL */
    char *default_embedding_model; /* DEFAULT_EMBEDDING_MODEL, default bge-m3;
                                      never NULL after srv_config_from_env */
    char *cors_origins;            /* CORS_ORIGINS normalised ("a, b"), default "*" */
    char *cors_notice;             /* CORS_ORIGINS entries rewritten, for the startup
                                      report; NULL when none was */
    int debug;                     /* FLASK_DEBUG or DEBUG truthy */
    int access_log_json;           /* ACCESS_LOG_FORMAT=json (default text) */
    long connect_ms;               /* ZJU_*_TIMEOUT_MS, -1: library default */
    long first_byte_ms;
    long idle_ms;
    long total_ms;
    long retry_budget_ms;   /* ZJU_RETRY_BUDGET_MS, -1: library default (3000) */
    long heartbeat_ms;      /* HEARTBEAT_MS, default 15000, 0 disables */
    size_t max_body;        /* MAX_BODY_BYTES, default 1 MiB */
    size_t max_headers;     /* MAX_HEADER_BYTES, default 16 KiB */
    long max_connections;   /* MAX_CONNECTIONS: in-flight requests per worker;
                               default: what the descriptor limit allows */
    long drain_timeout_s;   /* DRAIN_TIMEOUT, default 30 */
    long request_timeout_s; /* REQUEST_TIMEOUT, default 30 */
    /* TRUSTED_PROXIES as given, NULL: none (main parses it, proxies.h) */
    char *trusted_proxies;
    /* MODELS: the model ids GET /v1/models serves when the upstream has no
     * list, normalised ("a, b"); NULL: the default list (models.c) */
    char *models;
    long models_cache_ttl_s; /* MODELS_CACHE_TTL, default 300, 0: no caching */
    /* ACCESS_TOKENS_FILE, NULL: no tokens, the API is open (tokens.h) */
    char *access_tokens_file;
    long ip_rpm, ip_tpm; /* IP_RPM, IP_TPM: per client address, 0: none */
    long limits_keys;    /* LIMITS_KEYS: keys the shared limiter holds */
    /* METRICS_ALLOW as given, NULL: loopback (shared.c parses it);
     * METRICS_TOKEN, NULL: none */
    char *metrics_allow;
    char *metrics_token;
    srv_redis_config redis;
    /* WEB_ROOT: the chat page's directory, resolved (realpath); NULL: the
     * files built into the binary. web_off: WEB_ROOT=off, no page (static.h) */
    char *web_root;
    int web_off;
} srv_config;

/*
 * Read `env_file` (KEY=VALUE lines, '#' comments, optional quotes, optional
 * "export " prefix) into the environment without overriding variables that
 * are already set. A missing file is fine unless `required`. Returns 0, or -1
 * with a message in errbuf.
 */
int srv_config_load_env_file(const char *env_file, int required, char *errbuf,
                             size_t errlen);

/*
 * Fill cfg from the environment (after srv_config_load_env_file). Returns 0,
 * or -1 with a message in errbuf for a malformed value.
 */
int srv_config_from_env(srv_config *cfg, char *errbuf, size_t errlen);

/* Parse "HOST:PORT", ":PORT" or "PORT" into cfg. Returns 0 or -1. */
int srv_config_parse_bind(srv_config *cfg, const char *spec);

struct addrinfo;
/* The listen address of cfg (host, port) as a new getaddrinfo list for a
 * passive TCP socket (freeaddrinfo). NULL with a message in errbuf. */
struct addrinfo *srv_config_bind_addr(const srv_config *cfg, char *errbuf, size_t errlen);

/* Free what srv_config_from_env allocated. */
void srv_config_free(srv_config *cfg);

/* 1 for "1", "true", "yes", "on" (any case), else 0. */
int srv_config_truthy(const char *v);

#endif

/*
 * main.c - zju-chat-server: flags, configuration, the startup report, and
 * the supervisor. The supervisor opens one SO_REUSEPORT listening socket
 * per worker (listeners.c: a port in use is an error, not a shared port),
 * forks -w worker processes, each serving its own socket, restarts a worker
 * that exits (with a growing backoff when it keeps crashing) on the same
 * socket, and turns SIGTERM/SIGINT into a graceful drain of every worker; a
 * second signal kills them at once. Even -w 1 runs under the supervisor, so
 * a crash is always survived. SIGHUP reloads ACCESS_TOKENS_FILE: checked
 * here first, then forwarded to the workers, which read it again.
 */
#include "accesslog.h"
#include "config.h"
#include "proxies.h"
#include "listeners.h"
#include "shared.h"
#include "tokens.h"
#include "worker.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zjuchat.h>

#define MAX_WORKERS 256
#define RESTART_MIN_MS 100
#define RESTART_MAX_MS 5000
#define KILL_GRACE_S 5 /* after DRAIN_TIMEOUT, before SIGKILL */

/* The access tokens (NULL: ACCESS_TOKENS_FILE unset). Kept up to date on
 * SIGHUP, so that a worker forked later (a restart) starts with the table
 * its siblings reloaded, not the one of the server's start. */
static srv_tokens *tokens;

typedef struct slot {
    pid_t pid;
    long started_ms;
    long backoff_ms;
    long restart_at_ms; /* 0: not waiting for a restart */
} slot;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: zju-chat-server [-b HOST:PORT] [-w WORKERS] [--env-file PATH]\n"
        "\n"
        "Serves POST /api/chat (the ZJU Chat API relay), OpenAI's API under /v1\n"
        "(chat/completions, embeddings, models) and GET /healthz.\n"
        "\n"
        "  -b, --bind HOST:PORT  listen address (default 0.0.0.0:$PORT, PORT=5001;\n"
        "                        IPv6 as [::1]:PORT); an address in use is an error\n"
        "  -w, --workers N       worker processes (default: number of cores)\n"
        "      --env-file PATH   read KEY=VALUE settings (default ./.env if present);\n"
        "                        variables already in the environment win\n"
        "  -h, --help            this help\n"
        "\n"
        "Environment: ZJU_API_KEY, ZJU_BASE_URL, PORT, DEFAULT_MODEL,\n"
        "DEFAULT_EMBEDDING_MODEL, CORS_ORIGINS,\n"
        "FLASK_DEBUG/DEBUG, ZJU_CONNECT_TIMEOUT_MS, ZJU_FIRST_BYTE_TIMEOUT_MS,\n"
        "ZJU_IDLE_TIMEOUT_MS, ZJU_TOTAL_TIMEOUT_MS, HEARTBEAT_MS, MAX_BODY_BYTES,\n"
        "MAX_HEADER_BYTES, MAX_CONNECTIONS, REQUEST_TIMEOUT, DRAIN_TIMEOUT,\n"
        "TRUSTED_PROXIES, MODELS, MODELS_CACHE_TTL,\n"
        "ACCESS_TOKENS_FILE (SIGHUP reloads it), ACCESS_LOG_FORMAT, IP_RPM, IP_TPM,\n"
        "LIMITS_KEYS, METRICS_ALLOW, METRICS_TOKEN, REDIS_URL, REDIS_FAILURE,\n"
        "REDIS_PREFIX, REDIS_TIMEOUT_MS.\n"
        "See zju-chat-server(8).\n");
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Streams hold two descriptors each; use all the process may have. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void startup_report(const srv_config *cfg)
{
    srv_log("zju-chat-server: upstream %s, default model %s, %d worker(s)",
            cfg->base_url ? cfg->base_url : ZJUCHAT_DEFAULT_BASE_URL,
            cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL,
            cfg->workers);
    if (cfg->ip_rpm > 0 || cfg->ip_tpm > 0)
        srv_log("rate limits per client address: IP_RPM=%ld IP_TPM=%ld (0: none)",
                cfg->ip_rpm, cfg->ip_tpm);
    if (cfg->redis.url) { /* never the URL itself: it may hold a password */
        char where[300];
        if (cfg->redis.socket)
            snprintf(where, sizeof where, "%s", cfg->redis.socket);
        else
            snprintf(where, sizeof where, "%s port %d", cfg->redis.host, cfg->redis.port);
        srv_log(
            "rate limits shared through Redis at %s (db %ld, keys %s*, timeout %ld ms); "
            "REDIS_FAILURE=%s",
            where, cfg->redis.db, cfg->redis.prefix, cfg->redis.timeout_ms,
            cfg->redis.failure_open ? "open" : "closed");
    }
    if (!cfg->api_key)
        srv_log("WARNING: ZJU_API_KEY is not set: every POST /api/chat will answer 500 "
                "and the upstream is never called. Set ZJU_API_KEY (environment or "
                ".env).");
    if (strcmp(cfg->cors_origins, "*") == 0)
        srv_log("WARNING: CORS_ORIGINS is '*': any web site may call this server from "
                "a browser. Set CORS_ORIGINS to your frontend's origin(s) in "
                "production.");
    if (cfg->cors_notice)
        srv_log("WARNING: %s", cfg->cors_notice);
    if (cfg->debug)
        srv_log("debug logging on (FLASK_DEBUG/DEBUG); the API key is never logged");
    if (!cfg->access_tokens_file)
        srv_log("WARNING: ACCESS_TOKENS_FILE is not set: the API is open to anyone who "
                "can reach this server, on the server's key. Set ACCESS_TOKENS_FILE to "
                "require Authorization: Bearer <token>.");
    else if (srv_tokens_count(tokens) == 0)
        srv_log("WARNING: access tokens: none in %s: every API request is refused "
                "(401) until tokens are added and SIGHUP sent",
                cfg->access_tokens_file);
    else
        srv_log("access tokens: %zu loaded from %s", srv_tokens_count(tokens),
                cfg->access_tokens_file);
}

/* SIGHUP: the file is checked here first, so that a bad one is reported
 * once and the workers are not disturbed; a good one becomes the table of
 * later forks, and the workers read it again themselves. */
static int reload_tokens(const srv_config *cfg)
{
    const char *path = cfg->access_tokens_file;
    if (!path) {
        srv_log("SIGHUP: ACCESS_TOKENS_FILE is not set; nothing to reload");
        return 0;
    }
    char err[512];
    srv_tokens *fresh = NULL;
    if (srv_tokens_load(path, &fresh, err, sizeof err) < 0) {
        srv_log("%s; keeping the %zu tokens loaded before", err,
                srv_tokens_count(tokens));
        return 0;
    }
    srv_tokens_unref(tokens);
    tokens = fresh;
    srv_log("SIGHUP: %zu access tokens in %s; reloading the workers",
            srv_tokens_count(fresh), path);
    return 1;
}

/* Worker `i` on its socket fds[i]. It closes its copies of the other
 * workers' sockets: each socket must stop listening as soon as its own
 * worker drains and the supervisor let it go. */
static pid_t spawn(const srv_config *cfg, int *fds, int n, int i, const sigset_t *old)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    srv_shared_attach(i); /* gives back what a dead worker in slot i held */
    int mine = fds[i];
    fds[i] = -1;
    srv_listeners_close(fds, n);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    /* SIGHUP stays blocked until the worker handles it (worker.c): one
     * forwarded meanwhile then waits instead of killing the worker. */
    sigset_t mask = *old;
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_SETMASK, &mask, NULL);
    /* the child's copy of the supervisor's reference becomes the worker's */
    _exit(srv_worker_run(cfg, mine, tokens));
}

static void signal_all(slot *s, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (s[i].pid > 0)
            kill(s[i].pid, sig);
}

/* Stop: close the supervisor's copies of the listening sockets first. A
 * socket stays in the listen state while any process holds it, and the
 * kernel would queue connections there that no draining worker accepts;
 * once each worker has closed its own copy too, new connections are
 * refused. Then the workers drain. */
static void begin_stop(slot *s, int n, int *fds)
{
    srv_listeners_close(fds, n);
    signal_all(s, n, SIGTERM);
}

static int supervise(const srv_config *cfg, int *fds)
{
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, &old);

    slot slots[MAX_WORKERS];
    int n = cfg->workers;
    memset(slots, 0, sizeof slots);
    for (int i = 0; i < n; i++) {
        slots[i].backoff_ms = RESTART_MIN_MS;
        slots[i].started_ms = now_ms();
        slots[i].pid = spawn(cfg, fds, n, i, &old);
    }
    int stopping = 0, exit_code = 0;
    long kill_at = 0;
    for (;;) {
        struct timespec ts = {0, 100 * 1000000};
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &ts);
        if (sig == SIGHUP && !stopping && reload_tokens(cfg))
            signal_all(slots, n, SIGHUP);
        if (sig == SIGTERM || sig == SIGINT) {
            if (!stopping) {
                srv_log("%s: draining workers (up to %lds)",
                        sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg->drain_timeout_s);
                stopping = 1;
                kill_at = now_ms() + (cfg->drain_timeout_s + KILL_GRACE_S) * 1000;
                begin_stop(slots, n, fds);
            } else {
                srv_log("second signal: stopping workers now");
                signal_all(slots, n, SIGKILL);
            }
        }
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            for (int i = 0; i < n; i++) {
                if (slots[i].pid != pid)
                    continue;
                slots[i].pid = 0;
                /* Restarted even after a clean exit (a worker drained on its
                 * own SIGTERM): its socket is still open here, and the
                 * connections the kernel keeps queueing on it need a worker. */
                if (stopping)
                    break;
                if (WIFEXITED(st) && WEXITSTATUS(st) == 2) {
                    srv_log("worker %ld could not start; shutting down", (long)pid);
                    stopping = 1;
                    exit_code = 1;
                    kill_at = now_ms() + KILL_GRACE_S * 1000;
                    begin_stop(slots, n, fds);
                    break;
                }
                long alive = now_ms() - slots[i].started_ms;
                /* a worker that keeps dying right away backs off, up to 5 s */
                if (alive < 1000)
                    slots[i].backoff_ms = slots[i].backoff_ms * 2 > RESTART_MAX_MS
                                              ? RESTART_MAX_MS
                                              : slots[i].backoff_ms * 2;
                else
                    slots[i].backoff_ms = RESTART_MIN_MS;
                slots[i].restart_at_ms = now_ms() + slots[i].backoff_ms;
                if (WIFSIGNALED(st))
                    srv_log("worker %ld killed by signal %d; restarting in %ldms",
                            (long)pid, WTERMSIG(st), slots[i].backoff_ms);
                else
                    srv_log("worker %ld exited with status %d; restarting in %ldms",
                            (long)pid, WEXITSTATUS(st), slots[i].backoff_ms);
                break;
            }
        }
        int alive = 0;
        for (int i = 0; i < n; i++) {
            if (!stopping && slots[i].pid == 0 && slots[i].restart_at_ms &&
                now_ms() >= slots[i].restart_at_ms) {
                slots[i].restart_at_ms = 0;
                slots[i].started_ms = now_ms();
                slots[i].pid = spawn(cfg, fds, n, i, &old);
                if (slots[i].pid < 0) {
                    slots[i].pid = 0;
                    slots[i].restart_at_ms = now_ms() + RESTART_MAX_MS;
                }
            }
            alive += slots[i].pid > 0;
        }
        if (stopping && alive == 0)
            break;
        if (stopping && kill_at && now_ms() > kill_at) {
            srv_log("workers still running after the drain deadline; killing them");
            signal_all(slots, n, SIGKILL);
            kill_at = 0;
        }
    }
    srv_log("server stopped");
    return exit_code;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"bind", required_argument, NULL, 'b'},
                                         {"workers", required_argument, NULL, 'w'},
                                         {"env-file", required_argument, NULL, 'e'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *bind_spec = NULL, *env_file = NULL;
    long workers = 0;
    int c;
    while ((c = getopt_long(argc, argv, "b:w:h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            bind_spec = optarg;
            break;
        case 'w': {
            char *end;
            workers = strtol(optarg, &end, 10);
            if (*end || workers < 1 || workers > MAX_WORKERS) {
                fprintf(stderr, "zju-chat-server: -w wants 1..%d\n", MAX_WORKERS);
                return 2;
            }
            break;
        }
        case 'e':
            env_file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    char err[512];
    if (srv_config_load_env_file(env_file ? env_file : ".env", env_file != NULL, err,
                                 sizeof err) < 0) {
        fprintf(stderr, "zju-chat-server: %s\n", err);
        return 2;
    }
    srv_config cfg;
    if (srv_config_from_env(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "zju-chat-server: %s\n", err);
        return 2;
    }
    srv_log_set_secret(cfg.api_key);
    srv_proxies *proxies = NULL; /* lives as long as the process */
    if (srv_proxies_parse(cfg.trusted_proxies, &proxies, err, sizeof err) < 0) {
        fprintf(stderr, "zju-chat-server: %s\n", err);
        srv_config_free(&cfg);
        return 2;
    }
    srv_access_set_proxies(proxies);
    srv_access_set_json(cfg.access_log_json);
    if (cfg.access_tokens_file &&
        srv_tokens_load(cfg.access_tokens_file, &tokens, err, sizeof err) < 0) {
        fprintf(stderr, "zju-chat-server: %s\n", err);
        srv_config_free(&cfg);
        return 2;
    }
    if (bind_spec && srv_config_parse_bind(&cfg, bind_spec) < 0) {
        fprintf(stderr, "zju-chat-server: bad -b value \"%s\" (want HOST:PORT)\n",
                bind_spec);
        srv_config_free(&cfg);
        return 2;
    }
    if (workers > 0)
        cfg.workers = (int)workers;
    if (cfg.workers > MAX_WORKERS)
        cfg.workers = MAX_WORKERS;
    /* before any fork: every worker maps the same limits and metrics (the
     * region lives as long as the process) */
    if (srv_shared_setup(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "zju-chat-server: %s\n", err);
        srv_config_free(&cfg);
        return 2;
    }
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    if (zjuchat_global_init() != ZJUCHAT_OK) {
        srv_log("cannot initialise libcurl");
        srv_config_free(&cfg);
        return 1;
    }
    static int fds[MAX_WORKERS];
    if (srv_listeners_open(&cfg, fds, cfg.workers) < 0) {
        srv_config_free(&cfg);
        return 1;
    }
    startup_report(&cfg);
    char where[300];
    srv_listen_addr_str(&cfg, where, sizeof where);
    srv_log("listening on http://%s", where);
    int rc = supervise(&cfg, fds);
    srv_listeners_close(fds, cfg.workers);
    srv_tokens_unref(tokens);
    srv_config_free(&cfg);
    return rc;
}

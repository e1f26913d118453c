/*
 * fuzz_env.c - libFuzzer driver for the server's .env and environment
 * parsing (src/server/config.c): the input is a .env file.
 *
 * config.c and the .env reader it calls (src/lib/dotenv.c, shared with
 * the CLI) are linked with -Wl,--wrap=setenv,--wrap=getenv (fuzz/build.sh),
 * so that their setenv/getenv calls go to a private map here instead of the
 * process environment: the real environment would grow with every input
 * (glibc never frees setenv strings) and leak state between inputs. After the file is
 * loaded, srv_config_from_env reads the map, and a BIND entry, when present, goes through
 * srv_config_parse_bind.
 *
 * Checked: every key handed to setenv is non-empty and has no '=' or LF (a
 * CR inside a key is odd but harmless); values have no LF; a successful
 * config has the invariants the server relies on (CORS list set, a request timeout, a
 * connection limit, a port in range); error messages are NUL-terminated within their
 * buffer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAP_MAX 256

static struct {
    char *key, *val;
} env_map[MAP_MAX];
static size_t env_n;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_env: invariant broken: %s\n", what);
    abort();
}

int __wrap_setenv(const char *key, const char *val, int overwrite);
char *__wrap_getenv(const char *key);

int __wrap_setenv(const char *key, const char *val, int overwrite)
{
    if (!key || !*key || strchr(key, '='))
        die("setenv with an empty key or a key holding '='");
    if (strchr(key, '\n') || strchr(val, '\n'))
        die("line end inside a key or value");
    for (size_t i = 0; i < env_n; i++)
        if (strcmp(env_map[i].key, key) == 0) {
            if (overwrite) {
                free(env_map[i].val);
                env_map[i].val = strdup(val);
            }
            return 0;
        }
    if (env_n == MAP_MAX)
        return 0; /* the file is bounded by max_len, this only caps the map */
    env_map[env_n].key = strdup(key);
    env_map[env_n].val = strdup(val);
    if (!env_map[env_n].key || !env_map[env_n].val)
        abort();
    env_n++;
    return 0;
}

char *__wrap_getenv(const char *key)
{
    for (size_t i = 0; i < env_n; i++)
        if (strcmp(env_map[i].key, key) == 0)
            return env_map[i].val;
    return NULL;
}

static void map_clear(void)
{
    for (size_t i = 0; i < env_n; i++) {
        free(env_map[i].key);
        free(env_map[i].val);
    }
    env_n = 0;
}

#include "config.h"

static int memfd = -1;
static char memfd_path[64];

static void check_errbuf(const char *buf, size_t cap)
{
    if (!memchr(buf, '\0', cap))
        die("error message not NUL-terminated");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memfd < 0) {
        /* One in-memory file reused for every input: no disk, no cleanup. */
        memfd = memfd_create("fuzz-env", 0);
        if (memfd < 0)
            abort();
        snprintf(memfd_path, sizeof memfd_path, "/proc/self/fd/%d", memfd);
    }
    if (ftruncate(memfd, 0) != 0 || pwrite(memfd, data, size, 0) != (ssize_t)size)
        abort();

    char err[256];
    memset(err, 'x', sizeof err);
    err[sizeof err - 1] = '\0';
    int rc = srv_config_load_env_file(memfd_path, 1, err, sizeof err);
    check_errbuf(err, sizeof err);
    if (rc != 0 && rc != -1)
        die("load_env_file returned neither 0 nor -1");

    srv_config cfg;
    rc = srv_config_from_env(&cfg, err, sizeof err);
    check_errbuf(err, sizeof err);
    if (rc == 0) {
        if (!cfg.cors_origins)
            die("no CORS origins after success");
        if (cfg.request_timeout_s <= 0 || cfg.max_connections <= 0)
            die("request timeout or connection limit not positive");
        if (cfg.port < 0 || cfg.port > 65535)
            die("port out of range");
        const char *bind = __wrap_getenv("BIND");
        if (bind && srv_config_parse_bind(&cfg, bind) == 0) {
            if (cfg.port < 0 || cfg.port > 65535)
                die("parse_bind accepted a port out of range");
            if (!memchr(cfg.host, '\0', sizeof cfg.host))
                die("host not NUL-terminated");
        }
        (void)srv_config_truthy(__wrap_getenv("DEBUG"));
        srv_config_free(&cfg);
    } else if (rc != -1) {
        die("from_env returned neither 0 nor -1");
    } else {
#ifdef FUZZ_ENV_FREE_ON_ERROR
        /* Known finding (fuzz/regressions/fuzz_env/leak-*): from_env keeps
         * its strings on -1. Built with this only to fuzz past it. */
        srv_config_free(&cfg);
#endif
    }
    map_clear();
    return 0;
}

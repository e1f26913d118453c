/*
 * mockproc.h - start and stop the bundled mock upstream from a C test, and
 * read or change its state over its control endpoints. Header-only so each
 * test program stays a single file for the Makefile.
 */
#ifndef ZJUCHAT_TEST_MOCKPROC_H
#define ZJUCHAT_TEST_MOCKPROC_H

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct mockproc {
    pid_t pid;
    int port;
    char base[160]; /* http://127.0.0.1:PORT/v1 */
    char root[128]; /* http://127.0.0.1:PORT */
};

static const char *mock_build_dir(void)
{
    const char *d = getenv("ZJU_BUILD_DIR");
    return d && *d ? d : "build-asan";
}

/* Start the mock with extra arguments (NULL-terminated). Returns 0 or -1. */
static int mock_start(struct mockproc *m, const char *const *extra)
{
    int fds[2];
    if (pipe(fds))
        return -1;
    char path[512];
    snprintf(path, sizeof path, "%s/zju-mock-upstream", mock_build_dir());
    const char *argv[32] = {path, "--port", "0", "--quiet"};
    int n = 4;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    m->pid = fork();
    if (m->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[256] = "";
    int ok = f && fgets(line, sizeof line, f) != NULL;
    if (f)
        fclose(f);
    const char *p = strstr(line, "127.0.0.1:");
    if (!ok || !p) {
        kill(m->pid, SIGKILL);
        waitpid(m->pid, NULL, 0);
        return -1;
    }
    m->port = atoi(p + 10);
    const char *scheme = strncmp(line + 13, "https", 5) == 0 ? "https" : "http";
    if (strstr(line, "https://"))
        scheme = "https";
    snprintf(m->root, sizeof m->root, "%s://127.0.0.1:%d", scheme, m->port);
    snprintf(m->base, sizeof m->base, "%s/v1", m->root);
    return 0;
}

/* SIGTERM, wait; returns the exit status (0 when the mock ended cleanly). */
static int mock_stop(struct mockproc *m)
{
    int st = 0;
    kill(m->pid, SIGTERM);
    waitpid(m->pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct mock_buf {
    char data[65536];
    size_t len;
};

static size_t mock_collect(char *p, size_t s, size_t n, void *ud)
{
    struct mock_buf *b = ud;
    size_t len = s * n, room = sizeof b->data - 1 - b->len;
    if (len > room)
        len = room;
    memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return s * n;
}

/* GET or POST (body != NULL) a control path; returns the parsed JSON (new)
 * or NULL. Uses a fresh plain easy handle, never the library under test. */
static json_t *mock_control(struct mockproc *m, const char *path, const char *body)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", m->root, path);
    struct mock_buf *b = calloc(1, sizeof *b);
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, mock_collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 5L);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(e);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    json_t *j = rc == CURLE_OK ? json_loadb(b->data, b->len, 0, NULL) : NULL;
    free(b);
    return j;
}

static long mock_stat(struct mockproc *m, const char *name)
{
    json_t *j = mock_control(m, "/_mock/stats", NULL);
    long v = j ? (long)json_integer_value(json_object_get(j, name)) : -1;
    json_decref(j);
    return v;
}

#endif

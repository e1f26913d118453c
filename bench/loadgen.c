/* zju-loadgen: streaming load generator for the benchmarks of issue 4. Keeps C
 * concurrent streaming POST requests open for a duration or a count, checks
 * every stream (status, content type, exact event count, clean end, no
 * [DONE]) and prints one JSON line and one human line with throughput,
 * time-to-first-event percentiles and its own CPU time, so that a result
 * limited by the load generator can be told apart from one limited by the
 * server. Exit status: 0 when every stream passed, 1 otherwise, 2 on usage. */
#include "loadgen.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

static void usage(FILE *f)
{
    fputs("usage: zju-loadgen [options]\n"
          "  --host ADDR          IPv4 address of the server (127.0.0.1)\n"
          "  --port PORT          its port (5001)\n"
          "  --path PATH          request path (/api/chat)\n"
          "  -c, --concurrency N  streams kept open at once (1)\n"
          "  -n, --count N        total streams, then stop (0: until -d ends)\n"
          "  -d, --duration SEC   start streams for SEC seconds (10 unless -n)\n"
          "  --expect-events N    every stream must carry exactly N data events\n"
          "                       ([DONE] not counted)\n"
          "  --allow-done         accept a data: [DONE] event (OpenAI endpoints)\n"
          "  --openai-body        send {model,messages,stream} instead of\n"
          "                       {user_content,model,stream}\n"
          "  --no-stream          non-stream requests (stream:false)\n"
          "  --model M            model name, '#k=v' overrides for the mock\n"
          "  --content TEXT       user content\n"
          "  -H, --header 'K: V'  extra request header (repeatable)\n"
          "  --slow-readers       stop reading after the first event; hold the\n"
          "                       streams open for -d seconds\n"
          "  --rcvbuf BYTES       SO_RCVBUF of each connection\n"
          "  --src-addrs N        spread connections over 127.0.0.1..127.0.0.N\n"
          "  --connect-rate R     open at most R new connections per second\n"
          "  --timeout SEC        idle seconds before a stream fails (30)\n"
          "  --no-keepalive       one connection per stream\n"
          "  --warmup N           leave the first N streams out of latencies\n"
          "  --label TEXT         name of the run in the JSON line\n",
          f);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

enum {
    OPT_HOST = 256,
    OPT_PORT,
    OPT_PATH,
    OPT_EXPECT,
    OPT_ALLOW_DONE,
    OPT_OPENAI,
    OPT_NOSTREAM,
    OPT_MODEL,
    OPT_CONTENT,
    OPT_SLOW,
    OPT_RCVBUF,
    OPT_SRC,
    OPT_RATE,
    OPT_TIMEOUT,
    OPT_NOKA,
    OPT_WARMUP,
    OPT_LABEL,
};

static const struct option longopts[] = {
    {"host", required_argument, NULL, OPT_HOST},
    {"port", required_argument, NULL, OPT_PORT},
    {"path", required_argument, NULL, OPT_PATH},
    {"concurrency", required_argument, NULL, 'c'},
    {"count", required_argument, NULL, 'n'},
    {"duration", required_argument, NULL, 'd'},
    {"expect-events", required_argument, NULL, OPT_EXPECT},
    {"allow-done", no_argument, NULL, OPT_ALLOW_DONE},
    {"openai-body", no_argument, NULL, OPT_OPENAI},
    {"no-stream", no_argument, NULL, OPT_NOSTREAM},
    {"model", required_argument, NULL, OPT_MODEL},
    {"content", required_argument, NULL, OPT_CONTENT},
    {"header", required_argument, NULL, 'H'},
    {"slow-readers", no_argument, NULL, OPT_SLOW},
    {"rcvbuf", required_argument, NULL, OPT_RCVBUF},
    {"src-addrs", required_argument, NULL, OPT_SRC},
    {"connect-rate", required_argument, NULL, OPT_RATE},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"no-keepalive", no_argument, NULL, OPT_NOKA},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"label", required_argument, NULL, OPT_LABEL},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse(int argc, char **argv, struct lg_opts *o)
{
    *o = (struct lg_opts){
        .host = "127.0.0.1",
        .port = 5001,
        .path = "/api/chat",
        .concurrency = 1,
        .expect_events = -1,
        .stream = 1,
        .keepalive = 1,
        .timeout = 30,
        .model = "deepseek-v3-671b",
        .content = "Hello, benchmark",
        .label = "run",
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:n:d:H:h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_HOST:
            o->host = optarg;
            break;
        case OPT_PORT:
            o->port = atoi(optarg);
            break;
        case OPT_PATH:
            o->path = optarg;
            break;
        case 'c':
            o->concurrency = atoi(optarg);
            break;
        case 'n':
            o->count = strtoull(optarg, NULL, 10);
            break;
        case 'd':
            o->duration = atof(optarg);
            break;
        case OPT_EXPECT:
            o->expect_events = atol(optarg);
            break;
        case OPT_ALLOW_DONE:
            o->allow_done = 1;
            break;
        case OPT_OPENAI:
            o->openai_body = 1;
            break;
        case OPT_NOSTREAM:
            o->stream = 0;
            break;
        case OPT_MODEL:
            o->model = optarg;
            break;
        case OPT_CONTENT:
            o->content = optarg;
            break;
        case 'H':
            if (o->nheaders >= (int)(sizeof o->headers / sizeof o->headers[0])) {
                fprintf(stderr, "zju-loadgen: too many headers\n");
                return -1;
            }
            o->headers[o->nheaders++] = optarg;
            break;
        case OPT_SLOW:
            o->slow_readers = 1;
            break;
        case OPT_RCVBUF:
            o->rcvbuf = atoi(optarg);
            break;
        case OPT_SRC:
            o->src_addrs = atoi(optarg);
            break;
        case OPT_RATE:
            o->connect_rate = atof(optarg);
            break;
        case OPT_TIMEOUT:
            o->timeout = atof(optarg);
            break;
        case OPT_NOKA:
            o->keepalive = 0;
            break;
        case OPT_WARMUP:
            o->warmup = strtoull(optarg, NULL, 10);
            break;
        case OPT_LABEL:
            o->label = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind < argc || o->concurrency < 1 || o->port < 1 || o->port > 65535 ||
        o->timeout <= 0 || o->src_addrs < 0 || o->src_addrs > 254 ||
        (o->slow_readers && !o->stream)) {
        fprintf(stderr, "zju-loadgen: bad arguments (see --help)\n");
        return -1;
    }
    if (o->count == 0 && o->duration <= 0)
        o->duration = 10;
    if (o->slow_readers && o->duration <= 0)
        o->duration = 10;
    return 0;
}

static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

static void report(const struct lg_opts *o, const struct lg_stats *st, double elapsed,
                   double cpu)
{
    printf("{\"label\":\"%s\",\"concurrency\":%d,\"completed\":%llu,\"failed\":%llu,"
           "\"fail_reasons\":{",
           o->label, o->concurrency, (unsigned long long)st->completed,
           (unsigned long long)st->failed);
    int first = 1;
    for (int i = 0; i < LG_F_COUNT; i++) {
        if (!st->fails[i])
            continue;
        printf("%s\"%s\":%llu", first ? "" : ",", lg_fail_names[i],
               (unsigned long long)st->fails[i]);
        first = 0;
    }
    printf("},\"connections\":%llu,\"elapsed_s\":%.3f,\"streams_per_s\":%.1f,"
           "\"events\":%llu,\"events_per_s\":%.1f,\"ttfe_p50_ms\":%.3f,"
           "\"ttfe_p99_ms\":%.3f,\"ttfe_max_ms\":%.3f,\"first_ttfe_ms\":%.3f,"
           "\"ttfe_warm_p50_ms\":%.3f,\"ttfe_warm_p99_ms\":%.3f,"
           "\"dur_p50_ms\":%.3f,\"dur_p99_ms\":%.3f,\"peak_active\":%llu,"
           "\"reached_first\":%llu,\"cpu_s\":%.3f,\"cpu_pct\":%.1f,\"ttfe_hist\":",
           (unsigned long long)st->connections, elapsed,
           elapsed > 0 ? (double)st->completed / elapsed : 0.0,
           (unsigned long long)st->events,
           elapsed > 0 ? (double)st->events / elapsed : 0.0,
           ms(lg_hist_pct(&st->ttfe, 50)), ms(lg_hist_pct(&st->ttfe, 99)),
           ms(st->ttfe.max), ms(st->first_ttfe_us), ms(lg_hist_pct(&st->ttfe_warm, 50)),
           ms(lg_hist_pct(&st->ttfe_warm, 99)), ms(lg_hist_pct(&st->dur, 50)),
           ms(lg_hist_pct(&st->dur, 99)), (unsigned long long)st->peak_active,
           (unsigned long long)st->reached_first, cpu,
           elapsed > 0 ? 100.0 * cpu / elapsed : 0.0);
    lg_hist_print_json(&st->ttfe, stdout);
    fputs("}\n", stdout);
    if (o->slow_readers)
        printf("# %s: %llu of %d slow readers reached their first event and were held "
               "%.1f s; loadgen cpu %.2f s\n",
               o->label, (unsigned long long)st->reached_first, o->concurrency, elapsed,
               cpu);
    else
        printf("# %s: %llu ok, %llu failed in %.1f s (%.1f streams/s, %.0f events/s), "
               "first event p50 %.2f ms p99 %.2f ms, peak %llu open, loadgen cpu %.2f s "
               "(%.0f%%)\n",
               o->label, (unsigned long long)st->completed,
               (unsigned long long)st->failed, elapsed,
               elapsed > 0 ? (double)st->completed / elapsed : 0.0,
               elapsed > 0 ? (double)st->events / elapsed : 0.0,
               ms(lg_hist_pct(&st->ttfe, 50)), ms(lg_hist_pct(&st->ttfe, 99)),
               (unsigned long long)st->peak_active, cpu,
               elapsed > 0 ? 100.0 * cpu / elapsed : 0.0);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct lg_opts o;
    if (parse(argc, argv, &o) < 0) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    struct event_base *base = event_base_new();
    if (!base) {
        fprintf(stderr, "zju-loadgen: event_base_new failed\n");
        return 1;
    }
    struct lg_stats *st = calloc(1, sizeof *st);
    if (!st)
        return 1;
    uint64_t t0 = lg_now_us();
    if (lg_run(base, &o, st) < 0)
        return 2;
    double elapsed = (double)(lg_now_us() - t0) / 1e6;
    report(&o, st, elapsed, cpu_seconds());
    int ok;
    if (o.slow_readers)
        ok = st->reached_first >= (uint64_t)o.concurrency && st->failed == 0;
    else
        ok = st->failed == 0 && st->completed > 0;
    free(st);
    event_base_free(base);
    return ok ? 0 : 1;
}

/* Fixed-size log-linear latency histogram for zju-loadgen: constant memory and
 * O(1) insertion, whatever the number of samples (a 10,000-stream run records
 * millions of events). */
#include "loadgen.h"

static unsigned ilog2(uint64_t v)
{
    return 63u - (unsigned)__builtin_clzll(v);
}

static size_t bucket_of(uint64_t v)
{
    if (v < LG_HIST_SUB)
        return (size_t)v;
    unsigned e = ilog2(v); /* >= 5 since LG_HIST_SUB is 32 */
    size_t idx = LG_HIST_SUB + (size_t)(e - 5) * LG_HIST_SUB +
                 (size_t)((v >> (e - 5)) - LG_HIST_SUB);
    return idx < LG_HIST_BUCKETS ? idx : LG_HIST_BUCKETS - 1;
}

/* Upper bound of a bucket, so a percentile is never under-reported. */
static uint64_t bucket_top(size_t idx)
{
    if (idx < LG_HIST_SUB)
        return idx;
    size_t e = (idx - LG_HIST_SUB) / LG_HIST_SUB + 5;
    uint64_t m = (idx - LG_HIST_SUB) % LG_HIST_SUB;
    return ((LG_HIST_SUB + m + 1) << (e - 5)) - 1;
}

/* What bucket idx reports: its upper bound, but never above the largest value
 * recorded, so a percentile is never over-reported either. */
static uint64_t bucket_value(const struct lg_hist *h, size_t idx)
{
    uint64_t top = bucket_top(idx);
    return top < h->max ? top : h->max;
}

void lg_hist_add(struct lg_hist *h, uint64_t us)
{
    h->b[bucket_of(us)]++;
    h->count++;
    h->sum += us;
    if (us > h->max)
        h->max = us;
}

uint64_t lg_hist_pct(const struct lg_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)((double)h->count * p / 100.0 + 0.5);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want)
            return bucket_value(h, i);
    }
    return h->max;
}

/* The non-empty buckets as a JSON array of [upper bound in us, count]: what
 * bench.py needs to pool the runs of several rounds into one percentile (the
 * p99 of all their samples, not a median of each run's own p99). */
void lg_hist_print_json(const struct lg_hist *h, FILE *f)
{
    const char *sep = "";
    fputc('[', f);
    for (size_t i = 0; i < LG_HIST_BUCKETS; i++) {
        if (!h->b[i])
            continue;
        fprintf(f, "%s[%llu,%lu]", sep, (unsigned long long)bucket_value(h, i),
                (unsigned long)h->b[i]);
        sep = ",";
    }
    fputc(']', f);
}

/*
 * Unit tests of loadtest/report.c, the --report writer of pos-loadtest:
 * per-second counters grow and stay bounded, per-second latency percentiles
 * are within the histogram's 1% steps, and the files written have a header
 * and one row per second (empty cells for missing samples), an <svg> per
 * chart, escaped text and no URL.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "report.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    static char buf[1 << 20];
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    return buf;
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void counts(void)
{
    struct report_counts c = {0};
    CHECK(report_counts_add(&c, 5, 3) == 0 && report_counts_add(&c, 5, 2) == 0);
    CHECK(c.n == 6 && report_counts_get(&c, 5) == 5 && report_counts_get(&c, 3) == 0);
    CHECK(report_counts_get(&c, 1000) == 0);
    CHECK(report_counts_add(&c, 700, 1) == 0 && report_counts_get(&c, 700) == 1 && c.n == 701);
    CHECK(report_counts_get(&c, 5) == 5);             /* kept across growth */
    CHECK(report_counts_add(&c, 24 * 3600, 1) == -1); /* bounded: a day */
    report_counts_free(&c);
}

static void latency(void)
{
    struct report_latency l;
    CHECK(report_latency_init(&l, 3) == 0);
    for (uint64_t us = 1; us <= 10000; us++)
        report_latency_add(&l, 1, us);
    double p50 = report_latency_percentile(&l, 1, 0.5),
           p99 = report_latency_percentile(&l, 1, 0.99);
    CHECK(fabs(p50 - 5000) <= 50 && fabs(p99 - 9900) <= 99); /* 1% steps */
    CHECK(report_latency_percentile(&l, 0, 0.5) == -1);      /* no sample that second */
    for (int i = 0; i < 10; i++)
        report_latency_add(&l, 2, (uint64_t)i);
    CHECK(report_latency_percentile(&l, 2, 0.5) == 4); /* exact below 100 us */
    report_latency_add(&l, 99, 50);                    /* a late second goes to the last */
    report_latency_add(&l, 0, 60ull * 1000 * 1000);    /* a minute: the last bucket */
    CHECK(report_latency_percentile(&l, 0, 1) >= 9e6);
    report_latency_free(&l);
}

static void files(void)
{
    char dir[] = "/tmp/pos-report-test-XXXXXX", path[256], err[256];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/sub", dir);
    CHECK(report_prepare_dir(path, err, sizeof(err)) == 0);
    double a[3] = {1, 2.5, 3}, b[3] = {5, NAN, 0}, hs[4] = {10, 12, 30, 11.5};
    const struct report_column cols[] = {{"a", a}, {"b", b}};
    const struct report_chart charts[] = {
        {REPORT_CHART_LINES, "A & B <per second>", "things", {0, 1}, 2},
        {REPORT_CHART_HISTOGRAM, "Handshakes", "ms", {0}, 0},
    };
    struct report_kv kv[1] = {{"key", "<b>value</b>"}};
    struct report r = {"t", kv, 1, 3, cols, 2, hs, 4, charts, 2};
    CHECK(report_write(path, &r, err, sizeof(err)) == 0);
    char csv[256];
    snprintf(csv, sizeof(csv), "%s/series.csv", path);
    CHECK(!strcmp(slurp(csv), "second,a,b\n0,1,5\n1,2.500,\n2,3,0\n"));
    snprintf(csv, sizeof(csv), "%s/handshakes.csv", path);
    CHECK(!strcmp(slurp(csv), "handshake,handshake_ms\n0,10.000\n1,12.000\n2,30.000\n3,11.500\n"));
    snprintf(csv, sizeof(csv), "%s/report.html", path);
    const char *html = slurp(csv);
    CHECK(count_of(html, "<svg") == 2 && count_of(html, "</svg>") == 2);
    CHECK(strstr(html, "A &amp; B &lt;per second&gt;") && !strstr(html, "<b>value"));
    CHECK(!strstr(html, "http") && !strstr(html, "<script") && !strstr(html, "url("));
    CHECK(count_of(html, "<polyline") == 3); /* a: one line; b: two, split by the NaN */
    /* a file where the directory should be */
    CHECK(report_prepare_dir(csv, err, sizeof(err)) == -1 && strstr(err, "not a directory"));
    CHECK(report_prepare_dir("/proc/none/x", err, sizeof(err)) == -1 &&
          strstr(err, "cannot create"));
    unlink(csv);
    snprintf(csv, sizeof(csv), "%s/series.csv", path);
    unlink(csv);
    snprintf(csv, sizeof(csv), "%s/handshakes.csv", path);
    unlink(csv);
    rmdir(path);
    rmdir(dir);
}

int main(void)
{
    counts();
    latency();
    files();
    return check_finish("loadtest-report");
}

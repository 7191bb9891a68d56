/*
 * The --report DIR of pos-loadtest: per-second series gathered during a run,
 * written afterwards as CSV (series.csv: one row per second; handshakes.csv:
 * one row per handshake) and as one self-contained report.html whose charts
 * are inline SVG drawn here (no script, no font, no URL: it opens offline).
 * The commands own the series; report_write only reads them.
 */
#ifndef POS_LOADTEST_REPORT_H
#define POS_LOADTEST_REPORT_H

#include <stddef.h>
#include <stdint.h>

/* A count per second that grows as seconds pass (zero-filled). */
struct report_counts {
    uint64_t *v;
    size_t n, cap;
};

/* report_counts_add adds |k| to |second|; returns 0 or -1 (out of memory, or past a day). */
int report_counts_add(struct report_counts *c, size_t second, uint64_t k);
uint64_t report_counts_get(const struct report_counts *c, size_t second);
void report_counts_free(struct report_counts *c);

/*
 * Latency per second: one log-scale histogram (1 us steps up to 100 us, then
 * 1% steps up to 10 s) per second of a run of |seconds| seconds.
 */
struct report_latency {
    uint32_t *b;
    size_t seconds;
};

int report_latency_init(struct report_latency *l, size_t seconds); /* 0 or -1 (memory) */
void report_latency_add(struct report_latency *l, size_t second, uint64_t us);
/* report_latency_percentile: |p| (0..1) of |second| in us, or -1 when it has no sample. */
double report_latency_percentile(const struct report_latency *l, size_t second, double p);
void report_latency_free(struct report_latency *l);

/* One CSV column of per-second values; a NaN is an empty cell (no sample that second). */
struct report_column {
    const char *name;
    const double *v; /* n_seconds values */
};

enum report_chart_kind {
    REPORT_CHART_LINES = 1,     /* columns |cols| over the seconds of the run */
    REPORT_CHART_HISTOGRAM = 2, /* distribution of the handshake times */
};

struct report_chart {
    int kind;
    const char *title, *unit; /* unit of the y axis (lines) or the x axis (histogram) */
    int cols[4];              /* indexes into report.cols (lines) */
    size_t n_cols;
};

struct report_kv {
    char key[48];
    char value[160];
};

struct report {
    const char *title; /* e.g. "pos-loadtest relay" */
    const struct report_kv *summary;
    size_t n_summary;
    size_t n_seconds;
    const struct report_column *cols;
    size_t n_cols;
    const double *handshake_ms;
    size_t n_handshakes;
    const struct report_chart *charts;
    size_t n_charts;
};

/*
 * report_prepare_dir makes |dir| (one level) unless it exists and checks that
 * files can be created in it, so that a bad --report fails before the load
 * runs. Returns 0, or -1 with a sentence in |err|.
 */
int report_prepare_dir(const char *dir, char *err, size_t errlen);

/*
 * report_write writes DIR/series.csv, DIR/handshakes.csv and DIR/report.html.
 * Returns 0, or -1 with a sentence naming the file in |err|.
 */
int report_write(const char *dir, const struct report *r, char *err, size_t errlen);

#endif

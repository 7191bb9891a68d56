/*
 * The --report DIR of pos-loadtest (see report.h): growable per-second
 * counters, per-second latency histograms, and the writer of the CSV files
 * and the self-contained HTML page. The charts are inline SVG computed here
 * (axes with round ticks, one polyline per series, bars for the histogram),
 * so the page needs no script, no font and no network.
 */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SECONDS (24 * 3600)
#define LAT_LINEAR 100                  /* 1 us buckets below this */
#define LAT_STEP 1.01                   /* then 1% wide ones */
#define LAT_BUCKETS (LAT_LINEAR + 1158) /* ln(10 s / 100 us) / ln(1.01) */

/* chart geometry (SVG user units) */
#define W 760
#define H 280
#define ML 72
#define MR 16
#define MT 48 /* title, then the legend */
#define MB 44

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
/* equal series stay visible: the later ones are dashed over the earlier */
static const char *const dashes[] = {"none", "7 4", "2 3", "9 3 2 3"};

int report_counts_add(struct report_counts *c, size_t second, uint64_t k)
{
    if (second >= MAX_SECONDS)
        return -1;
    if (second >= c->cap) {
        size_t cap = c->cap ? c->cap : 64;
        while (cap <= second)
            cap *= 2;
        uint64_t *v = realloc(c->v, cap * sizeof(*v));
        if (!v)
            return -1;
        memset(v + c->cap, 0, (cap - c->cap) * sizeof(*v));
        c->v = v;
        c->cap = cap;
    }
    c->v[second] += k;
    if (second >= c->n)
        c->n = second + 1;
    return 0;
}

uint64_t report_counts_get(const struct report_counts *c, size_t second)
{
    return second < c->n ? c->v[second] : 0;
}

void report_counts_free(struct report_counts *c)
{
    free(c->v);
    memset(c, 0, sizeof(*c));
}

static size_t lat_bucket(uint64_t us)
{
    if (us < LAT_LINEAR)
        return (size_t)us;
    size_t b = LAT_LINEAR + (size_t)(log((double)us / LAT_LINEAR) / log(LAT_STEP));
    return b < LAT_BUCKETS ? b : LAT_BUCKETS - 1;
}

static double lat_bucket_value(size_t b)
{
    return b < LAT_LINEAR ? (double)b : floor(LAT_LINEAR * pow(LAT_STEP, (double)(b - LAT_LINEAR)));
}

int report_latency_init(struct report_latency *l, size_t seconds)
{
    l->seconds = seconds ? seconds : 1;
    l->b = calloc(l->seconds * LAT_BUCKETS, sizeof(*l->b));
    return l->b ? 0 : -1;
}

void report_latency_add(struct report_latency *l, size_t second, uint64_t us)
{
    if (!l->b)
        return;
    if (second >= l->seconds)
        second = l->seconds - 1;
    l->b[second * LAT_BUCKETS + lat_bucket(us)]++;
}

double report_latency_percentile(const struct report_latency *l, size_t second, double p)
{
    if (!l->b || second >= l->seconds)
        return -1;
    const uint32_t *h = l->b + second * LAT_BUCKETS;
    uint64_t total = 0, acc = 0, want;
    for (size_t i = 0; i < LAT_BUCKETS; i++)
        total += h[i];
    if (total == 0)
        return -1;
    want = (uint64_t)ceil(p * (double)total);
    if (want == 0)
        want = 1;
    for (size_t i = 0; i < LAT_BUCKETS; i++) {
        acc += h[i];
        if (acc >= want)
            return lat_bucket_value(i);
    }
    return lat_bucket_value(LAT_BUCKETS - 1);
}

void report_latency_free(struct report_latency *l)
{
    free(l->b);
    memset(l, 0, sizeof(*l));
}

int report_prepare_dir(const char *dir, char *err, size_t errlen)
{
    char probe[4096];
    struct stat st;
    int fd;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "--report %s: cannot create the directory: %s", dir, strerror(errno));
        return -1;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "--report %s: not a directory", dir);
        return -1;
    }
    snprintf(probe, sizeof(probe), "%s/.pos-loadtest-XXXXXX", dir);
    fd = mkstemp(probe);
    if (fd < 0) {
        snprintf(err, errlen, "--report %s: cannot write there: %s", dir, strerror(errno));
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

/* cell prints a value the way the CSV and the SVG both want it: integers plainly. */
static void cell(FILE *f, double v)
{
    if (isnan(v))
        return;
    if (v == floor(v) && fabs(v) < 1e15)
        fprintf(f, "%.0f", v);
    else
        fprintf(f, "%.3f", v);
}

static int write_csv(const char *dir, const struct report *r, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/series.csv", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        goto fail;
    fprintf(f, "second");
    for (size_t c = 0; c < r->n_cols; c++)
        fprintf(f, ",%s", r->cols[c].name);
    fprintf(f, "\n");
    for (size_t s = 0; s < r->n_seconds; s++) {
        fprintf(f, "%zu", s);
        for (size_t c = 0; c < r->n_cols; c++) {
            fputc(',', f);
            cell(f, r->cols[c].v[s]);
        }
        fputc('\n', f);
    }
    if (fclose(f) != 0)
        goto fail;
    snprintf(path, sizeof(path), "%s/handshakes.csv", dir);
    f = fopen(path, "w");
    if (!f)
        goto fail;
    fprintf(f, "handshake,handshake_ms\n");
    for (size_t i = 0; i < r->n_handshakes; i++)
        fprintf(f, "%zu,%.3f\n", i, r->handshake_ms[i]);
    if (fclose(f) != 0)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    return -1;
}

static void html_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else
            fputc(*s, f);
    }
}

/* nice_step: a round step (1, 2 or 5 times a power of ten) for about |ticks| steps over |span|. */
static double nice_step(double span, int ticks)
{
    double raw = span / ticks, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

static void svg_open(FILE *f, const char *title)
{
    fprintf(f, "<figure><svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\">", W, H,
            W, H);
    fputs("<title>", f);
    html_text(f, title);
    fprintf(f, "</title><text x=\"%d\" y=\"20\" class=\"t\">", ML);
    html_text(f, title);
    fputs("</text>", f);
}

/* y_axis draws the horizontal grid with labels for 0..ymax; returns the (rounded) top. */
static double y_axis(FILE *f, double ymax, const char *unit)
{
    double step = nice_step(ymax > 0 ? ymax : 1, 5),
           top = ceil((ymax > 0 ? ymax : 1) / step) * step;
    for (double v = 0; v <= top + step / 2; v += step) {
        double y = H - MB - v / top * (H - MT - MB);
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" class=\"g\"/>", ML, W - MR, y,
                y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" class=\"yl\">%g</text>", ML - 6, y + 4, v);
    }
    fprintf(f, "<text x=\"14\" y=\"%d\" class=\"u\" transform=\"rotate(-90 14 %d)\">", H / 2,
            H / 2);
    html_text(f, unit);
    fputs("</text>", f);
    return top;
}

static void x_label(FILE *f, double x, const char *fmt, double v)
{
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" class=\"xl\">", x, H - MB + 16);
    fprintf(f, fmt, v);
    fputs("</text>", f);
}

static void chart_lines(FILE *f, const struct report *r, const struct report_chart *c)
{
    double ymax = 0, top;
    size_t n = r->n_seconds;
    double span = n > 1 ? (double)(n - 1) : 1, lx = ML;
    for (size_t k = 0; k < c->n_cols; k++)
        for (size_t s = 0; s < n; s++)
            if (!isnan(r->cols[c->cols[k]].v[s]) && r->cols[c->cols[k]].v[s] > ymax)
                ymax = r->cols[c->cols[k]].v[s];
    svg_open(f, c->title);
    top = y_axis(f, ymax, c->unit);
    double xstep = nice_step(span, 8);
    if (xstep < 1)
        xstep = 1;
    for (double t = 0; t <= (n > 1 ? span : 0) + 1e-9; t += xstep)
        x_label(f, ML + (n > 1 ? t / span : 0.5) * (W - ML - MR), "%g", t);
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"u\">second of the run</text>", (W + ML) / 2, H - 6);
    for (size_t k = 0; k < c->n_cols; k++) {
        const struct report_column *col = &r->cols[c->cols[k]];
        const char *color = colors[k % 4];
        int open = 0;
        for (size_t s = 0; s <= n; s++) {
            int have = s < n && !isnan(col->v[s]);
            if (have && !open) {
                fprintf(f,
                        "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                        "stroke-dasharray=\"%s\" points=\"",
                        color, dashes[k % 4]);
                open = 1;
            } else if (!have && open) {
                fputs("\"/>", f);
                open = 0;
            }
            if (have)
                fprintf(f, "%.1f,%.1f ", ML + (n > 1 ? (double)s / span : 0.5) * (W - ML - MR),
                        H - MB - col->v[s] / top * (H - MT - MB));
        }
        for (size_t s = 0; n <= 120 && s < n; s++)
            if (!isnan(col->v[s]))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>",
                        ML + (n > 1 ? (double)s / span : 0.5) * (W - ML - MR),
                        H - MB - col->v[s] / top * (H - MT - MB), color);
        /* legend: one row under the title */
        fprintf(f, "<rect x=\"%.1f\" y=\"27\" width=\"12\" height=\"12\" fill=\"%s\"/>", lx, color);
        fprintf(f, "<text x=\"%.1f\" y=\"37\" class=\"lg\">", lx + 16);
        html_text(f, col->name);
        lx += 40 + 7.5 * (double)strlen(col->name);
        fputs("</text>", f);
    }
    fputs("</svg></figure>\n", f);
}

static void chart_histogram(FILE *f, const struct report *r, const struct report_chart *c)
{
    const double *v = r->handshake_ms;
    size_t n = r->n_handshakes;
    svg_open(f, c->title);
    if (n == 0) {
        y_axis(f, 1, "connections");
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"u\">no handshake completed</text>",
                (W + ML) / 2, H / 2);
        fputs("</svg></figure>\n", f);
        return;
    }
    double lo = v[0], hi = v[0];
    for (size_t i = 1; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    double width = nice_step(hi - lo > 0 ? hi - lo : 1, 24), start = floor(lo / width) * width;
    size_t nb = (size_t)floor((hi - start) / width) + 1;
    if (nb > 64)
        nb = 64;
    uint64_t *bins = calloc(nb, sizeof(*bins)), most = 0;
    if (!bins) {
        fputs("</svg></figure>\n", f);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t b = (size_t)floor((v[i] - start) / width);
        bins[b < nb ? b : nb - 1]++;
    }
    for (size_t b = 0; b < nb; b++)
        most = bins[b] > most ? bins[b] : most;
    double top = y_axis(f, (double)most, "connections"), bw = (double)(W - ML - MR) / (double)nb;
    for (size_t b = 0; b < nb; b++) {
        double h = (double)bins[b] / top * (H - MT - MB);
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">"
                "<title>%g-%g ms: %llu</title></rect>",
                ML + (double)b * bw + 1, H - MB - h, bw > 3 ? bw - 2 : bw, h, colors[0],
                start + (double)b * width, start + (double)(b + 1) * width,
                (unsigned long long)bins[b]);
    }
    size_t every = nb > 8 ? (nb + 7) / 8 : 1;
    for (size_t b = 0; b <= nb; b += every)
        x_label(f, ML + (double)b * bw, "%g", start + (double)b * width);
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"u\">", (W + ML) / 2, H - 6);
    html_text(f, c->unit);
    fputs("</text></svg></figure>\n", f);
    free(bins);
}

static const char style[] =
    "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}figure{margin:1.5em 0}"
    "svg{background:#fff;border:1px solid #ddd}.g{stroke:#e4e4e4}.t{font-size:15px;"
    "font-weight:bold}.yl{font-size:11px;text-anchor:end}.xl{font-size:11px;text-anchor:middle}"
    ".u{font-size:12px;text-anchor:middle;fill:#555}.lg{font-size:12px}";

static int write_html(const char *dir, const struct report *r, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/report.html", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>", f);
    html_text(f, r->title);
    fprintf(f, " report</title><style>%s</style></head><body>\n<h1>", style);
    html_text(f, r->title);
    fputs("</h1>\n<table>\n", f);
    for (size_t i = 0; i < r->n_summary; i++) {
        fputs("<tr><th>", f);
        html_text(f, r->summary[i].key);
        fputs("</th><td>", f);
        html_text(f, r->summary[i].value);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
    for (size_t i = 0; i < r->n_charts; i++) {
        if (r->charts[i].kind == REPORT_CHART_LINES)
            chart_lines(f, r, &r->charts[i]);
        else
            chart_histogram(f, r, &r->charts[i]);
    }
    fputs("<p>Raw series: series.csv (one row per second of the run) and handshakes.csv "
          "(one row per handshake), beside this page.</p>\n</body></html>\n",
          f);
    if (fclose(f) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int report_write(const char *dir, const struct report *r, char *err, size_t errlen)
{
    if (write_csv(dir, r, err, errlen) != 0)
        return -1;
    return write_html(dir, r, err, errlen);
}

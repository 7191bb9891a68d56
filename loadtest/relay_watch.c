/* The relay's RSS, CPU and metrics, for `pos-loadtest idle` (relay_watch.h). */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "relay_watch.h"

#define BODY_MAX (1024 * 1024)

static FILE *open_proc(pid_t pid, const char *what)
{
    char path[64];
    if (pid > 0)
        snprintf(path, sizeof(path), "/proc/%ld/%s", (long)pid, what);
    else
        snprintf(path, sizeof(path), "/proc/self/%s", what);
    return fopen(path, "r");
}

long proc_rss_kib(pid_t pid)
{
    char line[256];
    long v = -1;
    FILE *f = open_proc(pid, "status");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

double proc_cpu_s(pid_t pid)
{
    char buf[1024];
    unsigned long ut, st;
    clockid_t clk;
    struct timespec ts;
    /* the process's CPU clock counts nanoseconds; /proc's figures are in clock ticks (10 ms),
     * too coarse for a parked hold that costs the relay 0.1 s */
    if (clock_getcpuclockid(pid > 0 ? pid : getpid(), &clk) == 0 && clock_gettime(clk, &ts) == 0)
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    FILE *f = open_proc(pid, "stat");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    /* the command name may hold spaces and parentheses: fields start after the last ')' */
    char *p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

struct body {
    char *p;
    size_t len;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct body *b = arg;
    size_t n = size * nmemb;
    if (b->len + n > BODY_MAX)
        return 0;
    char *p = realloc(b->p, b->len + n + 1);
    if (!p)
        return 0;
    memcpy(p + b->len, data, n);
    b->p = p;
    b->len += n;
    p[b->len] = 0;
    return n;
}

char *metrics_fetch(const char *url, char *err, size_t errlen)
{
    struct body b = {NULL, 0};
    long status = 0;
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(err, errlen, "libcurl failed to start");
        return NULL;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK || status != 200 || !b.p) {
        snprintf(err, errlen, "%s: %s", url,
                 rc != CURLE_OK ? curl_easy_strerror(rc) : "no metrics (HTTP status not 200)");
        free(b.p);
        return NULL;
    }
    return b.p;
}

double metrics_value(const char *body, const char *name)
{
    size_t n = strlen(name);
    for (const char *line = body; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (!strncmp(line, name, n) && line[n] == ' ')
            return strtod(line + n + 1, NULL);
    }
    return -1;
}

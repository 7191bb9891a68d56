/*
 * What `pos-loadtest idle` reads about the relay it loads: the process's
 * RSS and CPU time (/proc/PID, when the relay runs on this machine) and
 * values of its Prometheus /metrics (HTTP GET, libcurl).
 */
#ifndef POS_LOADTEST_RELAY_WATCH_H
#define POS_LOADTEST_RELAY_WATCH_H

#include <stddef.h>
#include <sys/types.h>

/* proc_rss_kib: VmRSS of |pid| in KiB (0: this process), or -1. */
long proc_rss_kib(pid_t pid);
/* proc_cpu_s: user + system CPU seconds of |pid| (0: this process), or -1: the process's
 * CPU clock (nanoseconds), else /proc/PID/stat (clock ticks). */
double proc_cpu_s(pid_t pid);

/*
 * metrics_fetch GETs |url| (at most 1 MiB, 2 s). Returns the body (free it)
 * or NULL with a sentence in |err|.
 */
char *metrics_fetch(const char *url, char *err, size_t errlen);
/*
 * metrics_value: the value of the sample named exactly |name| (labels
 * included, e.g. `pos_relay_park_keepalives_total{result="ok"}`) in |body|,
 * or -1 when absent.
 */
double metrics_value(const char *body, const char *name);

#endif

/*
 * Leveled logging to stderr. The level and program name are the only
 * process-wide state: they are set once at start-up, before any thread runs,
 * and only read afterwards.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static enum pos_log_level current_level = POS_LOG_INFO;
static const char *program = "pos";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int pos_log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0)
            return i;
    }
    return -1;
}

int pos_log_init(const char *progname)
{
    const char *env = getenv("POS_LOG");
    if (progname)
        program = progname;
    if (!env || !*env)
        return 0;
    int level = pos_log_parse_level(env);
    if (level < 0) {
        pos_log(POS_LOG_WARN, "POS_LOG=%s is not one of error, warn, info, debug; using info", env);
        return -1;
    }
    current_level = (enum pos_log_level)level;
    return 0;
}

void pos_log_set_level(enum pos_log_level level)
{
    current_level = level;
}

int pos_log_enabled(enum pos_log_level level)
{
    return level <= current_level;
}

void pos_log(enum pos_log_level level, const char *fmt, ...)
{
    if (!pos_log_enabled(level))
        return;
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

    char line[2048];
    int n = snprintf(line, sizeof(line), "%s.%03ldZ %s %s: ", stamp, ts.tv_nsec / 1000000, program,
                     level_names[level]);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fputs per line so that lines from several threads do not interleave. */
    size_t len = strlen(line);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len] = '\n';
    line[len + 1] = '\0';
    fputs(line, stderr);
}

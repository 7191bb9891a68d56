/*
 * Logging to stderr with levels. The level comes from the POS_LOG environment
 * variable (error|warn|info|debug, default info). Callers must never pass a
 * secret (token, key, p2p secret) to these functions: the modules that hold
 * secrets log only their hashes or nothing at all.
 */
#ifndef POS_LOG_H
#define POS_LOG_H

enum pos_log_level {
    POS_LOG_ERROR = 0,
    POS_LOG_WARN = 1,
    POS_LOG_INFO = 2,
    POS_LOG_DEBUG = 3,
};

/*
 * pos_log_init sets the program name shown in each line and reads POS_LOG.
 * Returns 0, or -1 when POS_LOG holds an unknown level (the level is then
 * info and a warning is printed).
 */
int pos_log_init(const char *progname);

/* pos_log_parse_level maps "error", "warn", "info", "debug" to a level; -1 otherwise. */
int pos_log_parse_level(const char *s);

void pos_log_set_level(enum pos_log_level level);
int pos_log_enabled(enum pos_log_level level);

void pos_log(enum pos_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pos_log_error(...) pos_log(POS_LOG_ERROR, __VA_ARGS__)
#define pos_log_warn(...) pos_log(POS_LOG_WARN, __VA_ARGS__)
#define pos_log_info(...) pos_log(POS_LOG_INFO, __VA_ARGS__)
#define pos_log_debug(...) pos_log(POS_LOG_DEBUG, __VA_ARGS__)

#endif

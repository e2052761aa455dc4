/* log.h — levelled, timestamped log lines on stderr.
 *
 * Use:  log_info("model %s loaded in %.0f ms", name, ms);
 *       log_set_level(LOG_LEVEL_WARN);          // once, at start-up
 * Ownership: nothing to own; one process-wide level.  Any thread may log; a line is
 * written with one call so lines from different threads never interleave.
 * Never log request bodies: they can hold users' images.
 */
#ifndef MODELD_DAEMON_LOG_H
#define MODELD_DAEMON_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
} log_level;

void log_set_level(log_level level);
log_level log_get_level(void);
const char *log_level_name(log_level level);
/* "debug", "info", "warn" or "error"; false if s is none of them. */
bool log_level_parse(const char *s, log_level *out);

/* Formats a message into a caller's error buffer and returns -1.  Start-up code
 * (config, registry, workers, HTTP) reports failures this way and main() logs them. */
int log_errbuf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif

/* log.c — the daemon's one way to say something to the operator.
 *
 * Owns the process-wide log level (an atomic, so a level set at start-up is seen by
 * every thread without a lock).  Any thread calls log_msg(): the whole line, UTC
 * timestamp included, is formatted into a stack buffer first and written with one
 * fputs(), which stdio locks, so concurrent lines never interleave.  It must never
 * allocate (it is used on out-of-memory paths) and never sees request bodies.
 */
#include <config.h>

#include "daemon/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic int log_threshold = LOG_LEVEL_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level level) { atomic_store(&log_threshold, (int)level); }

log_level log_get_level(void) { return (log_level)atomic_load(&log_threshold); }

const char *log_level_name(log_level level)
{
    if ((int)level < 0 || (int)level > LOG_LEVEL_ERROR)
        return "?";
    return level_names[level];
}

bool log_level_parse(const char *s, log_level *out)
{
    for (int i = 0; i <= LOG_LEVEL_ERROR; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (log_level)i;
            return true;
        }
    }
    return false;
}

void log_msg(log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&log_threshold))
        return;

    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000L,
                          log_level_name(level));

    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    if (w < 0)
        w = 0;
    n += (size_t)w;
    /* A line that did not fit is cut, never dropped: keep room for the newline. */
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    line[n] = '\0';
    fputs(line, stderr);
}

int log_errbuf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

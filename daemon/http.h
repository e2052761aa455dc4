/* http.h — the HTTP front end: routes, request bodies, suspend/resume.
 *
 * Use (main thread):
 *   http_server *h;
 *   if (http_start(&h, &cfg, reg, err, sizeof err) != 0) ...   // bound and serving
 *   ... wait for a signal ...
 *   http_quiesce(h);             // stop accepting; /v2/health/ready -> 503
 *   http_settle(h, grace_ms);    // requests being uploaded get queued (or not)
 *   registry_shutdown(reg);      // queues run dry: every connection resumed
 *   http_drain(h, grace_ms);  http_stop(h);
 * Ownership: the server borrows the registry, which must outlive http_stop() (or,
 * after http_swap_registry, the last request holding it).
 */
#ifndef MODELD_DAEMON_HTTP_H
#define MODELD_DAEMON_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "daemon/config.h"
#include "daemon/registry.h"

typedef struct http_server http_server;

int http_start(http_server **out, const config *cfg, registry *reg, char *err, size_t errlen);
/* "127.0.0.1:8080" as bound, for the log. */
const char *http_address(const http_server *h);
/* Reload: requests from now on go to next; those already started keep the registry
 * they hold a reference on (registry_ref).  Returns the old registry, which the
 * caller frees once registry_refs() reaches 0. */
registry *http_swap_registry(http_server *h, registry *next);
void http_quiesce(http_server *h);
/* Waits until every request in flight is queued on a job (none is still being
 * uploaded, parsed or answered), or timeout_ms; true if so. */
bool http_settle(http_server *h, int timeout_ms);
/* Waits until no request is in flight, or timeout_ms; true if none is left. */
bool http_drain(http_server *h, int timeout_ms);
void http_stop(http_server *h);

#endif

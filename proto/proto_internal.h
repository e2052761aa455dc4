/* proto_internal.h — helpers the proto module's files share (not part of its API).
 *
 * proto.c holds the classify and BERT routes, generate.c the GAN's; both parse and
 * answer through these, so every route words its errors and prints its JSON alike.
 * Ownership as in jansson: a json_t * returned is a new reference; proto_set and
 * proto_dump steal theirs.
 */
#ifndef MODELD_PROTO_INTERNAL_H
#define MODELD_PROTO_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "proto/proto.h"

/* Reals in responses: 6 significant digits are what a float32 probability holds
 * usefully, and keep 0.97 from printing as 0.97000002861022949. */
#define PROTO_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(6))

/* Fills err and returns status. */
int proto_perr(proto_error *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "an object", "a string", ...: for messages. */
const char *proto_type_name(const json_t *v);
/* Parses a request body: NULL with err (400) when it is empty or not JSON.  example
 * is a valid body, quoted in the message so the client sees what to send. */
json_t *proto_load_body(const char *body, size_t len, const char *example, proto_error *err);
/* Rejects keys of obj not in allowed (400); "where" names obj in the message. */
int proto_check_fields(const json_t *obj, const char *const *allowed, size_t n_allowed,
                       const char *where, proto_error *err);
/* A JSON string of s; bytes that are not valid UTF-8 become '?'. */
json_t *proto_jstr(const char *s);
/* Steals v; true if it was set. */
bool proto_set(json_t *obj, const char *key, json_t *v);
/* Serialises and frees root; NULL when root is NULL or out of memory. */
char *proto_dump(json_t *root);

#endif

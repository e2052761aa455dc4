/* openapi.h — the OpenAPI 3 description of the HTTP API, compiled in.
 *
 * GET /v1/openapi.json answers with docs/openapi.json byte for byte.  The daemon
 * must not read the source tree at run time (it is installed, and may run from
 * anywhere), so make generates proto/openapi_doc.c from docs/openapi.json with
 * sed, one C string literal per line (Makefile.am).  docs/openapi.json is the only
 * copy to edit; the generated file lives in the build directory and is never
 * distributed or committed.
 */
#ifndef MODELD_PROTO_OPENAPI_H
#define MODELD_PROTO_OPENAPI_H

/* The document, NUL-terminated: strlen() is its length in bytes. */
extern const char proto_openapi_json[];

#endif

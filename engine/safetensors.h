/* safetensors.h — read-only access to a .safetensors checkpoint.
 *
 * Use:
 *   safetensors *st;
 *   if (safetensors_open("model.safetensors", &st, &err) != ENGINE_OK) ...
 *   const safetensors_tensor *t = safetensors_find(st, "conv1.weight");
 *   float *w = malloc(t->numel * sizeof *w);  safetensors_read_f32(t, w);  // any dtype
 *   const float *p = safetensors_f32_data(t);   // zero-copy, NULL unless dtype is F32
 *   safetensors_close(st);
 *
 * Ownership: safetensors_close() unmaps the file and frees every tensor record;
 * pointers from safetensors_find()/safetensors_f32_data() die with it.
 *
 * The file is hostile input.  safetensors_open() accepts it only if the header
 * length is within bounds and the file, the header is valid JSON of the documented
 * shape, every dtype is known, every shape's element count times the dtype size equals
 * its byte range, every range lies inside the data section, and no two ranges overlap.
 * Any violation is ENGINE_ERR_FORMAT with a message naming the tensor.
 */
#ifndef MODELD_ENGINE_SAFETENSORS_H
#define MODELD_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

#define SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u) /* as the reference implementation */
#define SAFETENSORS_MAX_DIMS 8

typedef enum safetensors_dtype {
    SAFETENSORS_F32 = 0,
    SAFETENSORS_F16,
    SAFETENSORS_BF16,
    /* Present in real checkpoints (e.g. position_ids, num_batches_tracked); they can
     * be looked up and skipped but not read as floats. */
    SAFETENSORS_I64,
    SAFETENSORS_I32,
    SAFETENSORS_OTHER,
} safetensors_dtype;

typedef struct safetensors_tensor {
    const char *name;
    safetensors_dtype dtype;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    int64_t numel;
    const uint8_t *data; /* inside the mapping, nbytes long */
    size_t nbytes;
} safetensors_tensor;

typedef struct safetensors safetensors;

engine_status safetensors_open(const char *path, safetensors **out, engine_err *err);
/* Same validation on a caller-owned buffer (not copied; must outlive the handle). */
engine_status safetensors_open_buffer(const uint8_t *buf, size_t len, safetensors **out,
                                      engine_err *err);
void safetensors_close(safetensors *st);

size_t safetensors_count(const safetensors *st);
const safetensors_tensor *safetensors_at(const safetensors *st, size_t i);
const safetensors_tensor *safetensors_find(const safetensors *st, const char *name);
/* The tensor called name, which must have exactly the shape dims[0..ndim): *out set
 * and ENGINE_OK; absent and optional: *out NULL and ENGINE_OK; absent and required, or
 * of another shape: ENGINE_ERR_SHAPE with a message naming the key and both shapes
 * ("missing tensor 'fc.weight', expected shape [10, 128]"). */
engine_status safetensors_find_shaped(const safetensors *st, const char *name,
                                      const int64_t *dims, int ndim, bool optional,
                                      const safetensors_tensor **out, engine_err *err);

/* Converts F32/F16/BF16 to float32 into out (numel floats).  ENGINE_ERR_FORMAT for
 * other dtypes. */
engine_status safetensors_read_f32(const safetensors_tensor *t, float *out, engine_err *err);
/* Zero-copy view for F32 tensors whose data is 4-byte aligned; NULL otherwise. */
const float *safetensors_f32_data(const safetensors_tensor *t);

/* A hint that the caller has what it needs from t (a converted or rearranged copy)
 * and will not read its bytes again: the pages wholly inside it leave this process's
 * memory.  The data stays valid (a later read faults it back in from the file); a
 * no-op for safetensors_open_buffer() handles. */
void safetensors_drop(const safetensors *st, const safetensors_tensor *t);

const char *safetensors_dtype_name(safetensors_dtype d);

#endif

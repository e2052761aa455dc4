/* image.h — image bytes or raw pixels to a normalised model input tensor.
 *
 * Decoding goes through stb_image (Debian libstb-dev): PNG and JPEG, 8-bit gray,
 * gray+alpha, RGB or RGBA.  Conversion to the model's channel count uses the ITU-R
 * 601 luma weights for RGB->gray (as PIL's convert("L")) and replication for
 * gray->RGB; alpha is dropped.  Ownership: the caller owns `out` (C*H*W floats).
 */
#ifndef MODELD_ENGINE_IMAGE_H
#define MODELD_ENGINE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* Decoded images larger than this many pixels are refused before decoding,
 * so a tiny compressed bomb cannot allocate gigabytes. */
#define IMAGE_MAX_PIXELS (4096 * 4096)

typedef enum image_resize_mode {
    IMAGE_RESIZE_STRETCH = 0, /* straight to (height, width), aspect not kept */
    IMAGE_RESIZE_CENTER_CROP, /* shorter side to resize_shorter, then centre crop */
    IMAGE_RESIZE_NONE,        /* the image must already be (height, width) */
} image_resize_mode;

typedef struct image_preproc {
    int channels, height, width;   /* 1 or 3 channels */
    image_resize_mode resize;
    int resize_shorter;            /* IMAGE_RESIZE_CENTER_CROP only */
    float mean[3], std[3];         /* per channel, applied to pixel/255 */
} image_preproc;

/* PNG/JPEG bytes -> out (C,H,W).  ENGINE_ERR_IMAGE if undecodable,
 * ENGINE_ERR_INVALID if the size does not fit (too large, or wrong with RESIZE_NONE). */
engine_status image_to_tensor(const uint8_t *bytes, size_t len, const image_preproc *pp,
                              float *out, engine_err *err);

/* Interleaved 8-bit pixels (H,W,C) with c in {1,3,4} -> out (C,H,W), same conversion,
 * resize and normalisation as decoded images. */
engine_status image_pixels_to_tensor(const uint8_t *pixels, int h, int w, int c,
                                     const image_preproc *pp, float *out, engine_err *err);

#endif

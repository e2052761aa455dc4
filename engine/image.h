/* image.h — image bytes or raw pixels to a normalised model input tensor, and a
 * generator's output tensor back to PNG bytes.
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

/* ---- the other direction: generator output to PNG (engine/image_write.c) ---- */

typedef enum image_range {
    IMAGE_RANGE_TANH = 0, /* the network's values lie in [-1, 1] */
    IMAGE_RANGE_SIGMOID,  /* in [0, 1] */
} image_range;

/* x (C,H,W) -> out (H,W,C) interleaved 8-bit: values mapped to [0, 1] by their
 * range, then floor(v * 255 + 0.5) clamped to 0..255, as torchvision's save_image
 * quantises (NaN becomes 0).  c in {1, 3}. */
void image_from_tensor(const float *x, int c, int h, int w, image_range range, uint8_t *out);

/* n images (h,w,c) tiled left to right, top to bottom, `per_row` to a row, with
 * `pad` black pixels between and around them (torchvision's make_grid layout).
 * image_grid_size gives the grid's size; out holds grid_h * grid_w * c bytes. */
void image_grid_size(int n, int h, int w, int per_row, int pad, int *grid_h, int *grid_w);
void image_grid(const uint8_t *images, int n, int h, int w, int c, int per_row, int pad,
                uint8_t *out);

/* (h,w,c) 8-bit pixels, c in {1, 3, 4} -> PNG bytes through stb_image_write.  *out
 * is malloc'd, the caller frees it. */
engine_status image_encode_png(const uint8_t *pixels, int h, int w, int c, uint8_t **out,
                               size_t *out_len, engine_err *err);

#endif

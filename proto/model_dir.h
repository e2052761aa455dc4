/* model_dir.h — reads a model directory (config.json + model.safetensors +
 * labels.txt, see docs/MODELS.md) into native structs the engine takes.
 *
 * Use:  model_dir md;  if (model_dir_read("models/fashion", &md, &err) != ENGINE_OK) ...
 *       engine_cnn_load(&md.cnn, md.weights_path, max_batch, &model, &err);
 *       model_dir_free(&md);
 * Ownership: model_dir_free() frees the spec's layers and the labels.
 */
#ifndef MODELD_PROTO_MODEL_DIR_H
#define MODELD_PROTO_MODEL_DIR_H

#include <limits.h>

#include "engine/engine.h"
#include "engine/image.h"
#include "engine/models/cnn.h"

#define MODEL_DIR_MAX_LABELS 100000
#define MODEL_DIR_MAX_LABEL_LEN 256

typedef enum model_kind {
    MODEL_KIND_CNN = 0,
} model_kind;

typedef struct model_dir {
    model_kind kind;
    cnn_spec cnn;
    image_preproc preproc;
    char **labels;      /* n_labels strings, owned */
    int n_labels;
    char weights_path[PATH_MAX];
} model_dir;

engine_status model_dir_read(const char *dir, model_dir *out, engine_err *err);
void model_dir_free(model_dir *md);
const char *model_kind_name(model_kind kind);

#endif

/* model_dir.h — reads a model directory (docs/MODELS.md) into native structs the
 * engine takes: a CNN (config.json + model.safetensors + labels.txt), a GAN generator
 * (config.json + model.safetensors [+ labels.txt when conditional]) or a Hugging Face
 * BERT (config.json with "model_type": "bert" + model.safetensors + vocab.txt
 * [+ tokenizer_config.json]).
 *
 * Use:  model_dir md;  if (model_dir_read("models/fashion", &md, &err) != ENGINE_OK) ...
 *       if (md.kind == MODEL_KIND_CNN)
 *           engine_cnn_load(&md.cnn, md.weights_path, max_batch, &model, &err);
 *       else if (md.kind == MODEL_KIND_GAN)  // pixels from md.gan.range, labels as a CNN's
 *           engine_gan_load(&md.gan, md.weights_path, max_batch, &model, &err);
 *       else   // MODEL_KIND_BERT; the tokenizer: wordpiece_load(md.vocab_path, md.do_lower_case, ...)
 *           engine_bert_load(&md.bert, md.weights_path, max_batch, max_tokens, &model, &err);
 *       model_dir_free(&md);
 * Ownership: model_dir_free() frees the specs' layers and the labels.
 */
#ifndef MODELD_PROTO_MODEL_DIR_H
#define MODELD_PROTO_MODEL_DIR_H

#include <limits.h>
#include <stdbool.h>

#include "engine/engine.h"
#include "engine/image.h"
#include "engine/models/bert.h"
#include "engine/models/cnn.h"
#include "engine/models/gan.h"

/* Longest path a model directory may have (PATH_MAX is not in strict C11). */
#define MODEL_DIR_PATH_MAX 4096

#define MODEL_DIR_MAX_LABELS 100000
#define MODEL_DIR_MAX_LABEL_LEN 256

typedef enum model_kind {
    MODEL_KIND_CNN = 0,
    MODEL_KIND_BERT,
    MODEL_KIND_GAN,
} model_kind;

typedef struct model_dir {
    model_kind kind;
    /* MODEL_KIND_CNN */
    cnn_spec cnn;
    image_preproc preproc;
    /* MODEL_KIND_CNN, and MODEL_KIND_GAN when conditional (class i's name) */
    char **labels;      /* n_labels strings, owned */
    int n_labels;
    /* MODEL_KIND_GAN */
    gan_spec gan;
    /* MODEL_KIND_BERT */
    bert_config bert;
    char vocab_path[MODEL_DIR_PATH_MAX];
    bool do_lower_case; /* tokenizer_config.json, default true */
    /* both */
    char weights_path[MODEL_DIR_PATH_MAX];
} model_dir;

engine_status model_dir_read(const char *dir, model_dir *out, engine_err *err);
void model_dir_free(model_dir *md);
const char *model_kind_name(model_kind kind);

#endif

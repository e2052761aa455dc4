/* cnn.c — CNN specs: the native description proto/model_dir fills from config.json,
 * and the model builder engine_cnn_load() assembles from it.
 *
 * The spec helpers below are pure functions on caller-owned structs: no allocation
 * except the layers array the spec owns, no global state, safe on any thread.
 */
#include "engine/models/cnn.h"

#include <stdlib.h>
#include <string.h>

/* ---- spec helpers ---- */

/* One row per architecture; the names are the config.json spellings. */
static const struct {
    cnn_arch arch;
    const char *name;
} cnn_arch_names[] = {
    {CNN_ARCH_LAYERS, "layers"},
    {CNN_ARCH_RESNET18, "resnet18"},
    {CNN_ARCH_RESNET34, "resnet34"},
    {CNN_ARCH_RESNET50, "resnet50"},
    {CNN_ARCH_MOBILENET_V2, "mobilenet_v2"},
};

void cnn_spec_free(cnn_spec *spec)
{
    if (!spec)
        return;
    free(spec->layers);
    spec->layers = NULL;
    spec->n_layers = 0;
}

bool cnn_arch_from_name(const char *name, cnn_arch *out)
{
    if (!name)
        return false;
    for (size_t i = 0; i < sizeof cnn_arch_names / sizeof cnn_arch_names[0]; i++)
        if (!strcmp(name, cnn_arch_names[i].name)) {
            if (out)
                *out = cnn_arch_names[i].arch;
            return true;
        }
    return false;
}

const char *cnn_arch_name(cnn_arch arch)
{
    for (size_t i = 0; i < sizeof cnn_arch_names / sizeof cnn_arch_names[0]; i++)
        if (cnn_arch_names[i].arch == arch)
            return cnn_arch_names[i].name;
    return "unknown";
}

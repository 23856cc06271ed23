/* backend_comet.c — Comet's REST API (being written; see issue 3). */
#include <stdio.h>

#include "backend.h"

int backend_comet_new(struct backend **out, struct daemon *d, char *err, size_t errlen)
{
        *out = NULL;
        snprintf(err, errlen, "the comet backend is not available in this build");
        return -1;
}

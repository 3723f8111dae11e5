/*  =========================================================================
    backend.c - find a storage backend by name (include/chat_backend.h)

    The one place that knows which backends exist. Used by persistence and
    auth to turn [storage] backend into the struct of functions they call.
    Owns no state.
    =========================================================================
*/

#include "chat_backend.h"
#include <string.h>

static const chat_backend_ops_t *s_backends [] = {
    &chat_backend_sqlite,
    &chat_backend_postgres,
};

const chat_backend_ops_t *
chat_backend_find (const char *name)
{
    for (size_t i = 0; name && i < sizeof s_backends / sizeof s_backends [0]; i++)
        if (strcmp (name, s_backends [i]->name) == 0)
            return s_backends [i];
    return NULL;
}

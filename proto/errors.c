/* errors.c — the FERRY_E* table: messages and wire names, generated from one X-macro. */
#include <string.h>

#include "ferry_base.h"

const char *ferry_strerror(int err)
{
        switch (err) {
#define XX(suffix, value, name, msg)                                                               \
        case FERRY_##suffix:                                                                       \
                return msg;
                FERRY_ERRNO_MAP(XX)
#undef XX
        case 0:
                return "success";
        default:
                return "unknown error";
        }
}

const char *ferry_err_name(int err)
{
        switch (err) {
#define XX(suffix, value, name, msg)                                                               \
        case FERRY_##suffix:                                                                       \
                return name;
                FERRY_ERRNO_MAP(XX)
#undef XX
        default:
                return "unknown";
        }
}

int ferry_err_from_name(const char *name)
{
#define XX(suffix, value, wire, msg)                                                               \
        if (strcmp(name, wire) == 0)                                                               \
                return FERRY_##suffix;
        FERRY_ERRNO_MAP(XX)
#undef XX
        return FERRY_EINTERNAL;
}

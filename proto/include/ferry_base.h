/*
 * ferry_base.h — what ferryd and libferry share, and libferry's users see:
 * the version, and the error codes with their wire names and messages (one
 * X-macro table). Part of the public API (ferry.h includes it); the daemon
 * and proto/ include it directly, never the client's header.
 */
#ifndef FERRY_BASE_H
#define FERRY_BASE_H

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_VERSION_STRING "0.1.0"

/* XX(suffix, value, wire name, message): one table for codes, names, messages. */
#define FERRY_ERRNO_MAP(XX)                                                                        \
        XX(EINVAL, -1, "invalid_argument", "invalid argument")                                     \
        XX(ENOTFOUND, -2, "not_found", "not found")                                                \
        XX(EEXIST, -3, "exists", "already exists")                                                 \
        XX(ENOSPC, -4, "no_space", "spool or disk full")                                           \
        XX(EPROTO, -5, "protocol_error", "malformed message")                                      \
        XX(EVERSION, -6, "protocol_mismatch", "protocol version mismatch")                         \
        XX(EUNKNOWNOP, -7, "unknown_op", "unknown operation")                                      \
        XX(EIO, -8, "io_error", "input/output error")                                              \
        XX(ECONNECT, -9, "connect_failed", "cannot connect to ferryd")                             \
        XX(ETIMEDOUT, -10, "timeout", "timed out")                                                 \
        XX(ECLOSED, -11, "connection_closed", "connection closed by ferryd")                       \
        XX(ENOMEM, -12, "out_of_memory", "out of memory")                                          \
        XX(EPERM, -13, "permission_denied", "permission denied")                                   \
        XX(ENOTREADY, -14, "not_ready", "artifact version not ready")                              \
        XX(EBACKEND, -15, "backend_error", "backend error")                                        \
        XX(EINTERNAL, -16, "internal", "internal error")                                           \
        XX(ETOOBIG, -17, "frame_too_large", "message too large")                                   \
        XX(EBUSY, -18, "busy", "ferryd is busy")                                                   \
        XX(EUNSAFE, -19, "unsafe_path", "path escapes the target directory")                       \
        XX(EFAILED, -20, "failed", "operation failed")

enum ferry_errno {
#define FERRY_ERRNO_ENUM(suffix, value, name, msg) FERRY_##suffix = value,
        FERRY_ERRNO_MAP(FERRY_ERRNO_ENUM)
#undef FERRY_ERRNO_ENUM
};

/* Message for a FERRY_E* code; "unknown error" for anything else. Never NULL. */
const char *ferry_strerror(int err);
/* Wire name of a FERRY_E* code ("invalid_argument", ...); "unknown" otherwise. */
const char *ferry_err_name(int err);
/* The code for a wire name; FERRY_EINTERNAL for names this version does not know. */
int ferry_err_from_name(const char *name);

#ifdef __cplusplus
}
#endif

#endif

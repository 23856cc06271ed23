/*
 * s3sync.h — the listing step of a delivery, which both backends run first:
 * every s3:// asset logged with sync (asset.sync_max > 0) is listed (s3.c)
 * and replaced through the sink (backend.h: synced) by one remote asset per
 * object, with Comet's metadata keys merged over the asset's own:
 *   s3_platform "aws", synced true, checksum (the ETag without quotes),
 *   file_size, s3_path "s3://bucket/key", version_id (versioned buckets).
 * Logical paths are the keys below the prefix, under the logical path the
 * user gave (if any). A listing that fails for good (no credentials, no
 * bucket, access denied, an answer that is not S3's), that finds more than
 * sync_max objects, that finds none, or whose objects cannot be assets of the
 * version (a key that is no valid logical path, or one another asset already
 * has) falls back to one remote asset for the URI with {"synced": false,
 * "error_message": "..."} and a warning on the version. A listing that fails
 * for now (the store unreachable, 5xx, throttled) ends the delivery as a
 * transient failure: the queue retries it like any step.
 */
#ifndef FERRY_S3SYNC_H
#define FERRY_S3SYNC_H

#include <stdbool.h>

#include "backend.h"

struct job;
struct s3sync;

/* Does `job` have assets waiting to be listed? */
bool s3sync_needed(const struct job *job);

/*
 * List every waiting asset of `job`, one after the other, reporting each
 * through `sink`; `then` is the backend's callback for the sink, and must
 * call s3sync_recorded() with its rc. done(job, result) once: BACKEND_OK
 * when nothing is left to list, or the failure (transient, or cancelled).
 * Never calls done from inside this call. NULL when out of memory (done is
 * not called then).
 */
struct s3sync *s3sync_start(struct s3 *s3, struct backend_sink *sink, struct job *job,
                            backend_then_cb *then,
                            void (*done)(struct job *job, const struct backend_result *r));
/* The sink's answer for the last listing reported. */
void s3sync_recorded(struct s3sync *ss, int rc);
/* Stop (shutdown): done comes later, cancelled. */
void s3sync_cancel(struct s3sync *ss);

#endif

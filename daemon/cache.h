/*
 * cache.h — the node-wide download cache: <state>/cache.
 * blobs/<sha256> hold content (shared by every asset with the same bytes);
 * refs/<key> name the blob of a backend asset (key: "<versionId>-<assetId>").
 * A blob's mtime is its last use; past the byte budget the least recently
 * used blobs are evicted. Files under the cache are never handed out as
 * links: downloads copy them (reflink when the file system can).
 * Thread-safe (thread-pool and loop thread); return 0 or a FERRY_E* code.
 */
#ifndef FERRY_CACHE_H
#define FERRY_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct cache;

int cache_open(struct cache **out, const char *dir, int64_t budget, char *err, size_t errlen);
void cache_close(struct cache *c);

/* The blob for `key` if cached: its path into `path` (and the use recorded), else FERRY_ENOTFOUND.
 */
int cache_lookup(struct cache *c, const char *key, char *path, size_t len);
/* A fresh temporary file path inside the cache for a download in progress. */
int cache_temp_path(struct cache *c, char *path, size_t len);
/*
 * Adopt the downloaded file `tmp` as the content of `key`: hash it, move it to
 * its blob (or drop it if the blob exists), write the ref, evict past the
 * budget. `path` receives the blob path. `tmp` is gone afterwards.
 */
int cache_insert(struct cache *c, const char *key, const char *tmp, char *path, size_t len,
                 char *err, size_t errlen);

struct cache_usage {
        int64_t bytes, budget;
        int64_t blobs;
};
int cache_usage(struct cache *c, struct cache_usage *out);
/* Change the byte budget (SIGHUP): evicts at once past a lower one. */
void cache_set_budget(struct cache *c, int64_t budget);
/* Remove every blob and ref; *freed receives the bytes released. */
int cache_clear(struct cache *c, int64_t *freed);

#endif

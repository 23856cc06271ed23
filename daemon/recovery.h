/*
 * recovery.h — the spool checked against the queue at start-up, and the way
 * back for what the queue could not vouch for.
 *
 * The rule: a database that cannot vouch for a file never deletes it. At
 * start-up every snapshot in the spool is looked up (one pass): one held by a
 * queued or failed version stays; one whose version the queue records as
 * delivered or cancelled is removed; any other (the queue lost its row: a
 * damaged or rolled-back database) is moved to <state>/quarantine/<stamp>/,
 * never deleted. `ferry recover` re-queues quarantined snapshots from the
 * manifests they carry (spool.h), version by version.
 */
#ifndef FERRY_RECOVERY_H
#define FERRY_RECOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool;
struct store;

struct recovery_report {
        int64_t kept;        /* held by queued or failed versions */
        int64_t removed;     /* their versions were delivered or cancelled */
        int64_t quarantined; /* the queue did not know them */
        int64_t looked_up;   /* files looked up one by one (the rest came in one pass) */
};

/*
 * Reconcile the spool with the queue. `trust` false (a fresh queue replacing
 * a damaged one) quarantines every snapshot. 0 or a code with err.
 */
int recovery_reconcile(struct store *st, struct spool *sp, bool trust, struct recovery_report *out,
                       char *err, size_t errlen);

/*
 * One quarantined version, rebuilt from its files' manifests: the
 * artifact.log request (a cJSON object, owned by the caller) whose assets are
 * "recovered" entries naming the quarantined files.
 */
struct recovery_version {
        char token[80];    /* the version's token */
        char *request;     /* JSON text: name, type, version, aliases, tags, metadata, ... */
        char **paths;      /* the quarantined files, absolute */
        char **logical;    /* their logical paths */
        char **asset_ids;  /* their asset ids */
        char **asset_meta; /* their metadata (JSON text or NULL) */
        int *overwrite;
        size_t nfiles;
        size_t nassets; /* assets the version had (files + remote) */
        bool partial;   /* a manifest left out some metadata, or files are missing */
};

/*
 * Read every quarantine folder under `qdir`: the versions found (caller frees
 * each with recovery_version_free, then the array), and how many files had no
 * usable manifest (left where they are).
 */
int recovery_scan(const char *qdir, struct recovery_version **out, size_t *n, int64_t *orphans,
                  char *err, size_t errlen);
void recovery_version_free(struct recovery_version *v);

#endif

/* job.h — one logged artifact version on its way to the backend, as loaded from the store. */
#ifndef FERRY_JOB_H
#define FERRY_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct job_asset {
        int idx;            /* position within the job */
        char *logical_path; /* path inside the artifact */
        bool remote;        /* a URI recorded, not uploaded */
        char *spool;        /* spool file name (file assets), else NULL */
        int64_t size;       /* bytes of a file asset */
        char *uri;          /* link of a remote asset, else NULL */
        char *metadata;     /* JSON object text, or NULL */
        bool overwrite;     /* Comet's overwrite flag */
        char asset_id[33];  /* uuid4 hex chosen on the node */
        bool done;          /* the backend confirmed it */
        int64_t sync_max;   /* > 0: an s3:// uri to list before delivery, at most this many
                               objects; 0: nothing to list */
        char *sync_under;   /* the listed objects' logical paths go under this, or NULL */
};

struct job {
        int64_t id;
        char *token;           /* random id of the version (spool manifests, registry origin) */
        char *experiment;      /* experiment key */
        char *experiment_name; /* display name, or NULL */
        bool experiment_registered;
        char *workspace, *project, *name, *type;
        char *version;  /* requested version, or NULL for next major */
        char *aliases;  /* JSON array text */
        char *tags;     /* JSON array text */
        char *metadata; /* JSON object text, or NULL */
        int attempts;
        char *remote_version_id; /* backend's version id once created, else NULL */
        char *assigned_version;  /* version the backend assigned, else NULL */
        int64_t bytes;
        int64_t created_ms;
        int64_t next_attempt_ms;
        size_t nassets;
        struct job_asset *assets; /* nassets entries, owned */
        void *delivery;           /* the backend's state while it delivers the job */
        struct job *next;         /* scheduler's list of running jobs */
};

/* Free what an asset owns and zero it. */
void job_asset_clear(struct job_asset *a);
/* Free a job and everything it owns. NULL is fine. */
void job_free(struct job *job);

#endif

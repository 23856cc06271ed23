/*
 * writer.h — the queue's one writer: every change to queue.db goes through
 * here, in batches (group commit) on libuv's thread pool.
 *
 * Callers submit operations from the loop thread. Whatever arrives while a
 * batch commits forms the next batch: one transaction, one WAL sync (and,
 * when an operation asks for it, one sync of the spool directory before the
 * commit) for all of them. Each operation runs inside a savepoint, so one
 * that fails is rolled back alone. Operations run in submission order, and
 * their `done` callbacks run on the loop thread in the same order, once the
 * batch is durable (synchronous=FULL) — never before.
 */
#ifndef FERRY_WRITER_H
#define FERRY_WRITER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

struct store;
struct writer;

struct writer_op {
        /*
         * Thread pool, inside the batch's transaction: do the op's writes.
         * Return 0 or a negative FERRY_E* code (its writes are then undone).
         */
        int (*run)(struct store *st, struct writer_op *op);
        /*
         * Loop thread, after the commit: rc is run()'s result, or the
         * commit's failure (FERRY_ENOSPC when the disk is full). The op is the
         * caller's again (it may free it here).
         */
        void (*done)(struct writer_op *op, int rc);
        bool sync_spool; /* sync the spool directory before committing (implies durable) */
        /*
         * A client is told once this commits (a log, retry, cancel): the batch
         * is committed with synchronous=FULL and survives a power cut. Other
         * batches (delivery outcomes) commit with synchronous=NORMAL: they
         * survive ferryd's crash; a power cut may lose the last ones, whose
         * steps then run again. In WAL order, a durable commit carries every
         * earlier one with it.
         */
        bool durable;
        int result;             /* the writer's: run()'s result */
        struct writer_op *next; /* the writer's */
};

/*
 * Open the writer's own connection to the queue at `db_path` (already
 * created and migrated). `sync_spool(data)` is called on the thread pool
 * before a commit that needs it; it returns 0 or a FERRY_E* code.
 */
int writer_open(struct writer **out, uv_loop_t *loop, const char *db_path,
                int (*sync_spool)(void *data), void *data, char *err, size_t errlen);
/* Queue `op` for the next batch. */
void writer_submit(struct writer *w, struct writer_op *op);
/* True when nothing is queued or committing. */
bool writer_idle(const struct writer *w);
/* Batches committed and operations run so far (for tests and status). */
void writer_stats(const struct writer *w, uint64_t *batches, uint64_t *ops);
/*
 * Finish everything submitted (their `done` callbacks run), close the
 * connection and free the writer, then call closed(data). Nothing may be
 * submitted after this.
 */
void writer_close(struct writer *w, void (*closed)(void *data), void *data);

#endif

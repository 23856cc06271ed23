/* writer.c — group commit of the queue's changes on libuv's thread pool. */
#include "writer.h"

#include <stdio.h>
#include <stdlib.h>

#include "ferry_base.h"
#include "log.h"
#include "store.h"

struct writer {
        uv_loop_t *loop;
        struct store *st; /* used only by the batch on the thread pool */
        int (*sync_spool)(void *data);
        void *sync_data;
        struct writer_op *head, *tail; /* submitted, waiting for the next batch */
        struct writer_op *batch;       /* the batch being committed */
        int commit_rc;                 /* the batch's commit result */
        bool busy;                     /* a batch is on the thread pool */
        uv_work_t work;
        uint64_t batches, ops;
        void (*closed)(void *data); /* set by writer_close */
        void *closed_data;
        bool closing;
};

int writer_open(struct writer **out, uv_loop_t *loop, const char *db_path,
                int (*sync_spool)(void *data), void *data, char *err, size_t errlen)
{
        struct writer *w = calloc(1, sizeof(*w));
        int rc;

        *out = NULL;
        if (w == NULL) {
                snprintf(err, errlen, "out of memory");
                return FERRY_ENOMEM;
        }
        rc = store_open(&w->st, db_path, false, NULL, err, errlen);
        if (rc != 0) {
                free(w);
                return rc;
        }
        w->loop = loop;
        w->sync_spool = sync_spool;
        w->sync_data = data;
        w->work.data = w;
        *out = w;
        return 0;
}

/* Thread pool: one transaction for the whole batch, each op in a savepoint of its own. */
static void writer_work_cb(uv_work_t *work)
{
        struct writer *w = work->data;
        struct writer_op *op;
        bool sync = false, durable = false;
        int rc;

        for (op = w->batch; op != NULL; op = op->next) {
                sync = sync || op->sync_spool;
                durable = durable || op->sync_spool || op->durable;
        }
        w->commit_rc = 0;
        if (sync && w->sync_spool != NULL && (rc = w->sync_spool(w->sync_data)) != 0) {
                w->commit_rc = rc;
                return;
        }
        if ((rc = store_set_durable(w->st, durable)) != 0 || (rc = store_begin(w->st)) != 0) {
                w->commit_rc = rc;
                return;
        }
        for (op = w->batch; op != NULL; op = op->next) {
                rc = store_savepoint(w->st);
                if (rc == 0) {
                        rc = op->run(w->st, op);
                        if (rc == 0)
                                rc = store_release(w->st);
                        if (rc != 0)
                                store_rollback_savepoint(w->st);
                }
                op->result = rc;
        }
        if ((rc = store_commit(w->st)) != 0) {
                store_rollback(w->st);
                w->commit_rc = rc;
        }
}

static void writer_start(struct writer *w);

static void writer_after_cb(uv_work_t *work, int status)
{
        struct writer *w = work->data;
        struct writer_op *op, *next;

        (void)status;
        op = w->batch;
        w->batch = NULL;
        w->batches++;
        /* `busy` stays set while the callbacks run: one may submit, or close the writer. */
        for (; op != NULL; op = next) {
                next = op->next;
                op->next = NULL;
                w->ops++;
                op->done(op, w->commit_rc != 0 ? w->commit_rc : op->result);
        }
        w->busy = false;
        writer_start(w);
}

static void writer_start(struct writer *w)
{
        int rc;

        if (w->busy)
                return;
        if (w->head == NULL) {
                if (w->closing) {
                        void (*closed)(void *) = w->closed;
                        void *data = w->closed_data;

                        store_close(w->st);
                        free(w);
                        if (closed)
                                closed(data);
                }
                return;
        }
        w->batch = w->head;
        w->head = w->tail = NULL;
        w->busy = true;
        rc = uv_queue_work(w->loop, &w->work, writer_work_cb, writer_after_cb);
        if (rc != 0) {
                log_error("cannot queue a commit: %s", uv_strerror(rc));
                w->commit_rc = FERRY_EINTERNAL;
                writer_after_cb(&w->work, rc);
        }
}

void writer_submit(struct writer *w, struct writer_op *op)
{
        op->next = NULL;
        if (w->tail)
                w->tail->next = op;
        else
                w->head = op;
        w->tail = op;
        writer_start(w);
}

bool writer_idle(const struct writer *w)
{
        return !w->busy && w->head == NULL;
}

void writer_stats(const struct writer *w, uint64_t *batches, uint64_t *ops)
{
        *batches = w->batches;
        *ops = w->ops;
}

void writer_close(struct writer *w, void (*closed)(void *data), void *data)
{
        w->closing = true;
        w->closed = closed;
        w->closed_data = data;
        writer_start(w);
}

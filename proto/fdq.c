/* fdq.c — descriptors that travel with frames, matched to the frame they came with. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"

void proto_fdq_init(struct proto_fdq *q)
{
        memset(q, 0, sizeof(*q));
}

int proto_fdq_push(struct proto_fdq *q, uint64_t end, const int *fds, int n)
{
        struct proto_fd_batch *b;

        if (n <= 0)
                return 0;
        b = calloc(1, sizeof(*b));
        if (b == NULL || (b->fds = malloc((size_t)n * sizeof(int))) == NULL) {
                free(b);
                return FERRY_ENOMEM;
        }
        memcpy(b->fds, fds, (size_t)n * sizeof(int));
        b->n = n;
        b->end = end;
        if (q->tail)
                q->tail->next = b;
        else
                q->head = b;
        q->tail = b;
        q->count += n;
        return 0;
}

int proto_fdq_take(struct proto_fdq *q, uint64_t start, uint64_t end, int **fds, int *n)
{
        struct proto_fd_batch *b = q->head;

        *fds = NULL;
        *n = 0;
        if (b == NULL)
                return 0;
        /* A batch whose read ended before this frame belonged to an earlier one. */
        if (b->end <= start)
                return FERRY_EPROTO;
        /* The last byte of its read is past this frame: it belongs to a later frame. */
        if (b->end > end)
                return 0;
        if (b->next != NULL && b->next->end <= end)
                return FERRY_EPROTO;
        q->head = b->next;
        if (q->head == NULL)
                q->tail = NULL;
        q->count -= b->n;
        *fds = b->fds;
        *n = b->n;
        free(b);
        return 0;
}

void proto_fdq_drain(struct proto_fdq *q, void (*fn)(int fd, void *data), void *data)
{
        struct proto_fd_batch *b, *next;
        int i;

        for (b = q->head; b != NULL; b = next) {
                next = b->next;
                for (i = 0; i < b->n; i++)
                        fn(b->fds[i], data);
                free(b->fds);
                free(b);
        }
        proto_fdq_init(q);
}

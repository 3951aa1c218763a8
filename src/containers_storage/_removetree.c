/*
 * fsutil.remove_tree in C, without the GIL: one directory's worth (unlink_entries), and whole
 * subtrees in threads of its own (remove_trees), which takes a big tree from the first Python
 * scans that show it is big.  One directory: read every entry
 * (getdents64), then unlink every one that is not a directory.  In Python the same loop holds
 * the GIL between system calls, so the remover's threads queue for it instead of keeping the
 * kernel busy on both cores (strace: tens of thousands of futex waits for a 6,800-entry tree);
 * here a thread gives the GIL up once per directory.  Optional: without a compiler
 * fsutil.remove_tree runs its Python loop.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct dirent64_raw {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* The names read, back to back with their NULs, and where each directory's name starts. */
struct names {
    char *buf;
    size_t len, cap;
    size_t *dirs;
    size_t ndirs, dircap;
    Py_ssize_t count;
};

static int
grow(void **p, size_t *cap, size_t need, size_t item)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * item);
    if (q == NULL)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

static int
add_dir(struct names *nm, size_t offset)
{
    if (grow((void **)&nm->dirs, &nm->dircap, nm->ndirs + 1, sizeof(size_t)) < 0)
        return -1;
    nm->dirs[nm->ndirs++] = offset;
    return 0;
}

/* Without the GIL.  Returns 0, or an errno: the caller then rescans in Python (what this
 * unlinked stays unlinked; the Python loop handles permissions and reports errors). */
static int
unlink_entries(int fd, struct names *nm)
{
    char buf[32768];
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));
        if (n < 0)
            return errno;
        if (n == 0)
            break;
        for (long pos = 0; pos < n;) {
            struct dirent64_raw *d = (struct dirent64_raw *)(buf + pos);
            pos += d->d_reclen;
            const char *name = d->d_name;
            if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)))
                continue;
            size_t len = strlen(name) + 1;
            if (grow((void **)&nm->buf, &nm->cap, nm->len + len + 1, 1) < 0)
                return ENOMEM;
            nm->buf[nm->len] = (char)d->d_type;
            memcpy(nm->buf + nm->len + 1, name, len);
            nm->len += len + 1;
            nm->count++;
        }
    }
    for (size_t pos = 0; pos < nm->len;) {
        unsigned char type = (unsigned char)nm->buf[pos];
        const char *name = nm->buf + pos + 1;
        size_t here = pos + 1;
        pos += strlen(name) + 2;
        if (type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno == ENOENT)
                    continue;
                return errno;
            }
            if (S_ISDIR(st.st_mode))
                type = DT_DIR;
        }
        if (type != DT_DIR) {
            if (unlinkat(fd, name, 0) == 0 || errno == ENOENT)
                continue;
            if (errno != EISDIR)  /* replaced by a directory since the read */
                return errno;
        }
        if (add_dir(nm, here) < 0)
            return ENOMEM;
    }
    return 0;
}

static PyObject *
removetree_unlink_entries(PyObject *self, PyObject *arg)
{
    int fd = _PyLong_AsInt(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    struct names nm = {0};
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = unlink_entries(fd, &nm);
    if (err != 0)
        lseek(fd, 0, SEEK_SET);  /* the Python scan reads the directory again from its start */
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (err != 0) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    PyObject *dirs = PyList_New((Py_ssize_t)nm.ndirs);
    if (dirs == NULL)
        goto done;
    for (size_t i = 0; i < nm.ndirs; i++) {
        PyObject *name = PyUnicode_DecodeFSDefault(nm.buf + nm.dirs[i]);
        if (name == NULL) {
            Py_DECREF(dirs);
            goto done;
        }
        PyList_SET_ITEM(dirs, (Py_ssize_t)i, name);
    }
    result = Py_BuildValue("(Nn)", dirs, nm.count);
done:
    free(nm.buf);
    free(nm.dirs);
    return result;
}

/* -- whole subtrees, in threads of our own ------------------------------------------------- */

/* A directory being removed: its fd stays open until its last subdirectory is gone, then it is
 * closed and removed from its parent (bottom-up, as fsutil._TreeRemover does). */
struct node {
    struct node *parent; /* NULL: one of the subtrees asked for, removed from root_fd */
    int root_fd;
    int fd;
    int pending; /* its own scan, plus each subdirectory not yet gone */
    char name[];
};

struct work {
    pthread_mutex_t lock;
    pthread_cond_t more;
    struct node **stack;
    size_t len, cap;
    struct node **all; /* every node made, freed (and any fd left open closed) at the end */
    size_t nall, allcap;
    int left;  /* subtrees asked for and not yet gone */
    int error; /* the first errno: everyone stops */
    int idle;  /* threads waiting for work */
    int threads;
};

static struct node *
new_node(struct work *w, struct node *parent, int root_fd, const char *name)
{
    size_t len = strlen(name) + 1;
    struct node *n = malloc(sizeof(struct node) + len);
    if (n == NULL)
        return NULL;
    n->parent = parent;
    n->root_fd = root_fd;
    n->fd = -1;
    n->pending = 1;
    memcpy(n->name, name, len);
    pthread_mutex_lock(&w->lock);
    int bad = grow((void **)&w->all, &w->allcap, w->nall + 1, sizeof(struct node *));
    if (!bad)
        w->all[w->nall++] = n;
    pthread_mutex_unlock(&w->lock);
    if (bad) {
        free(n);
        return NULL;
    }
    return n;
}

static void
fail(struct work *w, int err)
{
    pthread_mutex_lock(&w->lock);
    if (w->error == 0)
        w->error = err;
    pthread_cond_broadcast(&w->more);
    pthread_mutex_unlock(&w->lock);
}

/* One of n's jobs ended: once none is left, close and remove it, then its parent maybe. */
static void
finish(struct work *w, struct node *n)
{
    while (n != NULL) {
        pthread_mutex_lock(&w->lock);
        int left = --n->pending;
        pthread_mutex_unlock(&w->lock);
        if (left > 0)
            return;
        close(n->fd);
        n->fd = -1;
        int pfd = n->parent != NULL ? n->parent->fd : n->root_fd;
        if (unlinkat(pfd, n->name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
            fail(w, errno);
            return;
        }
        if (n->parent == NULL) {
            pthread_mutex_lock(&w->lock);
            if (--w->left == 0)
                pthread_cond_broadcast(&w->more);
            pthread_mutex_unlock(&w->lock);
            return;
        }
        n = n->parent;
    }
}

/* Open n, unlink what is not a directory, queue the subdirectories. */
static void
process(struct work *w, struct node *n)
{
    int pfd = n->parent != NULL ? n->parent->fd : n->root_fd;
    int fd = openat(pfd, n->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        fail(w, errno); /* (gone already, or not ours to read: Python decides) */
        return;
    }
    n->fd = fd;
    struct names nm = {0};
    int err = unlink_entries(fd, &nm);
    if (err == 0 && nm.ndirs > 0) {
        struct node **kids = malloc(nm.ndirs * sizeof(struct node *));
        if (kids == NULL)
            err = ENOMEM;
        for (size_t i = 0; err == 0 && i < nm.ndirs; i++)
            if ((kids[i] = new_node(w, n, -1, nm.buf + nm.dirs[i])) == NULL)
                err = ENOMEM;
        if (err == 0) {
            pthread_mutex_lock(&w->lock);
            if (grow((void **)&w->stack, &w->cap, w->len + nm.ndirs, sizeof(struct node *)) < 0) {
                err = ENOMEM;
            } else {
                n->pending += (int)nm.ndirs;
                for (size_t i = 0; i < nm.ndirs; i++)
                    w->stack[w->len++] = kids[i];
                if (w->idle)
                    pthread_cond_broadcast(&w->more);
            }
            pthread_mutex_unlock(&w->lock);
        }
        free(kids);
    }
    free(nm.buf);
    free(nm.dirs);
    if (err != 0) {
        fail(w, err);
        return;
    }
    finish(w, n);
}

static void *
worker(void *arg)
{
    struct work *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        if (w->error != 0 || w->left == 0)
            break;
        if (w->len == 0) {
            w->idle++;
            pthread_cond_wait(&w->more, &w->lock);
            w->idle--;
            continue;
        }
        struct node *n = w->stack[--w->len];
        pthread_mutex_unlock(&w->lock);
        process(w, n);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static PyObject *
removetree_remove_trees(PyObject *self, PyObject *args)
{
    PyObject *items;
    int threads;
    if (!PyArg_ParseTuple(args, "O!i", &PyList_Type, &items, &threads))
        return NULL;
    struct work w = {.error = 0};
    Py_ssize_t count = PyList_GET_SIZE(items);
    int err = 0;
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.more, NULL);
    for (Py_ssize_t i = 0; i < count && err == 0; i++) {
        int root_fd;
        PyObject *name;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(items, i), "iO&", &root_fd, PyUnicode_FSConverter, &name)) {
            err = -1;
            break;
        }
        struct node *n = new_node(&w, NULL, root_fd, PyBytes_AS_STRING(name));
        Py_DECREF(name);
        if (n == NULL || grow((void **)&w.stack, &w.cap, w.len + 1, sizeof(struct node *)) < 0) {
            err = ENOMEM;
            break;
        }
        w.stack[w.len++] = n;
        w.left++;
    }
    if (err == 0 && w.left > 0) {
        pthread_t tids[16];
        int started = 0;
        if (threads > 16)
            threads = 16;
        Py_BEGIN_ALLOW_THREADS
        for (int i = 1; i < threads; i++)
            if (pthread_create(&tids[started], NULL, worker, &w) == 0)
                started++;
        worker(&w);
        for (int i = 0; i < started; i++)
            pthread_join(tids[i], NULL);
        Py_END_ALLOW_THREADS
        err = w.error;
    }
    for (size_t i = 0; i < w.nall; i++) {
        if (w.all[i]->fd >= 0)
            close(w.all[i]->fd);
        free(w.all[i]);
    }
    free(w.all);
    free(w.stack);
    pthread_cond_destroy(&w.more);
    pthread_mutex_destroy(&w.lock);
    if (err == -1)
        return NULL;
    if (err == ENOMEM)
        return PyErr_NoMemory();
    return PyLong_FromLong(err);
}

static PyMethodDef methods[] = {
    {"remove_trees", removetree_remove_trees, METH_VARARGS,
     "remove_trees([(dirfd, name), ...], threads) -> 0, or the errno that stopped it: removes each\n"
     "directory name below dirfd and everything in it, never following symlinks, in that many\n"
     "threads, with the GIL released.  After an error, what was removed stays removed; nothing is\n"
     "retried (the caller's Python loop finishes the rest and reports what fails)."},
    {"unlink_entries", removetree_unlink_entries, METH_O,
     "unlink_entries(dirfd) -> (subdirectory names, entries seen), or None after an error (the\n"
     "directory's offset is back at its start): unlinks every entry of the open directory that is\n"
     "not a directory, without following symlinks, with the GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_removetree", "fsutil.remove_tree's per-directory loop in C", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__removetree(void)
{
    return PyModule_Create(&module);
}

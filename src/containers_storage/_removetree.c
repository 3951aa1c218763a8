/*
 * One directory's worth of fsutil.remove_tree in C, without the GIL: read every entry
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

static PyMethodDef methods[] = {
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

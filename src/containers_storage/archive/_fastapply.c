/*
 * The hot loop of layer apply, in C: runs of plain tar entries applied straight out of the
 * current input chunk.
 *
 * apply.py hands over (at an entry boundary) the chunk, the offset of the next entry and the
 * padding still ahead of it.  Entries are taken while they are plain: a ustar or GNU header with
 * a valid checksum and octal numbers (a ustar name prefix allowed), of type regular file,
 * directory or symlink, with a clean printable-ASCII name that has no component starting with a
 * dot (so no "..", no whiteout), whose parent directory is already open in the applier's cache,
 * whose content lies wholly in the chunk, whose owner has a host ID under the layer's ID maps,
 * and whose name is new in the layer.  Anything else -- and any doubt:
 * every check that could make the archive invalid -- stops the run *before* any side effect, so
 * apply.py handles that entry (and reports any error) exactly as it always does.
 *
 * Confinement is the Python path's: the parent is an fd apply.py resolved beneath the layer
 * root, the base name is one component that cannot be "..", and every creation is *at* that fd
 * and cannot follow a symlink (O_CREAT|O_EXCL|O_NOFOLLOW, mkdirat, symlinkat; ownership and
 * times on the fd, or with AT_SYMLINK_NOFOLLOW).  An existing name always falls back, so
 * nothing is ever replaced or removed here.
 *
 * The GIL is released around each entry's system calls, as os.* calls release it, so the reader
 * thread keeps reading, hashing and decompressing meanwhile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define BLOCK 512
#define DIR_CACHE_MAX 256
#define MAX_SECS 9223372036ULL /* the last whole second that int64 nanoseconds hold */

enum { T_REG = '0', T_REGA = '\0', T_DIR = '5', T_SYMLINK = '2' };

typedef struct {
    int type;
    unsigned long long mode, uid, gid, size, mtime;
    const unsigned char *name; /* the block's name field, or full below */
    size_t name_len;
    const unsigned char *link;
    size_t link_len;
    unsigned char full[256]; /* a ustar prefix, "/" and the name */
} Header;

/* Go's parseOctal as tarread.parse_octal reads it: NUL/space padding at either end, then only
 * octal digits.  0 for anything else (base-256, stray bytes): that header falls back. */
static int octal(const unsigned char *p, size_t n, unsigned long long *out)
{
    size_t a = 0, b = n;
    while (a < b && (p[a] == ' ' || p[a] == 0))
        a++;
    while (b > a && (p[b - 1] == ' ' || p[b - 1] == 0))
        b--;
    unsigned long long v = 0;
    for (size_t i = a; i < b; i++) {
        if (p[i] < '0' || p[i] > '7')
            return 0;
        v = (v << 3) | (unsigned long long)(p[i] - '0');
    }
    *out = v;
    return 1;
}

/* The checksum as Go accepts it: unsigned or signed byte sum, the field counted as spaces. */
static int checksum_ok(const unsigned char *b)
{
    unsigned long long want;
    if (!octal(b + 148, 8, &want))
        return 0;
    long long usum = 0, ssum = 0;
    for (int i = 0; i < BLOCK; i++) {
        unsigned char c = (i >= 148 && i < 156) ? ' ' : b[i];
        usum += c;
        ssum += (signed char)c;
    }
    return (long long)want == usum || (long long)want == ssum;
}

static size_t cstrlen(const unsigned char *p, size_t max)
{
    const unsigned char *nul = memchr(p, 0, max);
    return nul ? (size_t)(nul - p) : max;
}

/* 1 when the block is a plain header (see the top of the file), filling h. */
static int parse_plain(const unsigned char *b, Header *h)
{
    unsigned long long devmajor, devminor;
    size_t prefix_len = 0;
    if (memcmp(b + 257, "ustar\0", 6) == 0) {
        if (memcmp(b + 508, "tar\0", 4) == 0)
            return 0; /* star's layout */
        prefix_len = cstrlen(b + 345, 155);
    }
    else if (memcmp(b + 257, "ustar  \0", 8) == 0) {
        if (b[345])
            return 0; /* GNU atime/ctime (or an old writer's prefix) */
    }
    else
        return 0; /* V7 */
    if (!checksum_ok(b))
        return 0;
    if (!octal(b + 100, 8, &h->mode) || !octal(b + 108, 8, &h->uid) ||
        !octal(b + 116, 8, &h->gid) || !octal(b + 124, 12, &h->size) ||
        !octal(b + 136, 12, &h->mtime) || !octal(b + 329, 8, &devmajor) ||
        !octal(b + 337, 8, &devminor))
        return 0;
    h->name = b;
    h->name_len = cstrlen(b, 100);
    if (prefix_len) { /* Go: prefix + "/" + name, whatever the name */
        memcpy(h->full, b + 345, prefix_len);
        h->full[prefix_len] = '/';
        memcpy(h->full + prefix_len + 1, b, h->name_len);
        h->name = h->full;
        h->name_len += prefix_len + 1;
    }
    h->link = b + 157;
    h->link_len = cstrlen(b + 157, 100);
    h->type = b[156];
    if (h->type == T_REGA)
        h->type = (h->name_len && h->name[h->name_len - 1] == '/') ? T_DIR : T_REG;
    return h->type == T_REG || h->type == T_DIR || h->type == T_SYMLINK;
}

/* The name below the layer root when the name is plain: "./" in front and one "/" behind
 * allowed; the rest non-empty, no component starting with "." or empty, and only bytes Go's
 * JSON encoder writes as they are (so the name is its own tar-split text and its own key). */
static int plain_name(const unsigned char *name, size_t n, size_t *start, size_t *end)
{
    size_t a = 0, e = n;
    if (e >= 2 && name[0] == '.' && name[1] == '/')
        a = 2;
    if (e > a && name[e - 1] == '/')
        e--;
    if (e == a || name[a] == '.' || name[a] == '/' || name[e - 1] == '/')
        return 0;
    for (size_t i = a; i < e; i++) {
        unsigned char c = name[i];
        if (c < 0x20 || c > 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&')
            return 0;
        if (c == '/' && (name[i + 1] == '/' || name[i + 1] == '.'))
            return 0; /* i + 1 < e here: name[e - 1] is not a slash */
    }
    *start = a;
    *end = e;
    return 1;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64(char *out, const unsigned char *p, size_t n)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *out++ = B64[v >> 18];
        *out++ = B64[(v >> 12) & 63];
        *out++ = B64[(v >> 6) & 63];
        *out++ = B64[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        *out++ = B64[v >> 18];
        *out++ = B64[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    }
    else if (n - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        *out++ = B64[v >> 18];
        *out++ = B64[(v >> 12) & 63];
        *out++ = B64[(v >> 6) & 63];
        *out++ = '=';
    }
    return out;
}

/* An ID map: container IDs [c, c + n) are host IDs [h, h + n) (idtools.IDMap). */
typedef struct {
    long long c, h, n;
} Range;

typedef struct {
    Range *ranges; /* NULL: no map, IDs are host IDs */
    Py_ssize_t count;
} IdMap;

typedef struct {
    PyObject *cache, *stale, *dir_times, *unpacked, *uids, *gids, *seen, *crc, *lines;
    PyObject *reuse; /* name -> (fd, hard link allowed) of a partial pull's local copies, or NULL */
    int root, chown;
    long long ts_pos;
    IdMap uid_map, gid_map;
} Ctx;

/* idtools.to_host; 0 when the ID has no host ID (or none chown could take): the Python path
 * then reports it. */
static int to_host(const IdMap *m, unsigned long long id, unsigned long long *out)
{
    if (!m->ranges) {
        *out = id;
        return 1;
    }
    for (Py_ssize_t i = 0; i < m->count; i++) {
        const Range *r = &m->ranges[i];
        if ((long long)id >= r->c && (long long)id - r->c < r->n) {
            *out = (unsigned long long)(r->h + ((long long)id - r->c));
            return *out < 0xFFFFFFFFULL; /* (uid_t)-1 would mean "leave unchanged" */
        }
    }
    return 0;
}

/* A list of (container ID, host ID, size) triples, or None. */
static int parse_map(PyObject *obj, IdMap *m)
{
    m->ranges = NULL;
    m->count = 0;
    if (obj == Py_None)
        return 0;
    PyObject *seq = PySequence_Fast(obj, "an ID map is a sequence of (container, host, size)");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    m->ranges = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Range));
    if (!m->ranges) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Range *r = &m->ranges[i];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "LLL", &r->c, &r->h, &r->n)) {
            Py_DECREF(seq);
            return -1;
        }
        if (r->c < 0 || r->h < 0 || r->n < 0 || r->c > LLONG_MAX - r->n || r->h > LLONG_MAX - r->n) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "ID map range out of bounds");
            return -1;
        }
    }
    m->count = n;
    Py_DECREF(seq);
    return 0;
}

enum { DONE, FALLBACK, FAILED };

static int as_int(PyObject *o)
{
    long v = PyLong_AsLong(o);
    if (v > INT_MAX || v < INT_MIN) {
        PyErr_SetString(PyExc_OverflowError, "fd out of range");
        return -1;
    }
    return (int)v;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The system calls of one entry, without the GIL.  Returns DONE, FALLBACK (the name exists:
 * nothing was done) or FAILED with errno set, *named telling whether the os.* call that failed
 * would name the entry (1) or the link target and the entry (2); *dir_fd receives a new
 * directory's fd. */
#define FICLONE_REQUEST 0x40049409 /* FICLONE: share the source's extents (reflink) */

/* A regular file's content: a clone of the local copy src_fd where the file system shares
 * extents (a partial pull, as apply.py's _clone) and the copy has the size, else the bytes. */
static int fill(int fd, int src_fd, const unsigned char *data, unsigned long long size)
{
    struct stat st;
    if (src_fd >= 0 && fstat(src_fd, &st) == 0 && (unsigned long long)st.st_size == size &&
        ioctl(fd, FICLONE_REQUEST, src_fd) == 0)
        return 0;
    return write_all(fd, data, size);
}

static int make_entry(const Header *h, int pfd, const char *base, const char *link,
                      const unsigned char *data, int src_fd, int chown, uid_t uid, gid_t gid,
                      int *dir_fd, int *named)
{
    int fd, saved;
    struct timespec times[2];
    *named = 0;
    if (h->type == T_REG) {
        do
            fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        while (fd < 0 && errno == EINTR);
        if (fd < 0) {
            *named = 1;
            return errno == EEXIST ? FALLBACK : FAILED;
        }
        times[0].tv_sec = times[1].tv_sec = (time_t)h->mtime;
        times[0].tv_nsec = times[1].tv_nsec = 0;
        if (fill(fd, src_fd, data, h->size) < 0 || (chown && fchown(fd, uid, gid) < 0) ||
            fchmod(fd, h->mode & 07777) < 0 || futimens(fd, times) < 0) {
            saved = errno;
            close(fd);
            errno = saved;
            return FAILED;
        }
        return close(fd) < 0 ? FAILED : DONE;
    }
    if (h->type == T_DIR) {
        if (mkdirat(pfd, base, 0700) < 0) {
            *named = 1;
            return errno == EEXIST ? FALLBACK : FAILED;
        }
        fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            *named = 1;
            return FAILED;
        }
        if ((chown && fchown(fd, uid, gid) < 0) || fchmod(fd, h->mode & 07777) < 0) {
            saved = errno;
            close(fd);
            errno = saved;
            return FAILED;
        }
        *dir_fd = fd;
        return DONE;
    }
    /* T_SYMLINK */
    if (symlinkat(link, pfd, base) < 0) {
        *named = 2;
        return errno == EEXIST ? FALLBACK : FAILED;
    }
    times[0].tv_sec = times[1].tv_sec = (time_t)h->mtime;
    times[0].tv_nsec = times[1].tv_nsec = 0;
    *named = 1;
    if ((chown && fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) ||
        utimensat(pfd, base, times, AT_SYMLINK_NOFOLLOW) < 0)
        return FAILED;
    return DONE;
}

/* apply.py's _Applier._remember followed by close_stale: a new directory's fd becomes the
 * cached one for its path, the oldest entry making room when the cache is full. */
static int remember(Ctx *c, PyObject *rel, int fd)
{
    PyObject *fd_obj = PyLong_FromLong(fd);
    if (!fd_obj) {
        close(fd);
        return -1;
    }
    PyObject *old = PyDict_GetItemWithError(c->cache, rel);
    if (old) {
        if (PyList_Append(c->stale, old) < 0 || PyDict_DelItem(c->cache, rel) < 0)
            goto fail;
    }
    else if (PyErr_Occurred())
        goto fail;
    else if (PyDict_GET_SIZE(c->cache) >= DIR_CACHE_MAX) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        if (PyDict_Next(c->cache, &pos, &key, &value)) {
            Py_INCREF(key);
            int bad = PyList_Append(c->stale, value) < 0 || PyDict_DelItem(c->cache, key) < 0;
            Py_DECREF(key);
            if (bad)
                goto fail;
        }
    }
    if (PyDict_SetItem(c->cache, rel, fd_obj) < 0)
        goto fail;
    Py_DECREF(fd_obj);
    /* close_stale */
    Py_ssize_t n = PyList_GET_SIZE(c->stale);
    for (Py_ssize_t i = 0; i < n; i++) {
        int sfd = as_int(PyList_GET_ITEM(c->stale, i));
        if (sfd == -1 && PyErr_Occurred())
            return -1;
        close(sfd);
    }
    return n ? PyList_SetSlice(c->stale, 0, n, NULL) : 0;
fail:
    Py_DECREF(fd_obj);
    close(fd);
    return -1;
}

static int append_line(Ctx *c, const char *line, Py_ssize_t len)
{
    PyObject *b = PyBytes_FromStringAndSize(line, len);
    if (!b)
        return -1;
    int r = PyList_Append(c->lines, b);
    Py_DECREF(b);
    c->ts_pos++;
    return r;
}

/* The tar-split line of the raw bytes before an entry's content (padding and header). */
static int segment_line(Ctx *c, const unsigned char *raw, size_t n)
{
    char line[2048], *p; /* n < 2 * BLOCK: 1364 characters of base64 at most */
    p = line + sprintf(line, "{\"type\":2,\"payload\":\"");
    p = b64(p, raw, n);
    p += sprintf(p, "\",\"position\":%lld}\n", c->ts_pos);
    return append_line(c, line, p - line);
}

static int add_id(PyObject *set, unsigned long long id)
{
    PyObject *v = PyLong_FromUnsignedLongLong(id);
    if (!v)
        return -1;
    int r = PySet_Add(set, v);
    Py_DECREF(v);
    return r;
}

/* CRC-64/ISO of the content, through the same function the Python path uses. */
static int content_crc(Ctx *c, const unsigned char *data, size_t n, unsigned long long *out)
{
    *out = 0;
    if (!n)
        return 0;
    PyObject *view = PyMemoryView_FromMemory((char *)data, (Py_ssize_t)n, PyBUF_READ);
    if (!view)
        return -1;
    PyObject *r = PyObject_CallFunction(c->crc, "Oi", view, 0);
    Py_DECREF(view);
    if (!r)
        return -1;
    *out = PyLong_AsUnsignedLongLong(r);
    Py_DECREF(r);
    return PyErr_Occurred() ? -1 : 0;
}

/* (entry name, the OSError the failed os.* call would have raised), or NULL with an exception
 * set. */
static PyObject *os_error(const Header *h, int err, int named, const char *base, const char *link)
{
    PyObject *fname = PyBytes_FromString(base);
    PyObject *lname = named == 2 ? PyBytes_FromString(link) : NULL;
    PyObject *result = NULL;
    if (fname && (named != 2 || lname)) {
        errno = err;
        if (named == 2)
            PyErr_SetFromErrnoWithFilenameObjects(PyExc_OSError, lname, fname);
        else if (named)
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, fname);
        else
            PyErr_SetFromErrno(PyExc_OSError);
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        PyObject *hname = PyBytes_FromStringAndSize((const char *)h->name, (Py_ssize_t)h->name_len);
        if (hname) {
            result = PyTuple_Pack(2, hname, exc);
            Py_DECREF(hname);
        }
        Py_XDECREF(exc);
    }
    Py_XDECREF(fname);
    Py_XDECREF(lname);
    return result;
}

/* One entry at `at` (the padding before its header included).  DONE advances *at and *pad;
 * FALLBACK leaves everything as it was; FAILED sets *error to (name, exception) or leaves a
 * Python exception set (an internal error). */
static int one_entry(Ctx *c, const unsigned char *buf, Py_ssize_t len, Py_ssize_t *at,
                     Py_ssize_t *pad, PyObject **error)
{
    Py_ssize_t hpos = *at + *pad;
    if (hpos + BLOCK > len)
        return FALLBACK;
    const unsigned char *blk = buf + hpos;
    Header h;
    size_t a, e;
    if (!parse_plain(blk, &h) || !plain_name(h.name, h.name_len, &a, &e))
        return FALLBACK;
    /* An empty link target is an error for the Python path to report; a time past int64
     * nanoseconds is clamped there (so every time handled here is passed on unchanged). */
    if ((h.type == T_SYMLINK && !h.link_len) || h.mtime > MAX_SECS)
        return FALLBACK;
    unsigned long long data_size = h.type == T_REG ? h.size : 0;
    if (data_size > (unsigned long long)(len - hpos - BLOCK))
        return FALLBACK;
    unsigned long long host_uid, host_gid;
    if (!to_host(&c->uid_map, h.uid, &host_uid) || !to_host(&c->gid_map, h.gid, &host_gid))
        return FALLBACK;

    const unsigned char *rel = h.name + a;
    size_t rel_len = e - a;
    const unsigned char *slash = NULL;
    for (size_t i = rel_len; i-- > 0;)
        if (rel[i] == '/') {
            slash = rel + i;
            break;
        }
    int pfd = c->root;
    if (slash) {
        PyObject *parent = PyBytes_FromStringAndSize((const char *)rel, slash - rel);
        if (!parent)
            return FAILED;
        PyObject *fd_obj = PyDict_GetItemWithError(c->cache, parent);
        Py_DECREF(parent);
        if (!fd_obj)
            return PyErr_Occurred() ? FAILED : FALLBACK;
        pfd = as_int(fd_obj);
        if (pfd == -1 && PyErr_Occurred())
            return FAILED;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)rel, (Py_ssize_t)rel_len);
    if (!key)
        return FAILED;
    int status = FAILED;
    if (c->seen) {
        int dup = PySet_Contains(c->seen, key);
        if (dup != 0) { /* a duplicate: the Python path records it and raises */
            status = dup < 0 ? FAILED : FALLBACK;
            goto out;
        }
    }

    char base[sizeof h.full], link[101];
    const unsigned char *b0 = slash ? slash + 1 : rel;
    size_t base_len = rel + rel_len - b0;
    memcpy(base, b0, base_len);
    base[base_len] = 0;
    memcpy(link, h.link, h.link_len);
    link[h.link_len] = 0;
    const unsigned char *data = blk + BLOCK;
    int dir_fd = -1, named, r, err = 0, src_fd = -1;
    PyObject *name_key = NULL;
    if (c->reuse && h.type == T_REG) {
        /* A local copy to clone: keyed by the header's name, as apply.py's _write_file looks it
         * up.  One to hard link is the Python path's (it compares owner and mode first). */
        name_key = PyBytes_FromStringAndSize((const char *)h.name, (Py_ssize_t)h.name_len);
        if (!name_key)
            goto out;
        PyObject *found = PyDict_GetItemWithError(c->reuse, name_key);
        if (found) {
            int hard_link = PyTuple_Check(found) && PyTuple_GET_SIZE(found) == 2
                            ? PyObject_IsTrue(PyTuple_GET_ITEM(found, 1)) : -1;
            if (hard_link < 0 || (src_fd = as_int(PyTuple_GET_ITEM(found, 0))) < 0) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "run: reuse items are (fd, hard link allowed)");
                Py_DECREF(name_key);
                goto out;
            }
            if (hard_link) {
                Py_DECREF(name_key);
                status = FALLBACK;
                goto out;
            }
        }
        else if (PyErr_Occurred()) {
            Py_DECREF(name_key);
            goto out;
        }
        else
            Py_CLEAR(name_key);
    }
    Py_BEGIN_ALLOW_THREADS
    r = make_entry(&h, pfd, base, link, data, src_fd, c->chown, (uid_t)host_uid,
                   (gid_t)host_gid, &dir_fd, &named);
    if (r == FAILED)
        err = errno;
    Py_END_ALLOW_THREADS
    if (name_key) {
        /* Taken (a clone or the bytes written) or failed: either way it is used up, as in
         * _reuse_file; a fallback leaves it for the Python path. */
        if (r != FALLBACK) {
            close(src_fd);
            if (PyDict_DelItem(c->reuse, name_key) < 0) {
                Py_DECREF(name_key);
                if (dir_fd >= 0)
                    close(dir_fd);
                goto out;
            }
        }
        Py_DECREF(name_key);
    }
    if (r == FALLBACK) {
        status = FALLBACK;
        goto out;
    }
    if (r == FAILED) {
        /* The Python path records the header before it fails on the entry. */
        if (!c->seen || segment_line(c, buf + *at, (size_t)(*pad + BLOCK)) == 0)
            *error = os_error(&h, err, named, base, link);
        goto out;
    }

    /* The entry exists now: from here on only bookkeeping (failures are internal errors). */
    if (dir_fd >= 0) {
        PyObject *ns = PyLong_FromLongLong((long long)h.mtime * 1000000000LL);
        PyObject *t = ns ? PyTuple_Pack(3, key, ns, ns) : NULL;
        Py_XDECREF(ns);
        if (!t) {
            close(dir_fd);
            goto out;
        }
        r = PyList_Append(c->dir_times, t);
        Py_DECREF(t);
        if (r < 0) {
            close(dir_fd);
            goto out;
        }
        if (remember(c, key, dir_fd) < 0)
            goto out;
    }
    if ((c->unpacked != Py_None && PySet_Add(c->unpacked, key) < 0) ||
        add_id(c->uids, h.uid) < 0 || add_id(c->gids, h.gid) < 0)
        goto out;
    if (c->seen) {
        unsigned long long crc;
        char line[2048], *p;
        if (PySet_Add(c->seen, key) < 0 || content_crc(c, data, data_size, &crc) < 0)
            goto out;
        if (segment_line(c, buf + *at, (size_t)(*pad + BLOCK)) < 0)
            goto out;
        p = line + sprintf(line, "{\"type\":1,\"name\":\"%.*s\",", (int)h.name_len, h.name);
        if (h.size)
            p += sprintf(p, "\"size\":%llu,\"payload\":\"", h.size);
        else
            p += sprintf(p, "\"payload\":null");
        if (h.size) {
            unsigned char be[8];
            for (int i = 0; i < 8; i++)
                be[i] = (unsigned char)(crc >> (56 - 8 * i));
            p = b64(p, be, 8);
            *p++ = '"';
        }
        p += sprintf(p, ",\"position\":%lld}\n", c->ts_pos);
        if (append_line(c, line, p - line) < 0)
            goto out;
    }
    *at = hpos + BLOCK + (Py_ssize_t)data_size;
    *pad = (Py_ssize_t)((BLOCK - data_size % BLOCK) % BLOCK);
    status = DONE;
out:
    Py_DECREF(key);
    return status;
}

PyDoc_STRVAR(run_doc,
"run(buf, pos, pad, root, cache, stale, dir_times, unpacked, uids, gids, chown, seen, crc, ts_pos,\n"
"    uid_map, gid_map, reuse=None)\n"
"--\n\n"
"Apply the plain entries that start at buf[pos + pad:], until one is not plain or the chunk\n"
"ends.  Returns (pos, pad, entries applied, tar-split lines, error), error being None or\n"
"(entry name, OSError).  seen is the tar-split writer's set of names, or None without one;\n"
"uid_map and gid_map lists of (container ID, host ID, size), or None.  reuse maps a regular\n"
"file's name to (fd of a local copy, hard link allowed): the file is a clone of the copy where\n"
"the file system can (its bytes otherwise), the entry leaves the dict and the fd is closed; one\n"
"to hard link stops the run for the Python path.");

static PyObject *run(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos, pad;
    Ctx c;
    PyObject *seen, *uid_map, *gid_map, *reuse = Py_None;
    if (!PyArg_ParseTuple(args, "y*nniO!O!O!OO!O!pOOLOO|O:run", &buf, &pos, &pad, &c.root,
                          &PyDict_Type, &c.cache, &PyList_Type, &c.stale, &PyList_Type,
                          &c.dir_times, &c.unpacked, &PySet_Type, &c.uids, &PySet_Type, &c.gids,
                          &c.chown, &seen, &c.crc, &c.ts_pos, &uid_map, &gid_map, &reuse))
        return NULL;
    c.reuse = reuse == Py_None ? NULL : reuse;
    if (parse_map(uid_map, &c.uid_map) < 0 || parse_map(gid_map, &c.gid_map) < 0) {
        PyMem_Free(c.uid_map.ranges);
        PyMem_Free(c.gid_map.ranges);
        PyBuffer_Release(&buf);
        return NULL;
    }
    if ((c.unpacked != Py_None && !PySet_Check(c.unpacked)) ||
        (seen != Py_None && !PySet_Check(seen)) || (c.reuse && !PyDict_Check(c.reuse)) || pos < 0 || pad < 0 || pad >= BLOCK ||
        pos > buf.len) {
        PyMem_Free(c.uid_map.ranges);
        PyMem_Free(c.gid_map.ranges);
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "run: bad arguments");
        return NULL;
    }
    c.seen = seen == Py_None ? NULL : seen;
    c.lines = PyList_New(0);
    if (!c.lines) {
        PyMem_Free(c.uid_map.ranges);
        PyMem_Free(c.gid_map.ranges);
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyObject *error = NULL;
    Py_ssize_t count = 0;
    int r;
    while ((r = one_entry(&c, buf.buf, buf.len, &pos, &pad, &error)) == DONE)
        count++;
    PyMem_Free(c.uid_map.ranges);
    PyMem_Free(c.gid_map.ranges);
    PyBuffer_Release(&buf);
    if (r == FAILED && !error) {
        Py_DECREF(c.lines);
        return NULL;
    }
    return Py_BuildValue("nnnNN", pos, pad, count, c.lines, error ? error : Py_NewRef(Py_None));
}

/* openat2(2): an fd, or -1 with errno set (ENOSYS where the kernel or the C library has none). */
static long sys_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve)
{
#ifdef SYS_openat2
    struct {
        uint64_t flags, mode, resolve;
    } how = {flags, mode, resolve};
    return syscall(SYS_openat2, dirfd, path, &how, sizeof how);
#else
    errno = ENOSYS;
    return -1;
#endif
}

PyDoc_STRVAR(openat2_doc,
"openat2(dirfd, path, flags, mode, resolve) -> fd\n"
"--\n\n"
"The openat2 system call (confine.py's resolver), without loading ctypes.  Raises OSError;\n"
"ENOSYS where the kernel or the C library has none.");

static PyObject *py_openat2(PyObject *self, PyObject *args)
{
    int dirfd;
    const char *path;
    unsigned long long flags, mode, resolve;
    if (!PyArg_ParseTuple(args, "iyKKK:openat2", &dirfd, &path, &flags, &mode, &resolve))
        return NULL;
    long fd;
    Py_BEGIN_ALLOW_THREADS
    fd = sys_openat2(dirfd, path, flags, mode, resolve);
    Py_END_ALLOW_THREADS
    if (fd < 0)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, PyTuple_GET_ITEM(args, 1));
    return PyLong_FromLong(fd);
}

PyDoc_STRVAR(open_copies_doc,
"open_copies(items, flags, resolve) -> list of fds\n"
"--\n\n"
"Open a batch of files for reading, each with openat2(dirfd, path, flags, resolve) from an\n"
"(dirfd, path, size) item, path a str (encoded as os.fsencode does) or bytes, its empty and '.'\n"
"components dropped, in one call without the GIL (a partial pull's local copies: on a\n"
"cold cache every open waits for the disk, and a thread taking the GIL back after each one\n"
"queued behind the threads that apply the layer).  An fd is kept only for a regular file of\n"
"that size, and the kernel is asked to start reading it (POSIX_FADV_WILLNEED); -1 stands for\n"
"any other outcome (missing, another type or size, an error), as the caller cannot use it.");

struct copy_item {
    int dirfd;
    char *path; /* normalized, owned */
    long long size;
    int fd;
};

/* ``raw`` without empty and "." components (as confine._components joins them), "." if none
 * is left; NULL when out of memory. */
static char *clean_path(const char *raw, Py_ssize_t len)
{
    char *out = PyMem_Malloc((size_t)len + 2);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    Py_ssize_t i = 0;
    while (i < len) {
        Py_ssize_t j = i;
        while (j < len && raw[j] != '/')
            j++;
        Py_ssize_t n = j - i;
        if (n > 0 && !(n == 1 && raw[i] == '.')) {
            if (o)
                out[o++] = '/';
            memcpy(out + o, raw + i, (size_t)n);
            o += (size_t)n;
        }
        i = j + 1;
    }
    if (!o)
        out[o++] = '.';
    out[o] = '\0';
    return out;
}

static PyObject *py_open_copies(PyObject *self, PyObject *args)
{
    PyObject *items;
    unsigned long long flags, resolve;
    if (!PyArg_ParseTuple(args, "O!KK:open_copies", &PyList_Type, &items, &flags, &resolve))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    struct copy_item *batch = PyMem_Calloc(n ? (size_t)n : 1, sizeof *batch);
    if (batch == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_ssize_t len;
        char *path;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "open_copies: items are (dirfd, path, size) tuples");
            goto fail;
        }
        long dirfd = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        batch[i].size = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 2));
        if (PyErr_Occurred())
            goto fail;
        if (dirfd < INT_MIN || dirfd > INT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "open_copies: dirfd out of range");
            goto fail;
        }
        batch[i].dirfd = (int)dirfd;
        PyObject *name = PyTuple_GET_ITEM(item, 1);
        PyObject *encoded = NULL;
        if (PyUnicode_Check(name)) {
            encoded = PyUnicode_EncodeFSDefault(name);
            if (encoded == NULL)
                goto fail;
            name = encoded;
        }
        if (PyBytes_AsStringAndSize(name, &path, &len) < 0) {
            Py_XDECREF(encoded);
            goto fail;
        }
        if ((Py_ssize_t)strlen(path) != len) {
            Py_XDECREF(encoded);
            PyErr_SetString(PyExc_ValueError, "open_copies: embedded NUL in a path");
            goto fail;
        }
        batch[i].path = clean_path(path, len);
        Py_XDECREF(encoded);
        if (batch[i].path == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        long fd = sys_openat2(batch[i].dirfd, batch[i].path, flags, 0, resolve);
        if (fd >= 0) {
            struct stat st;
            if (fstat((int)fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != batch[i].size) {
                close((int)fd);
                fd = -1;
            } else {
                (void)posix_fadvise((int)fd, 0, 0, POSIX_FADV_WILLNEED);
            }
        }
        batch[i].fd = (int)fd;
    }
    Py_END_ALLOW_THREADS
    PyObject *out = PyList_New(n);
    if (out == NULL)
        goto close_all;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(batch[i].fd);
        if (v == NULL) {
            Py_DECREF(out);
            goto close_all;
        }
        PyList_SET_ITEM(out, i, v);
        batch[i].fd = -1; /* the caller's now */
    }
    for (Py_ssize_t i = 0; i < n; i++)
        PyMem_Free(batch[i].path);
    PyMem_Free(batch);
    return out;
close_all:
    for (Py_ssize_t i = 0; i < n; i++)
        if (batch[i].fd >= 0)
            close(batch[i].fd);
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        PyMem_Free(batch[i].path); /* (NULL for those not reached: calloc) */
    PyMem_Free(batch);
    return NULL;
}

static PyMethodDef methods[] = {
    {"run", run, METH_VARARGS, run_doc},
    {"openat2", py_openat2, METH_VARARGS, openat2_doc},
    {"open_copies", py_open_copies, METH_VARARGS, open_copies_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastapply",
    "The hot loop of layer apply in C: runs of plain tar entries (see apply.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastapply(void)
{
    return PyModule_Create(&module);
}

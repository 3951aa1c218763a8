/* The tar-split of a zstd:chunked layer held to its TOC, entry by entry, in C (Go's
 * ensureTOCMatchesTarSplit): archive/chunked/manifest.py's checked_entries.
 *
 * A Scanner is fed blocks of the tar-split's JSON lines and gives back each entry as
 * (type, name, size, payload), as manifest.py's _decode_line does; before a file entry is given
 * back, the tar header its raw bytes hold is checked against the TOC entry of that name, which
 * is taken out of the ``pending`` dict.
 *
 * Only the common shapes are handled here: the lines exactly as Go's packer writes them (plain
 * ASCII names, canonical base64) and a single ustar or GNU header whose fields all say what the
 * TOC entry says.  Anything else -- another line shape, PAX or GNU long-name headers, base-256
 * numbers, any field that differs -- goes to the Python callbacks (``slow_line``,
 * ``slow_header``), which decide, and raise the errors.  So this code only ever accepts what the
 * Python code would accept, and never has to word a refusal.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <structmember.h>
#include <string.h>
#include <time.h>

#define BLOCK 512

typedef struct {
    PyObject_HEAD
    PyObject *pending;     /* dict: TOC name (str) -> TOC entry */
    PyObject *slow_line;   /* callable(line: bytes) -> tuple | None */
    PyObject *slow_header; /* callable(region: bytes, pad: int, name: bytes, size: int) -> None */
    unsigned char *region; /* raw bytes since the last file entry */
    size_t region_len, region_cap;
    long long pad; /* padding of the previous file at the start of region */
} Scanner;

/* -- base64 ----------------------------------------------------------------------------------- */

static signed char b64_value[256];

static void b64_init(void)
{
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(b64_value, -1, sizeof b64_value);
    for (int i = 0; i < 64; i++)
        b64_value[(unsigned char)alphabet[i]] = (signed char)i;
}

/* Canonically padded standard base64 only (what Go's encoder writes); -1 for anything else. */
static Py_ssize_t b64_decoded_len(const unsigned char *s, size_t n)
{
    if (n % 4)
        return -1;
    size_t pad = 0;
    if (n && s[n - 1] == '=') {
        pad = 1;
        if (s[n - 2] == '=')
            pad = 2;
    }
    for (size_t i = 0; i < n - pad; i++)
        if (b64_value[s[i]] < 0)
            return -1;
    return (Py_ssize_t)(n / 4 * 3 - pad);
}

static void b64_decode(const unsigned char *s, size_t n, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        int k = 0;
        for (; k < 4 && s[i + k] != '='; k++)
            v = (v << 6) | (unsigned)b64_value[s[i + k]];
        v <<= 6 * (4 - k);
        out[o++] = (unsigned char)(v >> 16);
        if (k > 2)
            out[o++] = (unsigned char)(v >> 8);
        if (k > 3)
            out[o++] = (unsigned char)v;
    }
}

static PyObject *b64_bytes(const unsigned char *s, size_t n, Py_ssize_t len)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, len);
    if (b)
        b64_decode(s, n, (unsigned char *)PyBytes_AS_STRING(b));
    return b;
}

/* -- JSON lines as Go's packer writes them ------------------------------------------------------ */

static int starts(const unsigned char *p, const unsigned char *end, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(end - p) >= n && memcmp(p, lit, n) == 0;
}

/* A JSON non-negative integer (no leading zero, at most 18 digits) at *p; -1 if none. */
static long long json_uint(const unsigned char **p, const unsigned char *end)
{
    const unsigned char *q = *p;
    long long v = 0;
    int digits = 0;
    while (q < end && *q >= '0' && *q <= '9') {
        v = v * 10 + (*q - '0');
        q++;
        if (++digits > 18)
            return -1;
    }
    if (!digits || (digits > 1 && **p == '0'))
        return -1;
    *p = q;
    return v;
}

/* ``,"position":N}`` and the end of the line. */
static int position_tail(const unsigned char *p, const unsigned char *end)
{
    if (!starts(p, end, ",\"position\":"))
        return 0;
    p += 12;
    if (json_uint(&p, end) < 0)
        return 0;
    return p + 1 == end && *p == '}';
}

/* The entry of a line in one of the packer's two shapes as (type, name, size, payload);
 * Py_None (a new reference) when the line has another shape. */
static PyObject *fast_line(const unsigned char *p, const unsigned char *end)
{
    static const char seg[] = "{\"type\":2,\"payload\":\"";
    static const char file[] = "{\"type\":1,\"name\":\"";
    if (starts(p, end, seg)) {
        const unsigned char *b = p + sizeof seg - 1;
        const unsigned char *q = memchr(b, '"', (size_t)(end - b));
        if (!q || !position_tail(q + 1, end))
            Py_RETURN_NONE;
        Py_ssize_t len = b64_decoded_len(b, (size_t)(q - b));
        if (len < 0)
            Py_RETURN_NONE;
        PyObject *payload = b64_bytes(b, (size_t)(q - b), len);
        if (!payload)
            return NULL;
        return Py_BuildValue("(iy#iN)", 2, "", (Py_ssize_t)0, 0, payload);
    }
    if (!starts(p, end, file))
        Py_RETURN_NONE;
    const unsigned char *name = p + sizeof file - 1, *q = name;
    while (q < end && *q >= 0x20 && *q < 0x7f && *q != '"' && *q != '\\')
        q++;
    if (q == name || q >= end || *q != '"' || !starts(q + 1, end, ","))
        Py_RETURN_NONE;
    const unsigned char *name_end = q;
    q += 2;
    long long size = 0;
    if (starts(q, end, "\"size\":")) {
        q += 7;
        size = json_uint(&q, end);
        if (size < 0 || !starts(q, end, ","))
            Py_RETURN_NONE;
        q++;
    }
    if (!starts(q, end, "\"payload\":"))
        Py_RETURN_NONE;
    q += 10;
    const unsigned char *crc = NULL;
    size_t crc_n = 0;
    if (starts(q, end, "null")) {
        q += 4;
    } else if (starts(q, end, "\"")) {
        crc = q + 1;
        q = memchr(crc, '"', (size_t)(end - crc));
        if (!q)
            Py_RETURN_NONE;
        crc_n = (size_t)(q - crc);
        if (b64_decoded_len(crc, crc_n) != 8)
            Py_RETURN_NONE;
        q++;
    } else {
        Py_RETURN_NONE;
    }
    if (!position_tail(q, end))
        Py_RETURN_NONE;
    PyObject *payload;
    if (crc) {
        payload = b64_bytes(crc, crc_n, 8);
        if (!payload)
            return NULL;
    } else {
        payload = Py_NewRef(Py_None);
    }
    return Py_BuildValue("(iy#LN)", 1, (const char *)name, (Py_ssize_t)(name_end - name), size, payload);
}

/* -- tar headers -------------------------------------------------------------------------------- */

/* Go's parseOctal as tarread.parse_numeric takes it; 0 when the field is not plain octal (the
 * Python code decides about base-256 and malformed fields). */
static int octal(const unsigned char *f, size_t n, long long *out)
{
    if (n && (f[0] & 0x80))
        return 0;
    size_t a = 0, b = n;
    while (a < b && (f[a] == ' ' || f[a] == 0))
        a++;
    while (b > a && (f[b - 1] == ' ' || f[b - 1] == 0))
        b--;
    long long v = 0;
    for (size_t i = a; i < b; i++) {
        if (f[i] < '0' || f[i] > '7')
            return 0;
        v = v * 8 + (f[i] - '0');
    }
    *out = v;
    return 1;
}

static size_t cstring_len(const unsigned char *f, size_t n)
{
    const unsigned char *z = memchr(f, 0, n);
    return z ? (size_t)(z - f) : n;
}

typedef struct {
    int typeflag;
    long long mode, uid, gid, size, mtime, atime, devmajor, devminor;
    int has_atime;
    unsigned char name[256 + 1 + 100];
    size_t name_len;
    const unsigned char *link;
    size_t link_len;
} Header;

/* One header block as tarread.parse_header_block reads it, in the shapes handled here. */
static int parse_block(const unsigned char *blk, Header *h)
{
    long long want;
    if (!octal(blk + 148, 8, &want))
        return 0;
    long long sum = 8 * ' ';
    for (int i = 0; i < BLOCK; i++)
        if (i < 148 || i >= 156)
            sum += blk[i];
    if (sum != want)
        return 0;
    h->typeflag = blk[156];
    if (!octal(blk + 100, 8, &h->mode) || !octal(blk + 108, 8, &h->uid) ||
        !octal(blk + 116, 8, &h->gid) || !octal(blk + 136, 12, &h->mtime) ||
        !octal(blk + 124, 12, &h->size))
        return 0;
    h->devmajor = h->devminor = 0;
    h->has_atime = 0;
    size_t name_len = cstring_len(blk, 100);
    h->link = blk + 157;
    h->link_len = cstring_len(blk + 157, 100);
    size_t prefix_len = 0;
    const unsigned char *prefix = NULL;
    if (memcmp(blk + 257, "ustar\0", 6) == 0) {
        if (!octal(blk + 329, 8, &h->devmajor) || !octal(blk + 337, 8, &h->devminor))
            return 0;
        if (memcmp(blk + 508, "tar\0", 4) == 0)
            return 0; /* star's layout: left to Python */
        if (blk[345]) {
            prefix = blk + 345;
            prefix_len = cstring_len(prefix, 155);
        }
    } else if (memcmp(blk + 257, "ustar  \0", 8) == 0) {
        if (!octal(blk + 329, 8, &h->devmajor) || !octal(blk + 337, 8, &h->devminor))
            return 0;
        if (blk[357])
            return 0; /* a GNU change time: the Python check compares it */
        if (blk[345]) {
            if (!octal(blk + 345, 12, &h->atime))
                return 0;
            h->has_atime = 1;
        }
    }
    h->name_len = 0;
    if (prefix) {
        memcpy(h->name, prefix, prefix_len);
        h->name[prefix_len] = '/';
        h->name_len = prefix_len + 1;
    }
    memcpy(h->name + h->name_len, blk, name_len);
    h->name_len += name_len;
    if (h->typeflag == 0)
        h->typeflag = h->name_len && h->name[h->name_len - 1] == '/' ? '5' : '0';
    return 1;
}

/* Go's JSON text of a whole-second time as records.format_time_ns writes it; 0 out of range. */
static int format_time(long long secs, char *out, size_t n)
{
    if (secs < 0 || secs > 253402300799LL)
        return 0;
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return 0;
    snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    return 1;
}

static const char *toc_type(int typeflag)
{
    switch (typeflag) {
    case '0': return "reg";
    case '1': return "hardlink";
    case '2': return "symlink";
    case '3': return "char";
    case '4': return "block";
    case '5': return "dir";
    case '6': return "fifo";
    default: return NULL;
    }
}

/* The TOC entry attributes read here, interned once. */
enum { A_XATTRS, A_CHANGETIME, A_TYPE, A_MODE, A_SIZE, A_UID, A_GID, A_DEVMAJOR, A_DEVMINOR, A_MODTIME,
       A_ACCESSTIME, A_LINKNAME, A_COUNT };
static const char *const attr_names[A_COUNT] = {
    "xattrs", "changetime", "type", "mode", "size", "uid", "gid", "devmajor", "devminor", "modtime",
    "accesstime", "linkname",
};
static PyObject *attrs[A_COUNT];
static PyObject *update_attr;

/* 1 when attribute ``attr`` of ``e`` is the int ``v``; 0 when not; -1 on error. */
static int int_is(PyObject *e, int attr, long long v)
{
    PyObject *o = PyObject_GetAttr(e, attrs[attr]);
    if (!o)
        return -1;
    int r = 0;
    if (PyLong_CheckExact(o)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
        r = !overflow && x == v;
    }
    Py_DECREF(o);
    return r;
}

/* 1 when attribute ``attr`` of ``e`` is the str ``text``; 0 when not; -1 on error. */
static int str_is(PyObject *e, int attr, const char *text)
{
    PyObject *o = PyObject_GetAttr(e, attrs[attr]);
    if (!o)
        return -1;
    int r = PyUnicode_CheckExact(o) && PyUnicode_CompareWithASCIIString(o, text) == 0;
    Py_DECREF(o);
    return r;
}

/* 1 when attribute ``attr`` of ``e`` is falsy; -1 on error. */
static int falsy(PyObject *e, int attr)
{
    PyObject *o = PyObject_GetAttr(e, attrs[attr]);
    if (!o)
        return -1;
    int t = PyObject_IsTrue(o);
    Py_DECREF(o);
    return t < 0 ? -1 : !t;
}

#define CHECK(x)                                                                                    \
    do {                                                                                            \
        int r_ = (x);                                                                               \
        if (r_ <= 0) {                                                                              \
            status = r_;                                                                            \
            goto out;                                                                               \
        }                                                                                           \
    } while (0)

/* The region's one header for file entry ``name`` checked against its TOC entry, which is then
 * taken out of ``pending``: 1; 0 when the Python check must decide; -1 on error. */
static int fast_header(Scanner *s, const unsigned char *name, size_t name_len, long long size)
{
    if (s->pad < 0 || (size_t)s->pad + BLOCK != s->region_len)
        return 0;
    Header h;
    if (!parse_block(s->region + s->pad, &h))
        return 0;
    const char *type = toc_type(h.typeflag);
    if (!type || h.name_len != name_len || memcmp(h.name, name, name_len) != 0)
        return 0;
    int header_only = h.typeflag != '0';
    if ((header_only ? 0 : h.size) != size)
        return 0;
    char mtime[80], atime[80];
    if (!format_time(h.mtime, mtime, sizeof mtime) ||
        (h.has_atime && !format_time(h.atime, atime, sizeof atime)))
        return 0;
    int status = 0;
    PyObject *link = NULL;
    PyObject *key = PyUnicode_DecodeUTF8((const char *)name, (Py_ssize_t)name_len, "replace");
    if (!key)
        return -1;
    PyObject *e = PyDict_GetItemWithError(s->pending, key); /* borrowed */
    if (!e) {
        status = PyErr_Occurred() ? -1 : 0;
        goto out;
    }
    Py_INCREF(e);
    CHECK(falsy(e, A_XATTRS));
    CHECK(falsy(e, A_CHANGETIME));
    CHECK(str_is(e, A_TYPE, type));
    CHECK(int_is(e, A_MODE, h.mode));
    CHECK(int_is(e, A_SIZE, h.size));
    CHECK(int_is(e, A_UID, h.uid));
    CHECK(int_is(e, A_GID, h.gid));
    CHECK(int_is(e, A_DEVMAJOR, h.devmajor));
    CHECK(int_is(e, A_DEVMINOR, h.devminor));
    CHECK(str_is(e, A_MODTIME, mtime));
    if (h.has_atime) {
        CHECK(str_is(e, A_ACCESSTIME, atime));
    } else {
        PyObject *a = PyObject_GetAttr(e, attrs[A_ACCESSTIME]);
        if (!a) {
            status = -1;
            goto out_e;
        }
        int none = a == Py_None;
        Py_DECREF(a);
        if (!none)
            goto out_e;
    }
    link = PyUnicode_DecodeUTF8((const char *)h.link, (Py_ssize_t)h.link_len, "replace");
    if (!link) {
        status = -1;
        goto out_e;
    }
    {
        PyObject *mine = PyObject_GetAttr(e, attrs[A_LINKNAME]);
        if (!mine) {
            status = -1;
            goto out_e;
        }
        int same = PyUnicode_CheckExact(mine) ? PyUnicode_Compare(mine, link) : 1;
        Py_DECREF(mine);
        if (same == -1 && PyErr_Occurred()) {
            status = -1;
            goto out_e;
        }
        if (same != 0)
            goto out_e;
    }
    status = PyDict_DelItem(s->pending, key) < 0 ? -1 : 1;
out_e:
    Py_DECREF(e);
    e = NULL;
out:
    Py_XDECREF(e);
    Py_XDECREF(link);
    Py_DECREF(key);
    return status;
}

static int region_add(Scanner *s, const char *data, size_t n)
{
    if (s->region_len + n > s->region_cap) {
        size_t cap = s->region_cap ? s->region_cap : 4096;
        while (cap < s->region_len + n)
            cap *= 2;
        unsigned char *r = PyMem_Realloc(s->region, cap);
        if (!r) {
            PyErr_NoMemory();
            return -1;
        }
        s->region = r;
        s->region_cap = cap;
    }
    memcpy(s->region + s->region_len, data, n);
    s->region_len += n;
    return 0;
}

/* One entry: a segment's bytes go to the region, a file's header is checked. */
static int take_entry(Scanner *s, PyObject *entry)
{
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 4) {
        PyErr_SetString(PyExc_TypeError, "tar-split entries are (type, name, size, payload) tuples");
        return -1;
    }
    long typ = PyLong_AsLong(PyTuple_GET_ITEM(entry, 0));
    if (typ == -1 && PyErr_Occurred())
        return -1;
    PyObject *payload = PyTuple_GET_ITEM(entry, 3);
    if (typ == 2) {
        if (payload != Py_None && PyBytes_Check(payload))
            return region_add(s, PyBytes_AS_STRING(payload), (size_t)PyBytes_GET_SIZE(payload));
        return 0;
    }
    PyObject *name = PyTuple_GET_ITEM(entry, 1);
    PyObject *size_obj = PyTuple_GET_ITEM(entry, 2);
    if (!PyBytes_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "a tar-split name is bytes");
        return -1;
    }
    int overflow;
    long long size = PyLong_AsLongLongAndOverflow(size_obj, &overflow);
    if (size == -1 && PyErr_Occurred())
        return -1;
    int r = 0; /* a size beyond 64 bits is no header's: the Python check refuses it */
    if (!overflow && size >= 0)
        r = fast_header(s, (const unsigned char *)PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name),
                        size);
    if (r < 0)
        return -1;
    if (r == 0) {
        PyObject *region = PyBytes_FromStringAndSize((const char *)s->region, (Py_ssize_t)s->region_len);
        if (!region)
            return -1;
        PyObject *res = PyObject_CallFunction(s->slow_header, "(OLOO)", region, s->pad, name, size_obj);
        Py_DECREF(region);
        if (!res)
            return -1;
        Py_DECREF(res);
    }
    if (overflow || size < 0) {
        PyErr_SetString(PyExc_ValueError, "internal error: a tar-split size beyond 64 bits was accepted");
        return -1;
    }
    s->region_len = 0;
    s->pad = (512 - size % 512) % 512;
    return 0;
}

/* The bytes a method was given, once its object is initialized (one made by __new__ alone has
 * NULL fields: RuntimeError); -1 with an exception set otherwise. */
static int method_input(const void *field, const char *type, PyObject *arg, Py_buffer *view)
{
    if (!field) {
        PyErr_Format(PyExc_RuntimeError, "%s: not initialized", type);
        return -1;
    }
    return PyObject_GetBuffer(arg, view, PyBUF_SIMPLE);
}

static PyObject *Scanner_feed(Scanner *s, PyObject *arg)
{
    Py_buffer view;
    if (method_input(s->pending, "Scanner", arg, &view) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out)
        goto fail;
    const unsigned char *p = view.buf, *end = p + view.len;
    while (p < end) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *line_end = nl ? nl : end;
        if (line_end > p) {
            PyObject *entry = fast_line(p, line_end);
            if (entry == Py_None) {
                Py_DECREF(entry);
                entry = PyObject_CallFunction(s->slow_line, "(y#)", (const char *)p, (Py_ssize_t)(line_end - p));
            }
            if (!entry)
                goto fail;
            if (entry != Py_None && (take_entry(s, entry) < 0 || PyList_Append(out, entry) < 0)) {
                Py_DECREF(entry);
                goto fail;
            }
            Py_DECREF(entry);
        }
        p = nl ? nl + 1 : end;
    }
    PyBuffer_Release(&view);
    return out;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

/* Each of ``fields`` set to a new reference to its value, or cleared without ``values``. */
static void keep(PyObject **fields[], PyObject *values[], int n)
{
    for (int i = 0; i < n; i++)
        Py_XSETREF(*fields[i], values ? Py_NewRef(values[i]) : NULL);
}

static int Scanner_init(Scanner *s, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"pending", "slow_line", "slow_header", NULL};
    PyObject *pending, *slow_line, *slow_header;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO:Scanner", kwlist, &PyDict_Type, &pending,
                                     &slow_line, &slow_header))
        return -1;
    PyObject **fields[] = {&s->pending, &s->slow_line, &s->slow_header};
    PyObject *values[] = {pending, slow_line, slow_header};
    keep(fields, values, 3);
    s->region_len = 0;
    s->pad = 0;
    return 0;
}

/* Both types hold Python callables (a bound method of their owner, say): they take part in the
 * garbage collector, or such a cycle would keep the owner, its TOC and all, alive for good. */
static int Scanner_traverse(Scanner *s, visitproc visit, void *arg)
{
    Py_VISIT(s->pending);
    Py_VISIT(s->slow_line);
    Py_VISIT(s->slow_header);
    return 0;
}

static int Scanner_clear(Scanner *s)
{
    PyObject **fields[] = {&s->pending, &s->slow_line, &s->slow_header};
    keep(fields, NULL, 3);
    return 0;
}

static void Scanner_dealloc(Scanner *s)
{
    PyObject_GC_UnTrack(s);
    Scanner_clear(s);
    PyMem_Free(s->region);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef Scanner_methods[] = {
    {"feed", (PyCFunction)Scanner_feed, METH_O,
     "feed(block) -> list of (type, name, size, payload): the entries of a block of whole JSON lines, "
     "each file entry's header checked against (and taken out of) the pending TOC entries."},
    {NULL, NULL, 0, NULL},
};

/* A type of this module: its C struct, constructor, destructor, methods and attributes. */
#define TYPE(Name, doc, getset)                                                                     \
    static PyTypeObject Name##Type = {                                                              \
        PyVarObject_HEAD_INIT(NULL, 0).tp_name = "containers_storage.archive.chunked._tocmatch." #Name, \
        .tp_basicsize = sizeof(Name), .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,          \
        .tp_doc = doc, .tp_traverse = (traverseproc)Name##_traverse, .tp_clear = (inquiry)Name##_clear, \
        .tp_new = PyType_GenericNew, .tp_init = (initproc)Name##_init,                              \
        .tp_dealloc = (destructor)Name##_dealloc, .tp_methods = Name##_methods, .tp_getset = getset, \
    }

TYPE(Scanner, "Scanner(pending, slow_line, slow_header): a tar-split's entries checked against its TOC.", NULL);

/* -- TOC entries ------------------------------------------------------------------------------- */

/* The JSON keys of a TOC entry (toc.py's _INT_FIELDS, _STR_FIELDS), and the attributes set. */
enum { K_TYPE, K_NAME, K_MODE, K_SIZE, K_UID, K_GID, K_DEVMAJOR, K_DEVMINOR, K_OFFSET, K_ENDOFFSET,
       K_CHUNKSIZE, K_CHUNKOFFSET, K_LINKNAME, K_DIGEST, K_CHUNKDIGEST, K_CHUNKTYPE, K_MODTIME,
       K_ACCESSTIME, K_CHANGETIME, K_XATTRS, K_COUNT };
static const char *const key_names[K_COUNT] = {
    "type", "name", "mode", "size", "uid", "gid", "devMajor", "devMinor", "offset", "endOffset",
    "chunkSize", "chunkOffset", "linkName", "digest", "chunkDigest", "chunkType", "modtime",
    "accesstime", "changetime", "xattrs",
};
static const char *const slot_names[K_COUNT] = {
    "type", "name", "mode", "size", "uid", "gid", "devmajor", "devminor", "offset", "end_offset",
    "chunk_size", "chunk_offset", "linkname", "digest", "chunk_digest", "chunk_type", "modtime",
    "accesstime", "changetime", "xattrs",
};
static PyObject *keys[K_COUNT], *slots[K_COUNT];
static PyObject *empty_str, *zero, *empty_digest;
static const char *const toc_types[] = {"reg", "chunk", "hardlink", "symlink", "dir", "char", "block", "fifo"};
static PyObject *type_strs[sizeof toc_types / sizeof *toc_types]; /* the same, interned */

static int is_str_without_nul(PyObject *v)
{
    if (!PyUnicode_CheckExact(v))
        return 0;
    Py_ssize_t at = PyUnicode_FindChar(v, 0, 0, PyUnicode_GET_LENGTH(v), 1);
    return at == -1 ? 1 : at == -2 ? -1 : 0;
}

/* ``sha256:`` and 64 lower-case hex digits (toc.py's _DIGEST). */
static int is_digest(PyObject *v)
{
    if (!PyUnicode_IS_ASCII(v) || PyUnicode_GET_LENGTH(v) != 71)
        return 0;
    const char *p = (const char *)PyUnicode_DATA(v);
    if (memcmp(p, "sha256:", 7) != 0)
        return 0;
    for (int i = 7; i < 71; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

/* Where TOCEntry keeps each attribute (its __slots__): set and read there directly, as the slot
 * descriptors do, rather than through 20 attribute lookups per entry.  1 found; 0 when the
 * type is not laid out so (then attributes are used); -1 on error. */
static int slot_offsets(PyTypeObject *tp, Py_ssize_t *off)
{
    for (int i = 0; i < K_COUNT; i++) {
        PyObject *d = PyObject_GetAttr((PyObject *)tp, slots[i]);
        if (!d)
            return -1;
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        if (ok)
            off[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!ok)
            return 0;
    }
    return 1;
}

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* obj (a new reference, or NULL), no longer followed by the cyclic garbage collector: what is
 * made here by the thousand -- entries of str, int and dicts of str, chunk tuples and lists,
 * index tuples and lists -- can be in no reference cycle, and collections walking them again
 * and again cost a pull ~20 ms for a TOC of 17,000 entries. */
static PyObject *untracked(PyObject *obj)
{
    if (obj && PyObject_IS_GC(obj))
        PyObject_GC_UnTrack(obj);
    return obj;
}

/* One raw TOC entry as toc._entry makes it, when it is in the shape Go's writers give (known
 * keys, values of the right types and ranges, digests that are digests): a new TOCEntry.
 * Py_None (new reference) when toc._entry must decide; NULL on error. */
static PyObject *build_entry(PyObject **vals, PyTypeObject *entry_type, const Py_ssize_t *off);

static PyObject *fast_entry(PyObject *obj, PyTypeObject *entry_type, const Py_ssize_t *off)
{
    if (!PyDict_CheckExact(obj))
        Py_RETURN_NONE;
    PyObject *vals[K_COUNT];
    Py_ssize_t found = 0;
    for (int i = 0; i < K_COUNT; i++) {
        vals[i] = PyDict_GetItemWithError(obj, keys[i]); /* borrowed */
        if (!vals[i] && PyErr_Occurred())
            return NULL;
        found += vals[i] != NULL;
    }
    /* Every key one of the known ones: as many keys as were found.  (Python decides about other
     * keys: other letter cases, or unknown ones it skips.) */
    if (found != PyDict_GET_SIZE(obj))
        Py_RETURN_NONE;
    return build_entry(vals, entry_type, off);
}

/* The entry of these values (borrowed; NULL for a key not given), as fast_entry describes. */
static PyObject *build_entry(PyObject **vals, PyTypeObject *entry_type, const Py_ssize_t *off)
{
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    PyObject *typ = vals[K_TYPE], *name = vals[K_NAME];
    if (!typ || !PyUnicode_CheckExact(typ) || !name)
        Py_RETURN_NONE;
    int known_type = 0;
    for (size_t i = 0; i < sizeof toc_types / sizeof *toc_types && !known_type; i++)
        known_type = typ == type_strs[i] || PyUnicode_CompareWithASCIIString(typ, toc_types[i]) == 0;
    int ok = is_str_without_nul(name);
    if (ok < 0)
        return NULL;
    if (!known_type || !ok || PyUnicode_GET_LENGTH(name) == 0)
        Py_RETURN_NONE;
    long long ints[K_CHUNKOFFSET + 1];
    for (int i = K_MODE; i <= K_CHUNKOFFSET; i++) {
        if (!vals[i]) {
            vals[i] = zero;
            ints[i] = 0;
            continue;
        }
        if (!PyLong_CheckExact(vals[i]))
            Py_RETURN_NONE;
        int overflow;
        ints[i] = PyLong_AsLongLongAndOverflow(vals[i], &overflow);
        if (ints[i] == -1 && PyErr_Occurred())
            return NULL;
        if (overflow || ints[i] < 0)
            Py_RETURN_NONE;
    }
    if (ints[K_UID] > 0xFFFFFFFFLL || ints[K_GID] > 0xFFFFFFFFLL)
        Py_RETURN_NONE;
    for (int i = K_LINKNAME; i <= K_CHANGETIME; i++) {
        if (!vals[i]) {
            vals[i] = i < K_MODTIME ? empty_str : Py_None;
            continue;
        }
        if (vals[i] == Py_None)
            continue;
        ok = is_str_without_nul(vals[i]);
        if (ok < 0)
            return NULL;
        if (!ok)
            Py_RETURN_NONE;
    }
    for (int i = K_DIGEST; i <= K_CHUNKDIGEST; i++) {
        int t = PyObject_IsTrue(vals[i]);
        if (t < 0)
            return NULL;
        if (t && !is_digest(vals[i]))
            Py_RETURN_NONE;
    }
    PyObject *ct = vals[K_CHUNKTYPE];
    if (ct != Py_None && PyUnicode_GET_LENGTH(ct) && PyUnicode_CompareWithASCIIString(ct, "zeros") != 0)
        Py_RETURN_NONE;
    PyObject *xattrs = vals[K_XATTRS];
    if (xattrs && xattrs != Py_None) {
        if (!PyDict_CheckExact(xattrs))
            Py_RETURN_NONE;
        pos = 0;
        while (PyDict_Next(xattrs, &pos, &k, &v))
            if (!PyUnicode_CheckExact(k) || !PyUnicode_CheckExact(v))
                Py_RETURN_NONE;
        xattrs = PyDict_Copy(xattrs);
    } else {
        xattrs = PyDict_New();
    }
    if (!xattrs)
        return NULL;
    vals[K_XATTRS] = xattrs;
    PyObject *digest = vals[K_DIGEST];
    int empty_reg = PyUnicode_CompareWithASCIIString(typ, "reg") == 0 && ints[K_SIZE] == 0 &&
                    (digest == Py_None || PyUnicode_GET_LENGTH(digest) == 0);
    if (empty_reg)
        vals[K_DIGEST] = empty_digest;
    PyObject *e = entry_type->tp_alloc(entry_type, 0);
    if (!e) {
        Py_DECREF(xattrs);
        return NULL;
    }
    for (int i = 0; i < K_COUNT; i++) {
        if (off) {
            Py_XSETREF(SLOT(e, off[i]), Py_NewRef(vals[i]));
        } else if (PyObject_SetAttr(e, slots[i], vals[i]) < 0) {
            Py_DECREF(e);
            Py_DECREF(xattrs);
            return NULL;
        }
    }
    Py_DECREF(xattrs);
    return untracked(e);
}

static PyObject *py_entries(PyObject *self, PyObject *args)
{
    PyObject *raw, *slow;
    PyTypeObject *entry_type;
    if (!PyArg_ParseTuple(args, "O!O!O:entries", &PyList_Type, &raw, &PyType_Type, &entry_type, &slow))
        return NULL;
    Py_ssize_t offsets[K_COUNT];
    int laid = slot_offsets(entry_type, offsets);
    if (laid < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(raw);
    PyObject *out = PyList_New(n);
    if (!out)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *obj = PyList_GET_ITEM(raw, i);
        Py_INCREF(obj);
        PyObject *e = fast_entry(obj, entry_type, laid ? offsets : NULL);
        if (e == Py_None) {
            Py_DECREF(e);
            e = PyObject_CallFunction(slow, "(On)", obj, i);
        }
        Py_DECREF(obj);
        if (!e) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, e);
        if (PyList_GET_SIZE(raw) != n) {
            PyErr_SetString(PyExc_RuntimeError, "the TOC's entry list changed while being read");
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* -- a TOC's JSON, in the shape Go's writers give -------------------------------------------------- */

/* A JSON parser for the TOC documents writers make: an object of "version", "entries" and
 * "tarSplitDigest", each entry an object of the known keys (toc.py's) with strings, integers
 * and an xattrs object of strings.  Anything else -- a backslash escape, null, a fraction or an
 * exponent, a key in another case or unknown, a key given twice, invalid UTF-8 -- and the
 * document goes to the json module and the Python checks, which decide (BAD below).  So this
 * never words a refusal, and accepts only what that path accepts. */

typedef struct {
    const unsigned char *p, *end;
    PyObject *last_time[3]; /* the last modtime, accesstime and changetime read, and their bytes */
    const unsigned char *last_raw[3];
    Py_ssize_t last_n[3];
} JSON;

static void json_done(JSON *j)
{
    for (int t = 0; t < 3; t++)
        Py_CLEAR(j->last_time[t]);
}

#define BAD ((PyObject *)&_Py_NoneStruct) /* (not a new reference: compared, never returned) */

static void json_ws(JSON *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int json_byte(JSON *j, unsigned char c)
{
    json_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return 1;
    }
    return 0;
}

/* A string's bytes (without escapes or control characters): 1 and its span, or 0. */
static int json_raw_string(JSON *j, const unsigned char **s, Py_ssize_t *n)
{
    if (!json_byte(j, '"'))
        return 0;
    const unsigned char *start = j->p, *quote = memchr(start, '"', (size_t)(j->end - start));
    if (!quote)
        return 0;
    /* No control character or backslash before it: eight bytes at a time (a byte below 0x20
     * borrows into its top bit when 0x20 is subtracted; a backslash is zero after the xor). */
    const unsigned char *q = start;
    uint64_t bad = 0;
    for (; quote - q >= 8; q += 8) {
        uint64_t w, x;
        memcpy(&w, q, 8);
        x = w ^ 0x5c5c5c5c5c5c5c5cULL;
        bad |= ((w - 0x2020202020202020ULL) & ~w & 0x8080808080808080ULL) | ((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL);
    }
    for (; q < quote; q++)
        bad |= (*q < 0x20) | (*q == '\\');
    if (bad)
        return 0;
    *s = start;
    *n = quote - start;
    j->p = quote + 1;
    return 1;
}

/* A new str, BAD, or NULL on error. */
static PyObject *json_string(JSON *j)
{
    const unsigned char *s;
    Py_ssize_t n;
    if (!json_raw_string(j, &s, &n))
        return BAD;
    PyObject *v = PyUnicode_DecodeUTF8((const char *)s, n, "strict");
    if (!v && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        return BAD;
    }
    return v;
}

/* A new int (up to 18 digits, no fraction or exponent), BAD, or NULL on error. */
static PyObject *json_int(JSON *j)
{
    json_ws(j);
    int neg = j->p < j->end && *j->p == '-';
    const unsigned char *start = j->p += neg;
    long long x = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9' && j->p - start < 18)
        x = x * 10 + (*j->p++ - '0');
    Py_ssize_t digits = j->p - start;
    if (!digits || (digits > 1 && *start == '0') ||
        (j->p < j->end && ((*j->p >= '0' && *j->p <= '9') || *j->p == '.' || *j->p == 'e' || *j->p == 'E')))
        return BAD;
    return PyLong_FromLongLong(neg ? -x : x);
}

static size_t key_lens[K_COUNT];

/* The key names' index (K_*) for an entry key, -1 for any other. */
static int entry_key(const unsigned char *s, Py_ssize_t n)
{
    for (int i = 0; i < K_COUNT; i++)
        if ((size_t)n == key_lens[i] && *s == (unsigned char)key_names[i][0] &&
            memcmp(s, key_names[i], (size_t)n) == 0)
            return i;
    return -1;
}

/* A string value of key k: the type names and a time repeated from the entry before are the
 * same objects (a TOC has thousands of each); a new reference, BAD, or NULL on error. */
static PyObject *json_value_string(JSON *j, int k)
{
    const unsigned char *s;
    Py_ssize_t n;
    json_ws(j);
    const unsigned char *at = j->p;
    if (!json_raw_string(j, &s, &n))
        return BAD;
    if (k == K_TYPE) {
        for (size_t i = 0; i < sizeof toc_types / sizeof *toc_types; i++)
            if ((size_t)n == strlen(toc_types[i]) && memcmp(s, toc_types[i], (size_t)n) == 0)
                return Py_NewRef(type_strs[i]);
    } else if (k >= K_MODTIME && k <= K_CHANGETIME) {
        int t = k - K_MODTIME;
        if (j->last_time[t] && j->last_n[t] == n && memcmp(j->last_raw[t], s, (size_t)n) == 0)
            return Py_NewRef(j->last_time[t]);
    }
    j->p = at;
    PyObject *v = json_string(j);
    if (v && v != BAD && k >= K_MODTIME && k <= K_CHANGETIME) {
        int t = k - K_MODTIME;
        Py_XSETREF(j->last_time[t], Py_NewRef(v));
        j->last_raw[t] = s;
        j->last_n[t] = n;
    }
    return v;
}

/* An object of strings: a new dict, BAD, or NULL on error. */
static PyObject *json_xattrs(JSON *j)
{
    if (!json_byte(j, '{'))
        return BAD;
    PyObject *d = PyDict_New(), *result = BAD;
    if (!d || json_byte(j, '}'))
        return d;
    do {
        PyObject *k = json_string(j);
        if (!k || k == BAD) {
            result = k;
            goto fail;
        }
        PyObject *v = json_byte(j, ':') ? json_string(j) : BAD;
        if (!v || v == BAD) {
            Py_DECREF(k);
            result = v;
            goto fail;
        }
        int there = PyDict_Contains(d, k);
        int r = there ? there : PyDict_SetItem(d, k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (r < 0) {
            result = NULL;
            goto fail;
        }
        if (there) /* given twice */
            goto fail;
    } while (json_byte(j, ','));
    if (json_byte(j, '}'))
        return d;
fail:
    Py_DECREF(d);
    return result;
}

/* One entry object, read into vals (new references; the caller releases them): 1, 0 (BAD) or
 * -1 on error. */
static int json_entry(JSON *j, PyObject **vals)
{
    if (!json_byte(j, '{'))
        return 0;
    if (json_byte(j, '}'))
        return 1;
    do {
        const unsigned char *s;
        Py_ssize_t n;
        if (!json_raw_string(j, &s, &n) || !json_byte(j, ':'))
            return 0;
        int k = entry_key(s, n);
        if (k < 0 || vals[k])
            return 0;
        PyObject *v = k == K_XATTRS ? json_xattrs(j)
                      : (k >= K_MODE && k <= K_CHUNKOFFSET) ? json_int(j)
                                                             : json_value_string(j, k);
        if (!v)
            return -1;
        if (v == BAD)
            return 0;
        vals[k] = v;
    } while (json_byte(j, ','));
    return json_byte(j, '}');
}

static void release(PyObject **vals)
{
    for (int i = 0; i < K_COUNT; i++)
        Py_CLEAR(vals[i]);
}

/* Each entry of the "entries" array handed to take(vals, arg): 1 taken, 0 BAD, -1 error. */
typedef int (*entry_taker)(PyObject **vals, void *arg);

/* The whole document: 1 with *version and *ts_digest (new references, NULL when not given) and
 * *seen_entries set, 0 BAD, -1 error. */
static int json_toc(JSON *j, entry_taker take, void *arg, PyObject **version, PyObject **ts_digest,
                    int *seen_entries)
{
    int r = 0;
    *seen_entries = 0;
    *version = *ts_digest = NULL;
    if (!json_byte(j, '{'))
        return 0;
    if (!json_byte(j, '}')) {
        do {
            const unsigned char *s;
            Py_ssize_t n;
            if (!json_raw_string(j, &s, &n) || !json_byte(j, ':'))
                goto bad;
            PyObject **field = NULL, *v;
            if (n == 7 && memcmp(s, "version", 7) == 0 && !*version) {
                field = version;
                v = json_int(j);
            } else if (n == 14 && memcmp(s, "tarSplitDigest", 14) == 0 && !*ts_digest) {
                field = ts_digest;
                v = json_string(j);
            } else if (n == 7 && memcmp(s, "entries", 7) == 0 && !*seen_entries) {
                *seen_entries = 1;
                if (!json_byte(j, '['))
                    goto bad;
                if (json_byte(j, ']'))
                    continue;
                do {
                    PyObject *vals[K_COUNT] = {NULL};
                    r = json_entry(j, vals);
                    if (r > 0)
                        r = take(vals, arg);
                    release(vals);
                    if (r <= 0)
                        goto out;
                } while (json_byte(j, ','));
                if (!json_byte(j, ']'))
                    goto bad;
                continue;
            } else {
                goto bad;
            }
            if (!v) {
                r = -1;
                goto out;
            }
            if (v == BAD)
                goto bad;
            *field = v;
        } while (json_byte(j, ','));
        if (!json_byte(j, '}'))
            goto bad;
    }
    json_ws(j);
    if (j->p != j->end)
        goto bad;
    return 1;
bad:
    r = 0;
out:
    Py_CLEAR(*version);
    Py_CLEAR(*ts_digest);
    return r;
}

typedef struct {
    PyObject *list;
    PyTypeObject *entry_type;
    const Py_ssize_t *off;
} EntryList;

static int take_toc_entry(PyObject **owned, void *arg)
{
    EntryList *l = arg;
    PyObject *vals[K_COUNT];
    memcpy(vals, owned, sizeof vals); /* build_entry fills in defaults: borrowed, owned stays */
    PyObject *e = build_entry(vals, l->entry_type, l->off);
    if (!e)
        return -1;
    if (e == Py_None) {
        Py_DECREF(e);
        return 0;
    }
    int r = PyList_Append(l->list, e);
    Py_DECREF(e);
    return r < 0 ? -1 : 1;
}

static PyObject *py_toc_json(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    PyTypeObject *entry_type;
    if (!PyArg_ParseTuple(args, "y*O!:toc_json", &buf, &PyType_Type, &entry_type))
        return NULL;
    Py_ssize_t offsets[K_COUNT];
    int laid = slot_offsets(entry_type, offsets);
    PyObject *out = NULL, *version, *ts_digest;
    EntryList l = {PyList_New(0), entry_type, laid > 0 ? offsets : NULL};
    if (laid < 0 || !l.list)
        goto done;
    JSON j = {buf.buf, (const unsigned char *)buf.buf + buf.len, {NULL}, {NULL}, {0}};
    int seen;
    int r = json_toc(&j, take_toc_entry, &l, &version, &ts_digest, &seen);
    json_done(&j);
    if (r > 0) {
        if (!version)
            version = PyLong_FromLong(0);
        if (!ts_digest)
            ts_digest = Py_NewRef(empty_str);
        if (version)
            out = PyTuple_Pack(3, version, l.list, ts_digest);
        Py_XDECREF(version);
        Py_DECREF(ts_digest);
    } else if (r == 0) {
        out = Py_NewRef(Py_None);
    }
done:
    Py_XDECREF(l.list);
    PyBuffer_Release(&buf);
    return out;
}

/* -- another layer's TOC, indexed ----------------------------------------------------------------- */

/* 1 when v is an int (not a bool) above zero, 0 when it is not, -1 on error. */
static int positive_int(PyObject *v)
{
    if (!v || !PyLong_CheckExact(v))
        return 0;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    return overflow > 0 || (!overflow && x > 0);
}

/* index[key].append(item), the list made when missing; steals item.  0 or -1. */
static int append_to(PyObject *index, PyObject *key, PyObject *item)
{
    if (!item)
        return -1;
    PyObject *list = PyDict_GetItemWithError(index, key); /* borrowed */
    int r;
    if (list) {
        r = PyList_Append(list, item);
    } else if (PyErr_Occurred()) {
        r = -1;
    } else {
        list = untracked(PyList_New(1));
        if (!list) {
            Py_DECREF(item);
            return -1;
        }
        PyList_SET_ITEM(list, 0, item); /* steals */
        r = PyDict_SetItem(index, key, list);
        Py_DECREF(list);
        return r;
    }
    Py_DECREF(item);
    return r;
}

/* One entry's values (borrowed; NULL when not given) added to the index as
 * reuse.LayerIndex.add_layer adds them without hard-link keys: a regular file with a digest and a
 * size under files[digest], a chunk digest under chunks[digest].  0 or -1. */
static int index_vals(PyObject **vals, PyObject *root, PyObject *files, PyObject *chunks)
{
    PyObject *name = vals[K_NAME], *typ = vals[K_TYPE], *digest = vals[K_DIGEST], *size = vals[K_SIZE];
    int pos;
    if (!name || !PyUnicode_Check(name))
        return 0;
    if (typ && digest && size && PyUnicode_Check(typ) && PyUnicode_CompareWithASCIIString(typ, "reg") == 0 &&
        PyUnicode_Check(digest) && (pos = positive_int(size)) != 0) {
        if (pos < 0 || append_to(files, digest, untracked(PyTuple_Pack(3, root, name, size))) < 0)
            return -1;
    }
    PyObject *cdigest = vals[K_CHUNKDIGEST], *csize = vals[K_CHUNKSIZE], *coff = vals[K_CHUNKOFFSET];
    if (!coff)
        coff = zero;
    if (cdigest && csize && PyUnicode_Check(cdigest) && PyLong_CheckExact(coff) && (pos = positive_int(csize)) != 0) {
        if (pos < 0 || append_to(chunks, cdigest, untracked(PyTuple_Pack(4, root, name, coff, csize))) < 0)
            return -1;
    }
    return 0;
}

static PyObject *py_index(PyObject *self, PyObject *args)
{
    PyObject *raw, *root, *files, *chunks;
    if (!PyArg_ParseTuple(args, "O!UO!O!:index", &PyList_Type, &raw, &root, &PyDict_Type, &files, &PyDict_Type,
                          &chunks))
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(raw); i++) {
        PyObject *e = PyList_GET_ITEM(raw, i), *vals[K_COUNT];
        if (!PyDict_Check(e))
            continue;
        Py_INCREF(e);
        int r = 0;
        for (int k = 0; k < K_COUNT && r == 0; k++)
            if (!(vals[k] = PyDict_GetItemWithError(e, keys[k])) && PyErr_Occurred())
                r = -1;
        if (r == 0)
            r = index_vals(vals, root, files, chunks);
        Py_DECREF(e);
        if (r < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

typedef struct {
    PyObject *root, *files, *chunks;
} IndexTarget;

static int take_index(PyObject **vals, void *arg)
{
    IndexTarget *t = arg;
    return index_vals(vals, t->root, t->files, t->chunks) < 0 ? -1 : 1;
}

/* into[key] += lists[key] for every key; 0 or -1. */
static int merge_lists(PyObject *into, PyObject *lists)
{
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(lists, &pos, &k, &v)) {
        PyObject *there = PyDict_GetItemWithError(into, k);
        if (there) {
            Py_ssize_t n = PyList_GET_SIZE(there);
            if (PyList_SetSlice(there, n, n, v) < 0)
                return -1;
        } else if (PyErr_Occurred() || PyDict_SetItem(into, k, v) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *py_index_json(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    PyObject *root, *files, *chunks, *out = NULL, *version, *ts_digest;
    if (!PyArg_ParseTuple(args, "y*UO!O!:index_json", &buf, &root, &PyDict_Type, &files, &PyDict_Type, &chunks))
        return NULL;
    /* Into new dicts, merged once the whole document proved readable here. */
    IndexTarget t = {root, PyDict_New(), PyDict_New()};
    if (t.files && t.chunks) {
        JSON j = {buf.buf, (const unsigned char *)buf.buf + buf.len, {NULL}, {NULL}, {0}};
        int seen;
        int r = json_toc(&j, take_index, &t, &version, &ts_digest, &seen);
        json_done(&j);
        if (r > 0) {
            Py_XDECREF(version);
            Py_XDECREF(ts_digest);
            if (merge_lists(files, t.files) == 0 && merge_lists(chunks, t.chunks) == 0)
                out = PyBool_FromLong(seen);
        } else if (r == 0) {
            out = Py_NewRef(Py_None);
        }
    }
    Py_XDECREF(t.files);
    Py_XDECREF(t.chunks);
    PyBuffer_Release(&buf);
    return out;
}

/* -- files and chunks ---------------------------------------------------------------------------- */

typedef struct {
    PyObject *e; /* borrowed, as all here: the entry list holds them */
    PyObject *type, *name, *digest, *chunk_digest, *chunk_type;
    long long size, offset, end_offset, chunk_size, chunk_offset;
} Ent;

/* 1 read; 0 when not in the shape _entries makes (Python decides); -1 on error. */
static int ent_read(PyObject *e, PyTypeObject *tp, const Py_ssize_t *off, Ent *x)
{
    if (!Py_IS_TYPE(e, tp))
        return 0;
    x->e = e;
    x->type = SLOT(e, off[K_TYPE]);
    x->name = SLOT(e, off[K_NAME]);
    x->digest = SLOT(e, off[K_DIGEST]);
    x->chunk_digest = SLOT(e, off[K_CHUNKDIGEST]);
    x->chunk_type = SLOT(e, off[K_CHUNKTYPE]);
    if (!x->type || !x->name || !x->digest || !x->chunk_digest || !x->chunk_type ||
        !PyUnicode_CheckExact(x->type) || !PyUnicode_CheckExact(x->name))
        return 0;
    static const int ints[] = {K_SIZE, K_OFFSET, K_ENDOFFSET, K_CHUNKSIZE, K_CHUNKOFFSET};
    long long *out[] = {&x->size, &x->offset, &x->end_offset, &x->chunk_size, &x->chunk_offset};
    for (int i = 0; i < 5; i++) {
        PyObject *v = SLOT(e, off[ints[i]]);
        if (!v || !PyLong_CheckExact(v))
            return 0;
        int overflow = 0;
        *out[i] = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (*out[i] == -1 && PyErr_Occurred())
            return -1;
        if (overflow || *out[i] < 0)
            return 0;
    }
    return 1;
}

static int is_type(PyObject *type, const char *t)
{
    return PyUnicode_CompareWithASCIIString(type, t) == 0;
}

/* A file's chunks as toc._file_chunks makes them; NULL with no error set when any check fails. */
static PyObject *file_chunks(Ent *g, Py_ssize_t n, long long file_end, long long data_end)
{
    PyObject *chunks = PyList_New(n);
    if (!chunks)
        return NULL;
    long long remaining = g[0].size, prev_end = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Ent *c = &g[i];
        long long start = c->offset;
        long long end = i + 1 < n ? g[i + 1].offset : file_end;
        long long size = c->chunk_size > 0 ? c->chunk_size : remaining;
        if ((n > 1 && c->chunk_size <= 0) || c->chunk_offset != g[0].size - remaining || size <= 0 ||
            size > remaining || !(0 < start && start < end && end <= data_end) || start < prev_end)
            goto refuse;
        prev_end = end;
        remaining -= size;
        PyObject *t = untracked(Py_BuildValue("(LLLOO)", start, end, size, c->chunk_digest, c->chunk_type));
        if (!t) {
            Py_DECREF(chunks);
            return NULL;
        }
        PyList_SET_ITEM(chunks, i, t);
    }
    if (remaining)
        goto refuse;
    return untracked(chunks);
refuse:
    Py_DECREF(chunks);
    return NULL;
}

/* toc.parse_toc's grouping of entries into files and chunks, for a TOC in which every check
 * passes: (entries, files); None when any check fails or anything is unusual (then the Python
 * code runs and words the error). */
static PyObject *py_layout(PyObject *self, PyObject *args)
{
    PyObject *parsed, *file_type;
    PyTypeObject *entry_type;
    long long data_end;
    if (!PyArg_ParseTuple(args, "O!LO!O:layout", &PyList_Type, &parsed, &data_end, &PyType_Type, &entry_type,
                          &file_type))
        return NULL;
    Py_ssize_t off[K_COUNT];
    int laid = slot_offsets(entry_type, off);
    if (laid <= 0)
        return laid < 0 ? NULL : Py_NewRef(Py_None);
    Py_ssize_t n = PyList_GET_SIZE(parsed);
    Ent *ents = PyMem_Calloc(n ? (size_t)n : 1, sizeof *ents);
    Py_ssize_t *group_start = PyMem_Calloc(n + 1 ? (size_t)n + 1 : 1, sizeof *group_start);
    PyObject *names = PySet_New(NULL), *entries = PyList_New(0), *files = PyList_New(0);
    PyObject *result = NULL;
    Py_ssize_t groups = 0;
    int unusual = 0;
    if (!ents || !group_start) {
        PyErr_NoMemory();
        goto out;
    }
    if (!names || !entries || !files)
        goto out;
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = ent_read(PyList_GET_ITEM(parsed, i), entry_type, off, &ents[i]);
        if (r < 0)
            goto out;
        if (r == 0) {
            unusual = 1;
            goto out;
        }
        Ent *e = &ents[i];
        if (is_type(e->type, "chunk")) {
            Ent *head = groups ? &ents[group_start[groups - 1]] : NULL;
            if (!head || !is_type(head->type, "reg") || PyUnicode_Compare(head->name, e->name) != 0) {
                if (PyErr_Occurred())
                    goto out;
                unusual = 1;
                goto out;
            }
            continue;
        }
        int dup = PySet_Contains(names, e->name);
        if (dup < 0 || (!dup && PySet_Add(names, e->name) < 0))
            goto out;
        if (dup) {
            unusual = 1;
            goto out;
        }
        group_start[groups++] = i;
    }
    group_start[groups] = n;
    long long *ends = PyMem_Calloc(groups ? (size_t)groups : 1, sizeof *ends);
    if (!ends) {
        PyErr_NoMemory();
        goto out;
    }
    long long last = data_end;
    for (Py_ssize_t g = groups - 1; g >= 0; g--) {
        Ent *head = &ents[group_start[g]];
        ends[g] = head->end_offset ? head->end_offset : last;
        if (head->offset)
            last = head->offset;
    }
    long long last_end = 0;
    for (Py_ssize_t g = 0; g < groups; g++) {
        Ent *head = &ents[group_start[g]];
        Py_ssize_t count = group_start[g + 1] - group_start[g];
        if (PyList_Append(entries, head->e) < 0)
            goto out_ends;
        if (!is_type(head->type, "reg"))
            continue;
        if (head->size == 0) {
            if (count > 1) {
                unusual = 1;
                goto out_ends;
            }
            continue;
        }
        int has_digest = PyObject_IsTrue(head->digest);
        if (has_digest < 0)
            goto out_ends;
        if (!has_digest) {
            unusual = 1;
            goto out_ends;
        }
        PyObject *chunks = file_chunks(head, count, ends[g], data_end);
        if (!chunks) {
            if (!PyErr_Occurred())
                unusual = 1;
            goto out_ends;
        }
        PyObject *first = PyList_GET_ITEM(chunks, 0), *lastc = PyList_GET_ITEM(chunks, count - 1);
        long long start = PyLong_AsLongLong(PyTuple_GET_ITEM(first, 0));
        if (start < last_end) {
            Py_DECREF(chunks);
            unusual = 1;
            goto out_ends;
        }
        last_end = PyLong_AsLongLong(PyTuple_GET_ITEM(lastc, 1));
        PyObject *f = untracked(PyObject_CallFunction(file_type, "(ON)", head->e, chunks));
        if (!f || PyList_Append(files, f) < 0) {
            Py_XDECREF(f);
            goto out_ends;
        }
        Py_DECREF(f);
    }
    result = PyTuple_Pack(2, entries, files);
out_ends:
    PyMem_Free(ends);
out:
    if (unusual && !result && !PyErr_Occurred())
        result = Py_NewRef(Py_None);
    PyMem_Free(ents);
    PyMem_Free(group_start);
    Py_XDECREF(names);
    Py_XDECREF(entries);
    Py_XDECREF(files);
    return result;
}

/* -- the layer's bytes against the tar-split ------------------------------------------------------ */

/* differ._Verifier's walk in C: every byte that is not file content must be the tar-split's,
 * each file must come where the TOC has it, and hash to its TOC digest and tar-split CRC-64.
 * Failures go to ``fail(what, k, got)``, which raises them in the Python code's words. */
typedef struct {
    PyObject_HEAD
    PyObject *entries; /* iterator of (type, name, size, payload), headers already checked */
    PyObject *files;   /* list of toc.File */
    PyObject *new_hash, *crc64, *fail;
    PyObject *hash;    /* the current file's */
    PyObject *segment; /* bytes */
    PyObject *crc_want; /* bytes or None */
    Py_ssize_t seg_pos, k;
    long long left, total;
    unsigned long long crc;
    int in_file;
} Walker;

static PyObject *entry_attr; /* "entry" */

static int walker_fail(Walker *w, const char *what, PyObject *got)
{
    PyObject *r = PyObject_CallFunction(w->fail, "(snO)", what, w->k, got ? got : Py_None);
    Py_XDECREF(r);
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "internal error: a failure was not raised");
    return -1;
}

/* On to the next tar-split entry with bytes. */
static int walker_next(Walker *w)
{
    for (;;) {
        PyObject *t = PyIter_Next(w->entries);
        if (!t) {
            if (PyErr_Occurred())
                return -1;
            return walker_fail(w, "more", NULL);
        }
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 4) {
            Py_DECREF(t);
            PyErr_SetString(PyExc_TypeError, "tar-split entries are (type, name, size, payload) tuples");
            return -1;
        }
        long typ = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
        long long size = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 2));
        if ((typ == -1 || size == -1) && PyErr_Occurred()) {
            Py_DECREF(t);
            return -1;
        }
        PyObject *payload = PyTuple_GET_ITEM(t, 3);
        if (typ == 2) {
            if (PyBytes_Check(payload) && PyBytes_GET_SIZE(payload)) {
                Py_XSETREF(w->segment, Py_NewRef(payload));
                w->seg_pos = 0;
                w->left = PyBytes_GET_SIZE(payload);
                w->total += w->left;
                w->in_file = 0;
                Py_DECREF(t);
                return 0;
            }
            Py_DECREF(t);
            continue;
        }
        w->total += size;
        if (!size) {
            Py_DECREF(t);
            continue;
        }
        /* The TOC's next file must be this one. */
        int same = 0;
        if (w->k < PyList_GET_SIZE(w->files)) {
            PyObject *e = PyObject_GetAttr(PyList_GET_ITEM(w->files, w->k), entry_attr);
            PyObject *esize = e ? PyObject_GetAttr(e, attrs[A_SIZE]) : NULL;
            PyObject *ename = esize ? PyObject_GetAttr(e, slots[K_NAME]) : NULL;
            PyObject *name = PyTuple_GET_ITEM(t, 1);
            PyObject *text = ename && PyBytes_Check(name)
                                 ? PyUnicode_DecodeUTF8(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), "replace")
                                 : NULL;
            if (text) {
                int overflow;
                long long n = PyLong_AsLongLongAndOverflow(esize, &overflow);
                same = !overflow && n == size && PyUnicode_Compare(ename, text) == 0;
            }
            Py_XDECREF(e);
            Py_XDECREF(esize);
            Py_XDECREF(ename);
            Py_XDECREF(text);
            if (PyErr_Occurred()) {
                Py_DECREF(t);
                return -1;
            }
        }
        if (!same) {
            Py_DECREF(t);
            return walker_fail(w, "order", NULL);
        }
        Py_XSETREF(w->hash, PyObject_CallNoArgs(w->new_hash));
        if (!w->hash) {
            Py_DECREF(t);
            return -1;
        }
        w->crc = 0;
        Py_XSETREF(w->crc_want, Py_NewRef(payload));
        w->left = size;
        w->in_file = 1;
        Py_DECREF(t);
        return 0;
    }
}

static int walker_file_done(Walker *w)
{
    PyObject *hex = PyObject_CallMethod(w->hash, "hexdigest", NULL);
    if (!hex)
        return -1;
    PyObject *got = PyUnicode_FromFormat("sha256:%U", hex);
    Py_DECREF(hex);
    if (!got)
        return -1;
    PyObject *e = PyObject_GetAttr(PyList_GET_ITEM(w->files, w->k), entry_attr);
    PyObject *want = e ? PyObject_GetAttr(e, slots[K_DIGEST]) : NULL;
    Py_XDECREF(e);
    if (!want) {
        Py_DECREF(got);
        return -1;
    }
    int same = PyUnicode_Check(want) && PyUnicode_Compare(got, want) == 0;
    Py_DECREF(want);
    if (PyErr_Occurred()) {
        Py_DECREF(got);
        return -1;
    }
    if (!same) {
        int r = walker_fail(w, "checksum", got);
        Py_DECREF(got);
        return r;
    }
    Py_DECREF(got);
    if (w->crc_want != Py_None) {
        unsigned char be[8];
        for (int i = 0; i < 8; i++)
            be[i] = (unsigned char)(w->crc >> (56 - 8 * i));
        if (!PyBytes_Check(w->crc_want) || PyBytes_GET_SIZE(w->crc_want) != 8 ||
            memcmp(PyBytes_AS_STRING(w->crc_want), be, 8) != 0)
            return walker_fail(w, "crc", NULL);
    }
    w->k++;
    w->in_file = 0;
    return 0;
}

static PyObject *Walker_take(Walker *w, PyObject *arg)
{
    Py_buffer view;
    if (method_input(w->entries, "Walker", arg, &view) < 0)
        return NULL;
    const char *p = view.buf;
    Py_ssize_t i = 0, n = view.len;
    while (i < n) {
        if (!w->left && walker_next(w) < 0)
            goto fail;
        Py_ssize_t take = n - i < w->left ? n - i : (Py_ssize_t)w->left;
        if (w->in_file) {
            PyObject *part = PyMemoryView_FromMemory((char *)p + i, take, PyBUF_READ);
            if (!part)
                goto fail;
            PyObject *r = PyObject_CallMethodOneArg(w->hash, update_attr, part);
            Py_XDECREF(r);
            PyObject *c = r ? PyLong_FromUnsignedLongLong(w->crc) : NULL;
            PyObject *crc = c ? PyObject_CallFunctionObjArgs(w->crc64, part, c, NULL) : NULL;
            Py_XDECREF(c);
            Py_DECREF(part);
            if (!crc)
                goto fail;
            w->crc = PyLong_AsUnsignedLongLong(crc);
            Py_DECREF(crc);
            if (w->crc == (unsigned long long)-1 && PyErr_Occurred())
                goto fail;
        } else {
            if (memcmp(p + i, PyBytes_AS_STRING(w->segment) + w->seg_pos, (size_t)take) != 0) {
                walker_fail(w, "headers", NULL);
                goto fail;
            }
            w->seg_pos += take;
        }
        w->left -= take;
        i += take;
        if (!w->left && w->in_file && walker_file_done(w) < 0)
            goto fail;
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&view);
    return NULL;
}

static int Walker_init(Walker *w, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"entries", "files", "new_hash", "crc64", "fail", NULL};
    PyObject *entries, *files, *new_hash, *crc64, *fail;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!OOO:Walker", kwlist, &entries, &PyList_Type, &files,
                                     &new_hash, &crc64, &fail))
        return -1;
    Py_XSETREF(w->entries, PyObject_GetIter(entries));
    if (!w->entries)
        return -1;
    PyObject **fields[] = {&w->files, &w->new_hash, &w->crc64, &w->fail};
    PyObject *values[] = {files, new_hash, crc64, fail};
    keep(fields, values, 4);
    return 0;
}

static int Walker_traverse(Walker *w, visitproc visit, void *arg)
{
    Py_VISIT(w->entries);
    Py_VISIT(w->files);
    Py_VISIT(w->new_hash);
    Py_VISIT(w->crc64);
    Py_VISIT(w->fail);
    Py_VISIT(w->hash);
    Py_VISIT(w->segment);
    Py_VISIT(w->crc_want);
    return 0;
}

static int Walker_clear(Walker *w)
{
    PyObject **fields[] = {&w->entries, &w->files, &w->new_hash, &w->crc64, &w->fail, &w->hash, &w->segment,
                           &w->crc_want};
    keep(fields, NULL, 8);
    return 0;
}

static void Walker_dealloc(Walker *w)
{
    PyObject_GC_UnTrack(w);
    Walker_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *Walker_state(Walker *w, void *closure)
{
    return Py_BuildValue("(LnL)", w->left, w->k, w->total);
}

static PyMethodDef Walker_methods[] = {
    {"take", (PyCFunction)Walker_take, METH_O, "take(piece): the next bytes of the layer's tarball."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Walker_getset[] = {
    {"state", (getter)Walker_state, NULL, "(bytes of the current entry still to come, files done, tar size)",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

TYPE(Walker, "Walker(entries, files, new_hash, crc64, fail): a layer's tarball held to its tar-split and TOC.",
     Walker_getset);

static PyMethodDef module_methods[] = {
    {"entries", py_entries, METH_VARARGS,
     "entries(raw, TOCEntry, slow) -> list: the TOC's raw entries (dicts) as TOCEntry "
     "objects, each one not in the common shape made by slow(raw_entry, index)."},
    {"toc_json", py_toc_json, METH_VARARGS,
     "toc_json(data, TOCEntry) -> (version, entries, tarSplitDigest) | None: a TOC's JSON in the shape "
     "writers give, its entries made as entries() makes them; None when the json module and the Python "
     "checks must decide."},
    {"index_json", py_index_json, METH_VARARGS,
     "index_json(data, root, files, chunks) -> bool | None: index() of a TOC's JSON in the shape writers "
     "give (whether it has an entries list); None, with nothing added, when the json module must read it."},
    {"index", py_index, METH_VARARGS,
     "index(raw, root, files, chunks): another layer's raw TOC entries added to a reuse index, as "
     "LayerIndex.add_layer adds them without hard-link keys."},
    {"layout", py_layout, METH_VARARGS,
     "layout(entries, data_end, TOCEntry, File) -> (entries, files) | None: parse_toc's files and chunks when every "
     "check passes; None when the Python code must decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tocmatch", "A zstd:chunked layer's tar-split held to its TOC, in C.", -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__tocmatch(void)
{
    b64_init();
    for (int i = 0; i < A_COUNT; i++)
        if (!attrs[i] && !(attrs[i] = PyUnicode_InternFromString(attr_names[i])))
            return NULL;
    for (size_t i = 0; i < sizeof toc_types / sizeof *toc_types; i++)
        if (!type_strs[i] && !(type_strs[i] = PyUnicode_InternFromString(toc_types[i])))
            return NULL;
    for (int i = 0; i < K_COUNT; i++) {
        key_lens[i] = strlen(key_names[i]);
        if (!keys[i] && !(keys[i] = PyUnicode_InternFromString(key_names[i])))
            return NULL;
        if (!slots[i] && !(slots[i] = PyUnicode_InternFromString(slot_names[i])))
            return NULL;
    }
    if (!empty_str && !(empty_str = PyUnicode_FromString("")))
        return NULL;
    if (!zero && !(zero = PyLong_FromLong(0)))
        return NULL;
    if (!empty_digest &&
        !(empty_digest = PyUnicode_InternFromString(
              "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")))
        return NULL;
    if (!update_attr && !(update_attr = PyUnicode_InternFromString("update")))
        return NULL;
    if (!entry_attr && !(entry_attr = PyUnicode_InternFromString("entry")))
        return NULL;

    if (PyType_Ready(&ScannerType) < 0 || PyType_Ready(&WalkerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Scanner", (PyObject *)&ScannerType) < 0 ||
        PyModule_AddObjectRef(m, "Walker", (PyObject *)&WalkerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

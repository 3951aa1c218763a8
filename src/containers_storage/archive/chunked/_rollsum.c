/* Where Go's zstd:chunked compressor cuts a file's content into chunks.
 *
 * Go (pkg/chunked/compressor) rolls a bup-style checksum over every content byte and cuts after a
 * byte where its low 16 bits of s2 are all ones; a run of at least 1024 zero bytes becomes a
 * chunk of its own ("zeros", a hole), cut before and after, its bytes rolled without looking for
 * cuts.  Zero runs that turn out shorter are ordinary content.  This is the same walk in C: the
 * per-byte loop is what the writer would otherwise spend its time on.
 *
 * Chunker.feed(data) -> (resolved, events): every content byte up to the content offset
 * `resolved` is decided; bytes after it are zeros whose fate the next non-zero byte (or finish())
 * decides.  events is a list of (offset, kind): kind 0 = cut after this content offset, 1 = a
 * hole starts at this offset (cut before it), 2 = the hole ends here (cut).  Offsets count
 * content bytes from the start of the file.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define WINDOW 64
#define CHAR_OFFSET 31
#define SPLIT_MASK 0xFFFFu /* Go's RollsumBits = 16 */
#define HOLE_THRESHOLD 1024

typedef struct {
    PyObject_HEAD
    uint32_t s1, s2;
    uint8_t window[WINDOW];
    unsigned wofs;
    unsigned long long out;   /* content bytes decided so far */
    unsigned long long zeros; /* pending zero run, undecided */
} Chunker;

static inline void roll(Chunker *c, uint8_t ch) {
    uint32_t drop = c->window[c->wofs];
    c->s1 = c->s1 + ch - drop;
    c->s2 += c->s1 - (uint32_t)WINDOW * (drop + CHAR_OFFSET);
    c->window[c->wofs] = ch;
    c->wofs = (c->wofs + 1) & (WINDOW - 1);
}

static int add_event(PyObject *events, unsigned long long offset, int kind) {
    PyObject *t = Py_BuildValue("(Ki)", offset, kind);
    if (t == NULL)
        return -1;
    int r = PyList_Append(events, t);
    Py_DECREF(t);
    return r;
}

/* Decide the pending zero run: a hole, or content bytes rolled one by one. */
static int resolve_zeros(Chunker *c, PyObject *events) {
    unsigned long long n = c->zeros;
    if (n == 0)
        return 0;
    c->zeros = 0;
    if (n >= HOLE_THRESHOLD) {
        if (add_event(events, c->out, 1) < 0)
            return -1;
        /* After WINDOW zero rolls the window holds only zeros and s1, s2 stop changing. */
        unsigned long long rolls = n < WINDOW ? n : WINDOW;
        for (unsigned long long i = 0; i < rolls; i++)
            roll(c, 0);
        c->wofs = (unsigned)((c->wofs + (n - rolls)) & (WINDOW - 1));
        c->out += n;
        return add_event(events, c->out, 2);
    }
    for (unsigned long long i = 0; i < n; i++) {
        roll(c, 0);
        c->out++;
        if ((c->s2 & SPLIT_MASK) == SPLIT_MASK && add_event(events, c->out, 0) < 0)
            return -1;
    }
    return 0;
}

static int Chunker_init(Chunker *c, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist))
        return -1;
    c->s1 = WINDOW * CHAR_OFFSET;
    c->s2 = WINDOW * (WINDOW - 1) * CHAR_OFFSET;
    memset(c->window, 0, sizeof(c->window));
    c->wofs = 0;
    c->out = 0;
    c->zeros = 0;
    return 0;
}

static PyObject *Chunker_feed(Chunker *c, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *events = PyList_New(0);
    if (events == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const uint8_t *p = view.buf;
    Py_ssize_t n = view.len;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t b = p[i];
        if (b == 0) {
            c->zeros++;
            continue;
        }
        if (c->zeros && resolve_zeros(c, events) < 0)
            goto fail;
        roll(c, b);
        c->out++;
        if ((c->s2 & SPLIT_MASK) == SPLIT_MASK && add_event(events, c->out, 0) < 0)
            goto fail;
    }
    PyBuffer_Release(&view);
    PyObject *r = Py_BuildValue("(KN)", c->out, events);
    return r;
fail:
    PyBuffer_Release(&view);
    Py_DECREF(events);
    return NULL;
}

static PyObject *Chunker_finish(Chunker *c, PyObject *Py_UNUSED(ignored)) {
    PyObject *events = PyList_New(0);
    if (events == NULL)
        return NULL;
    if (resolve_zeros(c, events) < 0) {
        Py_DECREF(events);
        return NULL;
    }
    return Py_BuildValue("(KN)", c->out, events);
}

static PyMethodDef Chunker_methods[] = {
    {"feed", (PyCFunction)Chunker_feed, METH_O,
     "feed(data) -> (resolved, events): cut points decided by the content so far."},
    {"finish", (PyCFunction)Chunker_finish, METH_NOARGS,
     "finish() -> (resolved, events): the end of the content decides the pending zeros."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ChunkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "containers_storage.archive.chunked._rollsum.Chunker",
    .tp_doc = "Go's zstd:chunked cut points (rollsum and zero holes) over one file's content.",
    .tp_basicsize = sizeof(Chunker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Chunker_init,
    .tp_methods = Chunker_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rollsum", "Go's zstd:chunked chunking in C.", -1, NULL,
};

PyMODINIT_FUNC PyInit__rollsum(void) {
    if (PyType_Ready(&ChunkerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ChunkerType);
    if (PyModule_AddObject(m, "Chunker", (PyObject *)&ChunkerType) < 0) {
        Py_DECREF(&ChunkerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

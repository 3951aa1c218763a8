/*
 * unshare(2) for userns.py, which runs on every CLI call of a rootless user: Python 3.11's os
 * module has no unshare (3.12 adds it), and loading ctypes and libffi for one system call costs
 * more than the call.  Optional: without a compiler userns.py falls back to ctypes.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <sched.h>
#include <errno.h>

static PyObject *
userns_unshare(PyObject *self, PyObject *arg)
{
    int flags = _PyLong_AsInt(arg);
    if (flags == -1 && PyErr_Occurred())
        return NULL;
    if (unshare(flags) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"unshare", userns_unshare, METH_O,
     "unshare(flags): the unshare(2) system call; raises OSError with errno on failure."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_userns", "unshare(2) without ctypes", -1, methods,
};

PyMODINIT_FUNC
PyInit__userns(void)
{
    return PyModule_Create(&module);
}

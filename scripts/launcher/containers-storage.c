/*
 * containers-storage: the CLI's launcher, an embedded CPython started as `python -S` would be.
 *
 * The console script pip writes runs `#!.../python`, whose start imports `site`: it reads
 * pyvenv.cfg and the .pth files, tries to import sitecustomize and usercustomize, and sets up
 * builtins no CLI call uses, ~0.9 ms of every call (a listing takes ~13 ms).  A shebang cannot
 * pass `-S` through pip (it rewrites the line), so scripts/build-launcher.sh compiles this file
 * with the module path that `site` computes for the venv baked in (CS_PATHS, CS_PYTHON) and
 * installs it in place of the script.  The next `pip install` puts pip's script back, which
 * works the same, ~0.9 ms slower.  Nothing here decides anything about the command line: it
 * runs containers_storage.cli.console.main(), as the script does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if !defined(CS_PYTHON) || !defined(CS_PATHS)
#error "build with scripts/build-launcher.sh (CS_PYTHON, CS_PATHS)"
#endif

static const char *const paths[] = {CS_PATHS, NULL};

static int
add_path(PyConfig *config, const char *path)
{
    wchar_t *wide = Py_DecodeLocale(path, NULL);
    if (wide == NULL)
        return -1;
    PyStatus status = PyWideStringList_Append(&config->module_search_paths, wide);
    PyMem_RawFree(wide);
    return PyStatus_Exception(status) ? -1 : 0;
}

/* The venv's python with site, on the same arguments: when the baked-in paths no longer find
 * the package (it moved, or was reinstalled elsewhere). */
static int
fall_back(char **argv, int argc)
{
    char **args = calloc((size_t)argc + 3, sizeof(char *));
    if (args == NULL)
        return 1;
    args[0] = CS_PYTHON;
    args[1] = "-m";
    args[2] = "containers_storage";
    for (int i = 1; i < argc; i++)
        args[i + 2] = argv[i];
    execv(CS_PYTHON, args);
    perror(CS_PYTHON);
    return 1;
}

int
main(int argc, char **argv)
{
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.site_import = 0;
    config.safe_path = 1;
    config.parse_argv = 0;
    config.module_search_paths_set = 1;
    PyStatus status = PyConfig_SetBytesString(&config, &config.executable, CS_PYTHON);
    if (PyStatus_Exception(status))
        goto fail;
    /* $PYTHONPATH first, as python puts it, then what site makes of the venv. */
    const char *env = getenv("PYTHONPATH");
    if (env != NULL && *env) {
        char *copy = strdup(env);
        for (char *save = NULL, *p = copy ? strtok_r(copy, ":", &save) : NULL; p; p = strtok_r(NULL, ":", &save))
            if (add_path(&config, p) < 0) {
                free(copy);
                goto nomem;
            }
        free(copy);
    }
    for (int i = 0; paths[i] != NULL; i++)
        if (add_path(&config, paths[i]) < 0)
            goto nomem;
    status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (PyStatus_Exception(status))
        goto fail;
    status = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(status))
        goto fail;
    PyConfig_Clear(&config);

    PyObject *console = PyImport_ImportModule("containers_storage.cli.console");
    if (console == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ImportError)) {
            PyErr_Clear();
            Py_FinalizeEx();
            return fall_back(argv, argc);
        }
        PyErr_Print();
        return 1;
    }
    PyObject *result = PyObject_CallMethod(console, "main", NULL);
    Py_DECREF(console);
    int code = 0;
    if (result == NULL) {
        int interrupted = PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
        PyErr_Print(); /* SystemExit: exits here with its status, as python does */
        if (interrupted) {
            /* python's way: the parent sees the signal */
            Py_FinalizeEx();
            signal(SIGINT, SIG_DFL);
            kill(getpid(), SIGINT);
        }
        code = 1;
    } else {
        if (result != Py_None)
            code = (int)PyLong_AsLong(result);
        if (code == -1 && PyErr_Occurred()) {
            PyErr_Print();
            code = 1;
        }
        Py_DECREF(result);
    }
    if (Py_FinalizeEx() < 0)
        return 120;
    return code;

nomem:
    status = PyStatus_NoMemory();
fail:
    PyConfig_Clear(&config);
    Py_ExitStatusException(status);
}

/*
 * parity.report._json -- the indented JSON text of one stage's dict, for `parity diff --json`.
 *
 * A diff of a million stages writes a million small dicts.  parity.report.json._pretty renders each
 * exactly as json.dumps(obj, indent=IND, allow_nan=False, ensure_ascii=False) does (its lines after
 * the first prefixed by PAD); this is the same function in C, for the same plain types, giving the
 * same text character for character (tests/report/test_json_accel.py compares the two).
 *
 * Python API:
 *   pretty(obj, pad, ind) -> str | None
 *     obj: exact dict (str keys), list, str, int, float, bool or None, nested at most 64 deep; pad
 *     and ind: str.  None for anything else (a subclass, a non-str key, NaN or an infinity, deeper
 *     nesting): the caller then lets json render (or refuse) it.
 *     Floats and ints are written by float.__repr__ / int.__repr__; strings escaped as json's
 *     encoder does without ensure_ascii: '"' '\\' and \b \f \n \r \t by name, other characters
 *     below U+0020 as \u00XX (lowercase hex), everything else as is.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct {
    Py_UCS4 *buf;
    Py_ssize_t len, cap;
} Writer;

static int grow(Writer *w, Py_ssize_t more) {
    if (w->len + more <= w->cap) return 0;
    Py_ssize_t cap = w->cap ? w->cap : 1024;
    while (cap < w->len + more) {
        if (cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(Py_UCS4)) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    Py_UCS4 *b = PyMem_Realloc(w->buf, (size_t)cap * sizeof(Py_UCS4));
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->buf = b;
    w->cap = cap;
    return 0;
}

static int put_ascii(Writer *w, const char *s, Py_ssize_t n) {
    if (grow(w, n) < 0) return -1;
    for (Py_ssize_t i = 0; i < n; i++) w->buf[w->len++] = (Py_UCS4)(unsigned char)s[i];
    return 0;
}

/* the characters of str s, as they are */
static int put_str(Writer *w, PyObject *s) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (grow(w, n) < 0) return -1;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) w->buf[w->len++] = PyUnicode_READ(kind, data, i);
    return 0;
}

/* str s as a JSON string literal */
static int put_quoted(Writer *w, PyObject *s) {
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (grow(w, 6 * n + 2) < 0) return -1;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_UCS4 *o = w->buf + w->len;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        switch (c) {
        case '"': *o++ = '\\'; *o++ = '"'; break;
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\b': *o++ = '\\'; *o++ = 'b'; break;
        case '\f': *o++ = '\\'; *o++ = 'f'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        default:
            if (c < 0x20) {
                *o++ = '\\'; *o++ = 'u'; *o++ = '0'; *o++ = '0';
                *o++ = (Py_UCS4)hex[(c >> 4) & 0xf];
                *o++ = (Py_UCS4)hex[c & 0xf];
            } else {
                *o++ = c;
            }
        }
    }
    *o++ = '"';
    w->len = o - w->buf;
    return 0;
}

/* the repr of an exact int or float (tp_repr: what int.__repr__ / float.__repr__ give) */
static int put_repr(Writer *w, PyObject *v) {
    PyObject *r = Py_TYPE(v)->tp_repr(v);
    if (r == NULL) return -1;
    int rc = put_str(w, r);
    Py_DECREF(r);
    return rc;
}

/* 1 written, 0 unusual (nothing more to do: the caller gives up), -1 error */
static int put_value(Writer *w, PyObject *v, Writer *pad, PyObject *ind, int depth);

static int put_pad(Writer *w, const Writer *pad) {
    if (grow(w, pad->len) < 0) return -1;
    memcpy(w->buf + w->len, pad->buf, (size_t)pad->len * sizeof(Py_UCS4));
    w->len += pad->len;
    return 0;
}

static int put_container(Writer *w, PyObject *v, Writer *pad, PyObject *ind, int depth) {
    int is_dict = PyDict_CheckExact(v);
    Py_ssize_t n = is_dict ? PyDict_GET_SIZE(v) : PyList_GET_SIZE(v);
    if (n == 0) return put_ascii(w, is_dict ? "{}" : "[]", 2) < 0 ? -1 : 1;
    if (depth > MAX_DEPTH) return 0;
    Py_ssize_t saved = pad->len;  /* the inner pad: pad + ind (pad is restored before returning) */
    if (put_str(pad, ind) < 0) return -1;
    int rc = 1;
    if (put_ascii(w, is_dict ? "{" : "[", 1) < 0 || put_pad(w, pad) < 0) { rc = -1; goto done; }
    if (is_dict) {
        Py_ssize_t pos = 0, k = 0;
        PyObject *key, *value;
        while (PyDict_Next(v, &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key)) { rc = 0; goto done; }
            if (k++ && (put_ascii(w, ",", 1) < 0 || put_pad(w, pad) < 0)) { rc = -1; goto done; }
            if (put_quoted(w, key) < 0 || put_ascii(w, ": ", 2) < 0) { rc = -1; goto done; }
            Py_INCREF(value);  /* (rendering it runs no Python code, but keep it alive regardless) */
            rc = put_value(w, value, pad, ind, depth);
            Py_DECREF(value);
            if (rc <= 0) goto done;
        }
    } else {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++) {
            if (i && (put_ascii(w, ",", 1) < 0 || put_pad(w, pad) < 0)) { rc = -1; goto done; }
            PyObject *item = PyList_GET_ITEM(v, i);
            Py_INCREF(item);
            rc = put_value(w, item, pad, ind, depth);
            Py_DECREF(item);
            if (rc <= 0) goto done;
        }
    }
    pad->len = saved;
    if (put_pad(w, pad) < 0 || put_ascii(w, is_dict ? "}" : "]", 1) < 0) return -1;
    return 1;
done:
    pad->len = saved;
    return rc;
}

static int put_value(Writer *w, PyObject *v, Writer *pad, PyObject *ind, int depth) {
    if (PyUnicode_CheckExact(v)) return put_quoted(w, v) < 0 ? -1 : 1;
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        if (!isfinite(d)) return 0;
        return put_repr(w, v) < 0 ? -1 : 1;
    }
    if (v == Py_None) return put_ascii(w, "null", 4) < 0 ? -1 : 1;
    if (v == Py_True) return put_ascii(w, "true", 4) < 0 ? -1 : 1;
    if (v == Py_False) return put_ascii(w, "false", 5) < 0 ? -1 : 1;
    if (PyLong_CheckExact(v)) return put_repr(w, v) < 0 ? -1 : 1;
    if (PyDict_CheckExact(v) || PyList_CheckExact(v)) return put_container(w, v, pad, ind, depth + 1);
    return 0;
}

static PyObject *json_pretty(PyObject *self, PyObject *args) {
    PyObject *obj, *pad, *ind;
    if (!PyArg_ParseTuple(args, "OUU:pretty", &obj, &pad, &ind)) return NULL;
    Writer w = {NULL, 0, 0}, p = {NULL, 0, 0};
    PyObject *res = NULL;
    int rc;
    if (put_str(&p, pad) < 0) goto done;
    /* the top level: a container at depth 0, a scalar as itself */
    if (PyDict_CheckExact(obj) || PyList_CheckExact(obj)) rc = put_container(&w, obj, &p, ind, 0);
    else rc = put_value(&w, obj, &p, ind, 0);
    if (rc < 0) goto done;
    if (rc == 0) {
        Py_INCREF(Py_None);
        res = Py_None;
        goto done;
    }
    res = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, w.buf, w.len);
done:
    PyMem_Free(w.buf);
    PyMem_Free(p.buf);
    return res;
}

static PyMethodDef json_methods[] = {
    {"pretty", json_pretty, METH_VARARGS,
     "pretty(obj, pad, ind) -> str | None: json.dumps(obj, indent=ind, allow_nan=False, ensure_ascii=False) with "
     "pad after every newline, for plain types; None for anything else"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef json_module = {
    PyModuleDef_HEAD_INIT, "parity.report._json",
    "Indented JSON text of plain dicts, exactly as json.dumps writes it (see parity.report.json).", -1, json_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__json(void) { return PyModule_Create(&json_module); }

/*
 * parity.trace._render -- the text of many manifest entries at once, for TraceWriter.add_batch.
 *
 * A log of a million small stages spends most of the writer's time building each stage's manifest
 * entry, journal line and safetensors header entry.  These functions build exactly the strings
 * that the Python code of parity/trace/writer.py builds (and that its general JSON encoder writes),
 * from pieces that Python has already rendered; tests/trace compares the two byte for byte.
 *
 * Python API:
 *   render_entries(pre_m, pre_j, bases, seen, indices, provenance, infos, shapes, encode, first, end)
 *       -> (keys, manifest block, journal block)
 *     renders stages first..end-1: their final keys, and their entries as UTF-8, joined as the
 *     manifest (",\n  ") and the journal ("\n") join them
 *     bases[i]       the stage key before its #occurrence (ASCII by the key grammar)
 *     seen           dict base -> times recorded so far (updated: the occurrence numbering)
 *     indices[i]     (manifest text, journal text, _) of the stage's indices ("" if none)
 *     provenance     the same per stage (a list), or a column (km, em, kj, ej, ints, overrides): the
 *                    texts km + str(ints[i]) + em and kj + str(ints[i]) + ej, unless overrides[i]
 *     infos[i]       (count, manifest shape, journal shape, header shape); count < 0: a text stage,
 *                    whose text is shapes[i] (JSON-encoded with encode)
 *     pre_m, pre_j   the start of a tensor entry ('{\n   "dtype": ..., "file": ...,' and the journal's)
 *   render_header(keys, infos, first, end, offset, itemsize, dtype) -> (text, end offset)
 *     the safetensors header entries '"KEY":{"dtype":..,"shape":..,"data_offsets":[b,e]}' of the
 *     tensor stages first..end-1 (comma-separated), values back to back from offset
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>


/* decimal digits of x into buf (no NUL); returns the length (snprintf is slow here) */
static int fmt_ll(char *buf, long long x) {
    char tmp[24];
    int n = 0, len = 0;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (x < 0) buf[len++] = '-';
    while (n) buf[len++] = tmp[--n];
    return len;
}

/* A growing UTF-8 buffer. */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + more) cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT_C(b, lit) put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

static inline int put_o(Buf *b, PyObject *o) {
    Py_ssize_t n;
    const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &n) : NULL;
    if (s == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "render_entries: a piece is not a str");
        return -1;
    }
    return put(b, s, n);
}

static int text_pair(PyObject *t, PyObject **m, PyObject **j) {
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 2) {
        PyErr_SetString(PyExc_TypeError, "render_entries: indices and provenance items are (manifest, journal, _) tuples");
        return -1;
    }
    *m = PyTuple_GET_ITEM(t, 0);
    *j = PyTuple_GET_ITEM(t, 1);
    return 0;
}

/* the provenance text: given (pt), or the column's key text + number + end text */
static inline int put_prov(Buf *b, PyObject *pt, PyObject *k, PyObject *e, const char *num, int num_len) {
    if (pt != NULL) return put_o(b, pt);
    return put_o(b, k) || put(b, num, num_len) || put_o(b, e) ? -1 : 0;
}

static PyObject *render_entries(PyObject *Py_UNUSED(mod), PyObject *args) {
    PyObject *pre_m, *pre_j, *bases, *seen, *indices, *provenance, *infos, *shapes, *encode;
    Py_ssize_t first, end;
    if (!PyArg_ParseTuple(args, "UUO!O!O!OO!OOnn", &pre_m, &pre_j, &PyList_Type, &bases, &PyDict_Type, &seen,
                          &PyList_Type, &indices, &provenance, &PyList_Type, &infos, &shapes, &encode, &first, &end))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(bases);
    if (first < 0 || end > n || first > end) {
        PyErr_SetString(PyExc_IndexError, "render_entries: first..end is not a range of the stages");
        return NULL;
    }
    /* provenance: a list of (manifest, journal, _) per stage, or the column (km, em, kj, ej, ints, overrides) */
    PyObject *km = NULL, *em = NULL, *kj = NULL, *ej = NULL, *ints = NULL, *overrides = NULL;
    if (PyTuple_Check(provenance)) {
        if (!PyArg_ParseTuple(provenance, "UUUUO!O!", &km, &em, &kj, &ej, &PyList_Type, &ints, &PyDict_Type, &overrides))
            return NULL;
        if (PyList_GET_SIZE(ints) != n) {
            PyErr_SetString(PyExc_ValueError, "render_entries: the provenance column differs in length");
            return NULL;
        }
    } else if (!PyList_Check(provenance) || PyList_GET_SIZE(provenance) != n) {
        PyErr_SetString(PyExc_TypeError, "render_entries: provenance is a list per stage or a column tuple");
        return NULL;
    }
    if (PyList_GET_SIZE(indices) != n || PyList_GET_SIZE(infos) != n || PySequence_Size(shapes) != n) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "render_entries: the lists differ in length");
        return NULL;
    }
    Buf m = {0}, j = {0};
    PyObject *keys = PyList_New(end - first), *res = NULL, *text = NULL;
    if (keys == NULL) goto done;
    int have_overrides = overrides != NULL && PyDict_GET_SIZE(overrides) > 0;
    for (Py_ssize_t i = first; i < end; i++) {
        PyObject *base = PyList_GET_ITEM(bases, i);
        if (!PyUnicode_Check(base) || !PyUnicode_IS_ASCII(base)) {
            PyErr_SetString(PyExc_TypeError, "render_entries: keys are ASCII str");
            goto done;
        }
        PyObject *count = PyDict_GetItemWithError(seen, base);
        long long occ = 0;
        if (count == NULL) {
            if (PyErr_Occurred()) goto done;
        } else if ((occ = PyLong_AsLongLong(count)) == -1 && PyErr_Occurred()) {
            goto done;
        }
        PyObject *next = PyLong_FromLongLong(occ + 1);
        if (next == NULL || PyDict_SetItem(seen, base, next) < 0) {
            Py_XDECREF(next);
            goto done;
        }
        Py_DECREF(next);
        char num[24];
        int k = 0;
        PyObject *key;
        if (occ) {
            k = fmt_ll(num, occ);
            Py_ssize_t bl = PyUnicode_GET_LENGTH(base);
            key = PyUnicode_New(bl + 1 + k, 127);
            if (key == NULL) goto done;
            Py_UCS1 *d = PyUnicode_1BYTE_DATA(key);
            memcpy(d, PyUnicode_1BYTE_DATA(base), (size_t)bl);
            d[bl] = '#';
            memcpy(d + bl + 1, num, (size_t)k);
        } else {
            Py_INCREF(base);
            key = base;
        }
        PyList_SET_ITEM(keys, i - first, key);
        PyObject *it_m, *it_j, *pt_m = NULL, *pt_j = NULL;
        char pnum[24];
        int pnum_len = 0;
        if (text_pair(PyList_GET_ITEM(indices, i), &it_m, &it_j) < 0) goto done;
        if (ints == NULL) {
            if (text_pair(PyList_GET_ITEM(provenance, i), &pt_m, &pt_j) < 0) goto done;
        } else {
            PyObject *over = NULL;
            if (have_overrides) {
                PyObject *idx = PyLong_FromSsize_t(i);
                if (idx == NULL) goto done;
                over = PyDict_GetItemWithError(overrides, idx);
                Py_DECREF(idx);
                if (over == NULL && PyErr_Occurred()) goto done;
            }
            if (over != NULL) {
                if (text_pair(over, &pt_m, &pt_j) < 0) goto done;
            } else {
                PyObject *v = PyList_GET_ITEM(ints, i);
                long long x = PyLong_CheckExact(v) ? PyLong_AsLongLong(v) : -1;
                if (!PyLong_CheckExact(v) || (x == -1 && PyErr_Occurred())) {
                    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "render_entries: the provenance column holds ints");
                    goto done;
                }
                pnum_len = fmt_ll(pnum, x);
            }
        }
        PyObject *info = PyList_GET_ITEM(infos, i);
        if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) < 4) {
            PyErr_SetString(PyExc_TypeError, "render_entries: infos are (count, shape texts...) tuples");
            goto done;
        }
        Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(info, 0));
        if (size == -1 && PyErr_Occurred()) goto done;
        if (i > first && (PUT_C(&m, ",\n  ") || PUT_C(&j, "\n"))) goto done;
        int err;
        if (size >= 0) {
            err = put_o(&m, pre_m) || put_o(&m, it_m) || PUT_C(&m, "   \"key\": \"") || put_o(&m, key) ||
                  PUT_C(&m, "\",\n   \"kind\": \"tensor\",\n") ||
                  (occ && (PUT_C(&m, "   \"occurrence\": ") || put(&m, num, k) || PUT_C(&m, ",\n"))) ||
                  put_prov(&m, pt_m, km, em, pnum, pnum_len) || PUT_C(&m, "   \"shape\": ") ||
                  put_o(&m, PyTuple_GET_ITEM(info, 1)) || PUT_C(&m, "\n  }");
            err = err || put_o(&j, pre_j) || put_o(&j, it_j) || PUT_C(&j, "\"key\": \"") || put_o(&j, key) ||
                  PUT_C(&j, "\", \"kind\": \"tensor\", ") ||
                  (occ && (PUT_C(&j, "\"occurrence\": ") || put(&j, num, k) || PUT_C(&j, ", "))) ||
                  put_prov(&j, pt_j, kj, ej, pnum, pnum_len) || PUT_C(&j, "\"shape\": ") ||
                  put_o(&j, PyTuple_GET_ITEM(info, 2)) || PUT_C(&j, "}}");
        } else {
            PyObject *raw = PySequence_GetItem(shapes, i);
            if (raw == NULL) goto done;
            text = PyObject_CallOneArg(encode, raw);
            Py_DECREF(raw);
            if (text == NULL) goto done;
            err = PUT_C(&m, "{\n") || put_o(&m, it_m) || PUT_C(&m, "   \"key\": \"") || put_o(&m, key) ||
                  PUT_C(&m, "\",\n   \"kind\": \"text\",\n") ||
                  (occ && (PUT_C(&m, "   \"occurrence\": ") || put(&m, num, k) || PUT_C(&m, ",\n"))) ||
                  put_prov(&m, pt_m, km, em, pnum, pnum_len) || PUT_C(&m, "   \"text\": ") || put_o(&m, text) ||
                  PUT_C(&m, "\n  }");
            err = err || PUT_C(&j, "{\"stage\": {") || put_o(&j, it_j) || PUT_C(&j, "\"key\": \"") || put_o(&j, key) ||
                  PUT_C(&j, "\", \"kind\": \"text\", ") ||
                  (occ && (PUT_C(&j, "\"occurrence\": ") || put(&j, num, k) || PUT_C(&j, ", "))) ||
                  put_prov(&j, pt_j, kj, ej, pnum, pnum_len) || PUT_C(&j, "\"text\": ") || put_o(&j, text) ||
                  PUT_C(&j, "}}");
            Py_CLEAR(text);
        }
        if (err) goto done;
    }
    {
        PyObject *bm = PyBytes_FromStringAndSize(m.p ? m.p : "", m.len);
        PyObject *bj = bm ? PyBytes_FromStringAndSize(j.p ? j.p : "", j.len) : NULL;
        if (bm != NULL && bj != NULL) res = PyTuple_Pack(3, keys, bm, bj);
        Py_XDECREF(bm);
        Py_XDECREF(bj);
    }
done:
    Py_XDECREF(text);
    Py_XDECREF(keys);
    PyMem_Free(m.p);
    PyMem_Free(j.p);
    return res;
}

static PyObject *render_header(PyObject *Py_UNUSED(mod), PyObject *args) {
    PyObject *keys, *infos, *code;
    Py_ssize_t first, end;
    long long offset, itemsize;
    if (!PyArg_ParseTuple(args, "O!O!nnLLU", &PyList_Type, &keys, &PyList_Type, &infos, &first, &end, &offset,
                          &itemsize, &code))
        return NULL;
    if (first < 0 || end > PyList_GET_SIZE(keys) || end > PyList_GET_SIZE(infos) || first > end) {
        PyErr_SetString(PyExc_IndexError, "render_header: first..end is not a range of the lists");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(code)) {
        PyErr_SetString(PyExc_ValueError, "render_header: the dtype code is ASCII");
        return NULL;
    }
    Py_ssize_t cl = PyUnicode_GET_LENGTH(code), cap = (end - first) * 96 + 64, used = 0, count = 0;
    char *buf = PyMem_Malloc((size_t)cap);
    if (buf == NULL) return PyErr_NoMemory();
    long long pos = offset;
    PyObject *result = NULL;
    for (Py_ssize_t i = first; i < end; i++) {
        PyObject *info = PyList_GET_ITEM(infos, i);
        if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) < 4) {
            PyErr_SetString(PyExc_TypeError, "render_header: infos are (count, shape texts...) tuples");
            goto done;
        }
        long long size = PyLong_AsLongLong(PyTuple_GET_ITEM(info, 0));
        if (size == -1 && PyErr_Occurred()) goto done;
        if (size < 0) continue; /* a text stage */
        PyObject *key = PyList_GET_ITEM(keys, i), *shape = PyTuple_GET_ITEM(info, 3);
        if (!PyUnicode_Check(key) || !PyUnicode_IS_ASCII(key) || !PyUnicode_Check(shape) || !PyUnicode_IS_ASCII(shape)) {
            PyErr_SetString(PyExc_TypeError, "render_header: keys and shapes are ASCII str");
            goto done;
        }
        Py_ssize_t kl = PyUnicode_GET_LENGTH(key), sl = PyUnicode_GET_LENGTH(shape);
        /* ,"KEY":{"dtype":"CODE","shape":SHAPE,"data_offsets":[B,E]} */
        Py_ssize_t need = 1 + 1 + kl + 12 + cl + 10 + sl + 17 + 2 * 21 + 3;
        if (used + need > cap) {
            Py_ssize_t ncap = cap * 2 + need;
            char *nbuf = PyMem_Realloc(buf, (size_t)ncap);
            if (nbuf == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            buf = nbuf, cap = ncap;
        }
        char *d = buf + used;
        long long stop = pos + size * itemsize;
        if (count) *d++ = ',';
        *d++ = '"';
        memcpy(d, PyUnicode_1BYTE_DATA(key), (size_t)kl), d += kl;
        memcpy(d, "\":{\"dtype\":\"", 12), d += 12;
        memcpy(d, PyUnicode_1BYTE_DATA(code), (size_t)cl), d += cl;
        memcpy(d, "\",\"shape\":", 10), d += 10;
        memcpy(d, PyUnicode_1BYTE_DATA(shape), (size_t)sl), d += sl;
        memcpy(d, ",\"data_offsets\":[", 17), d += 17;
        d += fmt_ll(d, pos);
        *d++ = ',';
        d += fmt_ll(d, stop);
        *d++ = ']';
        *d++ = '}';
        used = d - buf;
        pos = stop;
        count++;
    }
    {
        PyObject *text = PyUnicode_DecodeASCII(buf, used, NULL);
        if (text != NULL) result = Py_BuildValue("(NL)", text, pos);
    }
done:
    PyMem_Free(buf);
    return result;
}

static PyMethodDef render_methods[] = {
    {"render_entries", render_entries, METH_VARARGS,
     "render_entries(pre_m, pre_j, bases, seen, indices, provenance, infos, shapes, encode, first, end) -> (keys, manifest block, journal block)"},
    {"render_header", render_header, METH_VARARGS,
     "render_header(keys, infos, first, end, offset, itemsize, dtype) -> (safetensors header entries, end offset)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef render_module = {
    PyModuleDef_HEAD_INIT, "parity.trace._render",
    "Manifest, journal and safetensors header text of many stages at once (see parity.trace.writer).", -1,
    render_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__render(void) { return PyModule_Create(&render_module); }

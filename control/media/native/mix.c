/* Frame levels, mix-minus (with the G.711 table encode) and the G.711 table decode in C. */

#include "media.h"

#include <math.h>
#include <string.h>

/* --- level_db ------------------------------------------------------------------------- */

PyDoc_STRVAR(level_db_doc,
"level_db(frame) -> float\n\n"
"stream.level_db in C: RMS of int16 samples (any buffer) in dBFS, the same floor.\n"
"Summed in double, where numpy sums float32: the same level to within 1e-4 dB.");

static PyObject *level_db(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    if (view.itemsize != 2 || (view.format != NULL && strcmp(view.format, "h") != 0 &&
                               strcmp(view.format, "<h") != 0 && strcmp(view.format, "=h") != 0)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "level_db: an int16 buffer is needed");
        return NULL;
    }
    const int16_t *x = view.buf;
    Py_ssize_t n = view.len / 2;
    double sum = 0.0;
    for (Py_ssize_t i = 0; i < n; i++)
        sum += (double)x[i] * (double)x[i];
    PyBuffer_Release(&view);
    double mean_square = sum / (double)(n > 0 ? n : 1);
    if (mean_square < 1e-12)
        mean_square = 1e-12;
    return PyFloat_FromDouble(10.0 * log10(mean_square / (32768.0 * 32768.0)));
}

/* --- mix_minus ------------------------------------------------------------------------ */

#define KNEE 24576 /* mixroom._KNEE: below it the limiter is the identity */

PyDoc_STRVAR(mix_minus_doc,
"mix_minus(frames, size, tables) -> (total, rows, payloads)\n\n"
"MixRoom._mix_minus in C for the case the limiter leaves alone: total = the sum of the\n"
"talkers' int16 frames (first `size` samples) as int32; row i = total - frame i as int16;\n"
"payloads[i] = tables[i][row i as uint16 ^ 0x8000] (a G.711 encode) where tables[i] is a\n"
"65536-octet table, else None.  total and rows are bytearrays (int32, int16 rows x size).\n"
"When any row's peak is above the limiter's knee rows and payloads are None: the caller\n"
"limits with numpy (tanh), as the reference does.");

static PyObject *mix_minus(PyObject *self, PyObject *args) {
    PyObject *frames_arg, *tables_arg, *frames = NULL, *tables = NULL;
    PyObject *total = NULL, *rows = NULL, *payloads = NULL, *result = NULL;
    Py_ssize_t size;
    Py_buffer *views = NULL;
    Py_ssize_t held = 0, count = 0;
    if (!PyArg_ParseTuple(args, "OnO:mix_minus", &frames_arg, &size, &tables_arg))
        return NULL;
    frames = PySequence_Fast(frames_arg, "mix_minus: frames must be a sequence");
    tables = PySequence_Fast(tables_arg, "mix_minus: tables must be a sequence");
    if (frames == NULL || tables == NULL)
        goto done;
    count = PySequence_Fast_GET_SIZE(frames);
    if (PySequence_Fast_GET_SIZE(tables) != count || size < 0) {
        PyErr_SetString(PyExc_ValueError, "mix_minus: one table (or None) per frame");
        goto done;
    }
    views = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Py_buffer));
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < count; held++) {
        Py_buffer *v = &views[held];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(frames, held), v,
                               PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            goto done;
        if (v->itemsize != 2 || v->len / 2 < size) {
            held++;
            PyErr_SetString(PyExc_ValueError, "mix_minus: int16 frames of at least size samples");
            goto done;
        }
    }
    total = PyByteArray_FromStringAndSize(NULL, size * 4);
    if (total == NULL)
        goto done;
    int32_t *sum = (int32_t *)PyByteArray_AS_STRING(total);
    memset(sum, 0, (size_t)size * 4);
    for (Py_ssize_t r = 0; r < count; r++) {
        const int16_t *x = views[r].buf;
        for (Py_ssize_t i = 0; i < size; i++)
            sum[i] += x[i];
    }
    int32_t peak = 0;
    for (Py_ssize_t r = 0; r < count && peak <= KNEE; r++) {
        const int16_t *x = views[r].buf;
        for (Py_ssize_t i = 0; i < size; i++) {
            int32_t m = sum[i] - x[i];
            if (m < 0)
                m = -m;
            if (m > peak)
                peak = m;
        }
    }
    if (peak > KNEE) {
        result = Py_BuildValue("(OOO)", total, Py_None, Py_None);
        goto done;
    }
    rows = PyByteArray_FromStringAndSize(NULL, count * size * 2);
    payloads = PyList_New(count);
    if (rows == NULL || payloads == NULL)
        goto done;
    int16_t *out = (int16_t *)PyByteArray_AS_STRING(rows);
    for (Py_ssize_t r = 0; r < count; r++) {
        const int16_t *x = views[r].buf;
        int16_t *row = out + r * size;
        for (Py_ssize_t i = 0; i < size; i++)
            row[i] = (int16_t)(sum[i] - x[i]);
        PyObject *table = PySequence_Fast_GET_ITEM(tables, r);
        PyObject *payload = Py_None;
        if (table != Py_None) {
            Py_buffer t;
            if (PyObject_GetBuffer(table, &t, PyBUF_SIMPLE) < 0)
                goto done;
            if (t.len != 65536) {
                PyBuffer_Release(&t);
                PyErr_SetString(PyExc_ValueError, "mix_minus: a table has 65536 octets");
                goto done;
            }
            payload = PyBytes_FromStringAndSize(NULL, size);
            if (payload == NULL) {
                PyBuffer_Release(&t);
                goto done;
            }
            unsigned char *code = (unsigned char *)PyBytes_AS_STRING(payload);
            const unsigned char *lookup = t.buf;
            for (Py_ssize_t i = 0; i < size; i++)
                code[i] = lookup[(uint16_t)row[i] ^ 0x8000];
            PyBuffer_Release(&t);
        } else {
            Py_INCREF(payload);
        }
        PyList_SET_ITEM(payloads, r, payload);
    }
    result = Py_BuildValue("(OOO)", total, rows, payloads);
done:
    for (Py_ssize_t r = 0; r < held; r++)
        PyBuffer_Release(&views[r]);
    PyMem_Free(views);
    Py_XDECREF(frames);
    Py_XDECREF(tables);
    Py_XDECREF(total);
    Py_XDECREF(rows);
    Py_XDECREF(payloads);
    return result;
}

/* --- table_decode --------------------------------------------------------------------- */

PyDoc_STRVAR(table_decode_doc,
"table_decode(payload, table) -> bytearray\n\n"
"The G.711 decode (codecs.ulaw_decode / alaw_decode: table[octets]) in C: each octet of\n"
"`payload` (any buffer) looked up in `table`, a buffer of 256 int16 samples; the result\n"
"is those samples, native int16, for numpy.frombuffer.");

static PyObject *table_decode(PyObject *self, PyObject *args) {
    Py_buffer payload, table;
    if (!PyArg_ParseTuple(args, "y*y*:table_decode", &payload, &table))
        return NULL;
    PyObject *out = NULL;
    if (table.len != 256 * (Py_ssize_t)sizeof(int16_t)) {
        PyErr_SetString(PyExc_ValueError, "table_decode: the table must be 256 int16 samples");
        goto done;
    }
    out = PyByteArray_FromStringAndSize(NULL, payload.len * (Py_ssize_t)sizeof(int16_t));
    if (out == NULL)
        goto done;
    int16_t lookup[256];
    memcpy(lookup, table.buf, sizeof lookup); /* the table buffer may be unaligned */
    const unsigned char *code = payload.buf;
    char *dst = PyByteArray_AS_STRING(out);
    for (Py_ssize_t i = 0; i < payload.len; i++)
        memcpy(dst + i * (Py_ssize_t)sizeof(int16_t), &lookup[code[i]], sizeof(int16_t));
done:
    PyBuffer_Release(&payload);
    PyBuffer_Release(&table);
    return out;
}

PyMethodDef mix_methods[] = {
    {"table_decode", table_decode, METH_VARARGS, table_decode_doc},
    {"level_db", level_db, METH_O, level_db_doc},
    {"mix_minus", mix_minus, METH_VARARGS, mix_minus_doc},
    {NULL, NULL, 0, NULL},
};

/* RTP parsing (RtpPacket.parse) and RFC 3550 A.1 sequence tracking in C. */

#include "media.h"

#include <string.h>

/* --- parse_rtp ------------------------------------------------------------------------ */

static PyObject *rtp_fail(const char *message) {
    PyErr_SetString(rtp_error != NULL ? rtp_error : PyExc_ValueError, message);
    return NULL;
}


static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

PyDoc_STRVAR(parse_rtp_doc,
"parse_rtp(data) -> RtpPacket\n\n"
"RtpPacket.parse(data) in C: the same checks, the same packet, RtpError otherwise.");

static PyObject *parse_rtp(PyObject *self, PyObject *arg) {
    Py_buffer view;
    PyObject *packet = NULL, *csrcs = NULL, *profile = NULL, *ext = NULL;
    if (packet_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "parse_rtp before configure()");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *d = view.buf;
    Py_ssize_t len = view.len;
    if (len < 12) {
        PyErr_Format(rtp_error, "RTP packet too short (%zd octets)", len);
        goto done;
    }
    int version = d[0] >> 6;
    if (version != 2) {
        PyErr_Format(rtp_error, "RTP version %d is not 2", version);
        goto done;
    }
    int has_padding = d[0] & 0x20, has_ext = d[0] & 0x10, cc = d[0] & 0x0F;
    int marker = d[1] & 0x80, pt = d[1] & 0x7F;
    Py_ssize_t pos = 12, end = len;
    int pad = 0;
    if (has_padding) {
        pad = d[len - 1];
        if (pad == 0) {
            rtp_fail("RTP padding count of zero");
            goto done;
        }
        end -= pad;
    }
    if (pos + 4 * cc > end) {
        rtp_fail("RTP CSRC list runs past the packet");
        goto done;
    }
    csrcs = PyTuple_New(cc);
    if (csrcs == NULL)
        goto done;
    for (int i = 0; i < cc; i++) {
        PyObject *v = PyLong_FromUnsignedLong(be32(d + pos + 4 * i));
        if (v == NULL)
            goto done;
        PyTuple_SET_ITEM(csrcs, i, v);
    }
    pos += 4 * cc;
    if (has_ext) {
        if (pos + 4 > end) {
            rtp_fail("RTP header extension header runs past the packet");
            goto done;
        }
        int prof = (d[pos] << 8) | d[pos + 1];
        Py_ssize_t words = (d[pos + 2] << 8) | d[pos + 3];
        pos += 4;
        if (pos + 4 * words > end) {
            rtp_fail("RTP header extension runs past the packet");
            goto done;
        }
        profile = PyLong_FromLong(prof);
        ext = PyBytes_FromStringAndSize((const char *)d + pos, 4 * words);
        if (profile == NULL || ext == NULL)
            goto done;
        pos += 4 * words;
    } else {
        profile = Py_NewRef(Py_None);
        ext = PyBytes_FromStringAndSize(NULL, 0);
        if (ext == NULL)
            goto done;
    }
    if (pos > end) {
        rtp_fail("RTP padding overlaps the header");
        goto done;
    }
    packet = ((PyTypeObject *)packet_type)->tp_alloc((PyTypeObject *)packet_type, 0);
    if (packet == NULL)
        goto done;
    if (set_field(packet, s_payload_type, PyLong_FromLong(pt)) < 0 ||
        set_field(packet, s_sequence, PyLong_FromLong((d[2] << 8) | d[3])) < 0 ||
        set_field(packet, s_timestamp, PyLong_FromUnsignedLong(be32(d + 4))) < 0 ||
        set_field(packet, s_ssrc, PyLong_FromUnsignedLong(be32(d + 8))) < 0 ||
        set_field(packet, s_payload,
                  PyBytes_FromStringAndSize((const char *)d + pos, end - pos)) < 0 ||
        set_field(packet, s_marker, PyBool_FromLong(marker)) < 0 ||
        set_field(packet, s_csrcs, Py_NewRef(csrcs)) < 0 ||
        set_field(packet, s_extension_profile, Py_NewRef(profile)) < 0 ||
        set_field(packet, s_extension, Py_NewRef(ext)) < 0 ||
        set_field(packet, s_padding, PyLong_FromLong(pad)) < 0 ||
        set_field(packet, s_version, PyLong_FromLong(2)) < 0) {
        Py_CLEAR(packet);
    }
done:
    Py_XDECREF(csrcs);
    Py_XDECREF(profile);
    Py_XDECREF(ext);
    PyBuffer_Release(&view);
    return packet;
}

/* --- SequenceTracker ------------------------------------------------------------------ */

/* control/media/rtp.py's SequenceTracker (RFC 3550 A.1 update_seq), the same arithmetic;
 * update() returns the same SequenceUpdate. */

#define SEQ_MOD (1LL << 16)

typedef struct {
    PyObject_HEAD
    long long min_sequential, max_dropout, max_misorder;
    int has_ssrc;
    long long ssrc, base_seq, max_seq, cycles, received, probation, bad_seq;
} Tracker;

static int tracker_init(Tracker *t, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"min_sequential", "max_dropout", "max_misorder", NULL};
    t->min_sequential = 2;
    t->max_dropout = 3000;
    t->max_misorder = 100;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$LLL:SequenceTracker", kwlist,
                                     &t->min_sequential, &t->max_dropout, &t->max_misorder))
        return -1;
    if (t->min_sequential < 1) {
        PyErr_SetString(PyExc_ValueError, "min_sequential must be at least 1");
        return -1;
    }
    t->has_ssrc = 0;
    t->ssrc = t->base_seq = t->max_seq = t->cycles = t->received = t->probation = 0;
    t->bad_seq = SEQ_MOD + 1;
    return 0;
}

static void t_init_seq(Tracker *t, long long seq) {
    t->base_seq = seq;
    t->max_seq = seq;
    t->bad_seq = SEQ_MOD + 1;
    t->cycles = 0;
    t->received = 0;
}

static PyObject *make_update(int valid, int has_ext, long long ext, int new_source,
                             int resynced) {
    PyObject *u = ((PyTypeObject *)update_type)->tp_alloc((PyTypeObject *)update_type, 0);
    if (u == NULL)
        return NULL;
    if (set_field(u, s_valid, PyBool_FromLong(valid)) < 0 ||
        set_field(u, s_extended_seq, has_ext ? PyLong_FromLongLong(ext) : Py_NewRef(Py_None)) <
            0 ||
        set_field(u, s_new_source, PyBool_FromLong(new_source)) < 0 ||
        set_field(u, s_resynced, PyBool_FromLong(resynced)) < 0)
        Py_CLEAR(u);
    return u;
}

static PyObject *tracker_update(Tracker *t, PyObject *args) {
    long long ssrc, seq;
    if (update_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "SequenceTracker.update before configure()");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "LL:update", &ssrc, &seq))
        return NULL;
    int new_source = 0;
    if (!t->has_ssrc || ssrc != t->ssrc) {
        t->has_ssrc = 1;
        t->ssrc = ssrc;
        t_init_seq(t, seq);
        t->max_seq = pymod(seq - 1, SEQ_MOD);
        t->probation = t->min_sequential;
        new_source = 1;
    }
    long long udelta = pymod(seq - t->max_seq, SEQ_MOD);
    if (t->probation) {
        if (seq == pymod(t->max_seq + 1, SEQ_MOD)) {
            t->probation -= 1;
            t->max_seq = seq;
            if (t->probation == 0) {
                t_init_seq(t, seq);
                t->received += 1;
                return make_update(1, 1, t->cycles + t->max_seq, new_source, 0);
            }
        } else {
            t->probation = t->min_sequential - 1;
            t->max_seq = seq;
        }
        return make_update(0, 0, 0, new_source, 0);
    }
    long long ext;
    if (udelta < t->max_dropout) {
        if (seq < t->max_seq)
            t->cycles += SEQ_MOD; /* wrapped */
        t->max_seq = seq;
        ext = t->cycles + t->max_seq;
    } else if (udelta <= SEQ_MOD - t->max_misorder) {
        if (seq == t->bad_seq) { /* two sequential packets after a big jump: a restart */
            t_init_seq(t, seq);
            t->received += 1;
            return make_update(1, 1, t->cycles + t->max_seq, new_source, 1);
        }
        t->bad_seq = pymod(seq + 1, SEQ_MOD);
        return make_update(0, 0, 0, new_source, 0);
    } else { /* duplicate or reordered */
        ext = t->cycles + t->max_seq + seq_delta(seq, t->max_seq);
    }
    t->received += 1;
    return make_update(1, 1, ext, new_source, 0);
}

static PyObject *tracker_ssrc(Tracker *t, void *c) {
    if (!t->has_ssrc)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(t->ssrc);
}
static PyObject *tracker_extended_max(Tracker *t, void *c) {
    return PyLong_FromLongLong(t->cycles + t->max_seq);
}
static long long t_expected(Tracker *t) {
    if (!t->has_ssrc || t->probation)
        return 0;
    return t->cycles + t->max_seq - t->base_seq + 1;
}
static PyObject *tracker_expected(Tracker *t, void *c) {
    return PyLong_FromLongLong(t_expected(t));
}
static PyObject *tracker_lost(Tracker *t, void *c) {
    return PyLong_FromLongLong(t_expected(t) - t->received);
}

static PyGetSetDef tracker_getset[] = {
    {"ssrc", (getter)tracker_ssrc, NULL, NULL, NULL},
    {"extended_max", (getter)tracker_extended_max, NULL, NULL, NULL},
    {"expected", (getter)tracker_expected, NULL, NULL, NULL},
    {"lost", (getter)tracker_lost, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef tracker_members[] = {
    {"min_sequential", T_LONGLONG, offsetof(Tracker, min_sequential), 0, NULL},
    {"max_dropout", T_LONGLONG, offsetof(Tracker, max_dropout), 0, NULL},
    {"max_misorder", T_LONGLONG, offsetof(Tracker, max_misorder), 0, NULL},
    {"base_seq", T_LONGLONG, offsetof(Tracker, base_seq), 0, NULL},
    {"max_seq", T_LONGLONG, offsetof(Tracker, max_seq), 0, NULL},
    {"cycles", T_LONGLONG, offsetof(Tracker, cycles), 0, NULL},
    {"received", T_LONGLONG, offsetof(Tracker, received), 0, NULL},
    {"probation", T_LONGLONG, offsetof(Tracker, probation), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef tracker_methods[] = {
    {"update", (PyCFunction)tracker_update, METH_VARARGS,
     "update(ssrc, seq) -> SequenceUpdate (RFC 3550 A.1 update_seq)"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject TrackerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "control.media.native._media.SequenceTracker",
    .tp_basicsize = sizeof(Tracker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "control.media.rtp.SequenceTracker in C: the same A.1 bookkeeping and results.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)tracker_init,
    .tp_methods = tracker_methods,
    .tp_members = tracker_members,
    .tp_getset = tracker_getset,
};

PyMethodDef rtp_methods[] = {
    {"parse_rtp", parse_rtp, METH_O, parse_rtp_doc},
    {NULL, NULL, 0, NULL},
};

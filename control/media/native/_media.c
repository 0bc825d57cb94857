/* control.media.native._media: the embedded mixer's per-packet work in C.
 *
 * Python (control/media/rtp.py, jitter.py, stream.py, mixroom.py, mixer.py) is the
 * reference; this module does the same work without the interpreter per packet:
 *
 *   io.c      recv_batch: every datagram waiting on the legs' UDP sockets, by recvmmsg,
 *             with the kernel's arrival time (SO_TIMESTAMPNS) on the loop's monotonic
 *             clock: one call per mixer tick instead of one wake-up per packet;
 *             send_batch: a room's tick, each datagram on its own leg's socket, in one call;
 *   rtp.c     parse_rtp (RtpPacket.parse, the same checks) and SequenceTracker (RFC 3550
 *             A.1, the same SequenceUpdate results);
 *   jitter.c  JitterBuffer (control/media/jitter.py, the same policy and floating point);
 *   mix.c     level_db (stream.level_db) and mix_minus (MixRoom._mix_minus below the
 *             limiter's knee, with the G.711 table encode).
 *
 * This file: the Python classes the C returns (configure), shared helpers, the module.
 */

#include "media.h"

PyObject *packet_type, *rtp_error, *frame_type, *lost_type, *stats_type, *update_type;
PyObject *arrival_queued, *arrival_duplicate, *arrival_late, *arrival_reset, *arrival_ignored;
PyObject *s_payload_type, *s_sequence, *s_timestamp, *s_ssrc, *s_payload, *s_marker, *s_csrcs,
    *s_extension_profile, *s_extension, *s_padding, *s_version, *s_packet, *s_underrun, *s_valid,
    *s_extended_seq, *s_new_source, *s_resynced;

int set_field(PyObject *obj, PyObject *name, PyObject *value) {
    if (value == NULL)
        return -1;
    int rc = PyObject_GenericSetAttr(obj, name, value);
    Py_DECREF(value);
    return rc;
}

long long pymod(long long a, long long m) {
    long long r = a % m;
    return r < 0 ? r + m : r;
}

long long seq_delta(long long a, long long b) {
    long long d = pymod(a - b, 1LL << 16);
    return d >= (1LL << 15) ? d - (1LL << 16) : d;
}

long long ts_delta(long long a, long long b) {
    long long d = pymod(a - b, 1LL << 32);
    return d >= (1LL << 31) ? d - (1LL << 32) : d;
}


/* --- configure ------------------------------------------------------------------------ */


static int arrival_member(PyObject *arrival, const char *name, PyObject **slot) {
    PyObject *member = PyObject_GetAttrString(arrival, name);
    if (member == NULL)
        return -1;
    Py_XSETREF(*slot, member);
    return 0;
}

PyDoc_STRVAR(configure_doc,
"configure(RtpPacket, RtpError, Frame, Lost, Arrival, JitterStats, SequenceUpdate)\n\n"
"The Python classes the C returns (control.media.rtp, control.media.jitter).");

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *classes[7];
    if (!PyArg_ParseTuple(args, "OOOOOOO:configure", &classes[0], &classes[1], &classes[2],
                          &classes[3], &classes[4], &classes[5], &classes[6]))
        return NULL;
    for (int i = 0; i < 7; i++) {
        if (!PyType_Check(classes[i])) {
            PyErr_SetString(PyExc_TypeError, "configure() takes seven classes");
            return NULL;
        }
    }
    if (arrival_member(classes[4], "QUEUED", &arrival_queued) < 0 ||
        arrival_member(classes[4], "DUPLICATE", &arrival_duplicate) < 0 ||
        arrival_member(classes[4], "LATE", &arrival_late) < 0 ||
        arrival_member(classes[4], "RESET", &arrival_reset) < 0 ||
        arrival_member(classes[4], "IGNORED", &arrival_ignored) < 0)
        return NULL;
    PyObject **slots[] = {&packet_type, &rtp_error, &frame_type, &lost_type,
                          NULL,         &stats_type, &update_type};
    for (int i = 0; i < 7; i++) {
        if (slots[i] != NULL)
            Py_XSETREF(*slots[i], Py_NewRef(classes[i]));
    }
    Py_RETURN_NONE;
}

/* --- module --------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_media", "The embedded mixer's per-packet work in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__media(void) {
#define INTERN(var, text)                                                                     \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                      \
        return NULL;
    INTERN(s_payload_type, "payload_type");
    INTERN(s_sequence, "sequence");
    INTERN(s_timestamp, "timestamp");
    INTERN(s_ssrc, "ssrc");
    INTERN(s_payload, "payload");
    INTERN(s_marker, "marker");
    INTERN(s_csrcs, "csrcs");
    INTERN(s_extension_profile, "extension_profile");
    INTERN(s_extension, "extension");
    INTERN(s_padding, "padding");
    INTERN(s_version, "version");
    INTERN(s_packet, "packet");
    INTERN(s_underrun, "underrun");
    INTERN(s_valid, "valid");
    INTERN(s_extended_seq, "extended_seq");
    INTERN(s_new_source, "new_source");
    INTERN(s_resynced, "resynced");
#undef INTERN
    if (PyType_Ready(&JitterType) < 0 || PyType_Ready(&TrackerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddFunctions(m, io_methods) < 0 || PyModule_AddFunctions(m, rtp_methods) < 0 ||
        PyModule_AddFunctions(m, mix_methods) < 0 ||
        PyModule_AddObjectRef(m, "JitterBuffer", (PyObject *)&JitterType) < 0 ||
        PyModule_AddObjectRef(m, "SequenceTracker", (PyObject *)&TrackerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* The jitter buffer (control/media/jitter.py) in C. */

#include "media.h"

#include <math.h>
#include <stdlib.h>

/* --- JitterBuffer --------------------------------------------------------------------- */

/* control/media/jitter.py's JitterBuffer, line for line: the same policy, the same
 * floating-point operations in the same order, the packets in a dict keyed by extended
 * sequence number as there.  Python's None is -1 / a flag here. */

enum { J_IDLE, J_BUFFERING, J_PLAYING };

typedef struct {
    PyObject_HEAD
    int clock_rate;
    double min_delay, max_delay, jitter_factor;
    int adapt_window, max_concealed, max_misorder;
    long long nominal_ticks, frame_ticks;
    int has_ssrc;
    unsigned long ssrc;
    double jitter;
    int has_prev;
    double prev_arrival;
    long long prev_ts;
    PyObject *packets; /* dict: extended sequence (int) -> RtpPacket */
    int state;
    int has_max_ext, has_next, has_bad_seq, has_window_min;
    long long max_ext, next, bad_seq, window_min;
    double first_arrival;
    long long underruns, window_ticks;
    long long st_received, st_played, st_lost, st_concealed, st_dropped, st_duplicates,
        st_late, st_resets;
} Jitter;


static double j_frame_duration(Jitter *j) { return (double)j->frame_ticks / (double)j->clock_rate; }

static double j_target_delay(Jitter *j) {
    double want = j_frame_duration(j) + j->jitter_factor * j->jitter;
    double low = j->min_delay >= want ? j->min_delay : want; /* max(min_delay, want) */
    return j->max_delay <= low ? j->max_delay : low;          /* min(max_delay, ...) */
}

static int j_flush(Jitter *j) {
    PyObject *fresh = PyDict_New();
    if (fresh == NULL)
        return -1;
    Py_XSETREF(j->packets, fresh);
    j->state = J_IDLE;
    j->has_max_ext = j->has_next = j->has_bad_seq = j->has_window_min = 0;
    j->first_arrival = 0.0;
    j->underruns = 0;
    j->window_ticks = 0;
    return 0;
}

static int j_reset_all(Jitter *j) {
    if (j_flush(j) < 0)
        return -1;
    j->has_ssrc = 0;
    j->jitter = 0.0;
    j->has_prev = 0;
    j->frame_ticks = j->nominal_ticks;
    return 0;
}

/* min and max key of the packets (the dict is never more than a few frames long). */
static int j_bounds(Jitter *j, long long *lo, long long *hi) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int any = 0;
    while (PyDict_Next(j->packets, &pos, &key, &value)) {
        long long k = PyLong_AsLongLong(key);
        if (!any || k < *lo)
            *lo = k;
        if (!any || k > *hi)
            *hi = k;
        any = 1;
    }
    return any;
}

static long long j_depth(Jitter *j) {
    long long lo = 0, hi = 0;
    if (!j_bounds(j, &lo, &hi))
        return 0;
    long long start = j->has_next ? j->next : lo;
    return hi - start + 1;
}

/* dict.pop(key, None): a new reference or NULL (absent, or an error set). */
static PyObject *j_pop(Jitter *j, long long ext) {
    PyObject *key = PyLong_FromLongLong(ext);
    if (key == NULL)
        return NULL;
    PyObject *value = PyDict_GetItemWithError(j->packets, key);
    if (value != NULL) {
        Py_INCREF(value);
        if (PyDict_DelItem(j->packets, key) < 0)
            Py_CLEAR(value);
    }
    Py_DECREF(key);
    return value;
}

static long long attr_ll(PyObject *obj, PyObject *name, int *ok) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) {
        *ok = 0;
        return 0;
    }
    long long r = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (r == -1 && PyErr_Occurred())
        *ok = 0;
    return r;
}

static int jitter_init(Jitter *j, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"clock_rate", "ptime_ms", "min_delay", "max_delay",
                             "jitter_factor", "adapt_window", "max_concealed", "max_misorder",
                             NULL};
    int ptime_ms = 20;
    j->min_delay = 0.04;
    j->max_delay = 0.3;
    j->jitter_factor = 4.0;
    j->adapt_window = 50;
    j->max_concealed = 10;
    j->max_misorder = 100;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|$idddiii:JitterBuffer", kwlist,
                                     &j->clock_rate, &ptime_ms, &j->min_delay, &j->max_delay,
                                     &j->jitter_factor, &j->adapt_window, &j->max_concealed,
                                     &j->max_misorder))
        return -1;
    if (j->min_delay > j->max_delay) {
        PyErr_SetString(PyExc_ValueError, "min_delay above max_delay");
        return -1;
    }
    if (j->clock_rate <= 0) {
        PyErr_SetString(PyExc_ValueError, "clock_rate must be positive");
        return -1;
    }
    long long product = (long long)j->clock_rate * ptime_ms; /* Python's floor division: */
    j->nominal_ticks = product >= 0 ? product / 1000 : -((-product + 999) / 1000);
    j->frame_ticks = j->nominal_ticks;
    j->has_ssrc = 0;
    j->jitter = 0.0;
    j->has_prev = 0;
    j->st_received = j->st_played = j->st_lost = j->st_concealed = 0;
    j->st_dropped = j->st_duplicates = j->st_late = j->st_resets = 0;
    return j_flush(j);
}

static void jitter_dealloc(Jitter *j) {
    Py_XDECREF(j->packets);
    Py_TYPE(j)->tp_free((PyObject *)j);
}

static void j_observe(Jitter *j, PyObject *packet, long long ext, double arrival,
                      long long timestamp, int marker, int *ok) {
    if (j->has_prev) {
        long long dts = ts_delta(timestamp, j->prev_ts);
        if (llabs(dts) < 10LL * j->clock_rate) {
            double d = (arrival - j->prev_arrival) - (double)dts / (double)j->clock_rate;
            j->jitter += (fabs(d) - j->jitter) / 16.0;
        }
    }
    j->has_prev = 1;
    j->prev_arrival = arrival;
    j->prev_ts = timestamp;
    PyObject *key = PyLong_FromLongLong(ext - 1);
    if (key == NULL) {
        *ok = 0;
        return;
    }
    PyObject *before = PyDict_GetItemWithError(j->packets, key); /* borrowed */
    Py_DECREF(key);
    if (before == NULL) {
        if (PyErr_Occurred())
            *ok = 0;
        return;
    }
    if (!marker) {
        long long step = ts_delta(timestamp, attr_ll(before, s_timestamp, ok));
        if (*ok && 0 < step && step <= j->clock_rate / 5)
            j->frame_ticks = step;
    }
}

static PyObject *jitter_put(Jitter *j, PyObject *args) {
    PyObject *packet;
    double arrival;
    int ok = 1;
    if (!PyArg_ParseTuple(args, "Od:put", &packet, &arrival))
        return NULL;
    unsigned long ssrc = (unsigned long)attr_ll(packet, s_ssrc, &ok);
    long long seq = attr_ll(packet, s_sequence, &ok);
    long long timestamp = attr_ll(packet, s_timestamp, &ok);
    if (!ok)
        return NULL;
    PyObject *m = PyObject_GetAttr(packet, s_marker);
    if (m == NULL)
        return NULL;
    int marker = PyObject_IsTrue(m);
    Py_DECREF(m);
    if (marker < 0)
        return NULL;

    j->st_received += 1;
    PyObject *result = arrival_queued;
    if (!j->has_ssrc || ssrc != j->ssrc) {
        if (j->has_ssrc) {
            j->st_resets += 1;
            result = arrival_reset;
        }
        if (j_reset_all(j) < 0)
            return NULL;
        j->has_ssrc = 1;
        j->ssrc = ssrc;
    }
    long long ext;
    if (!j->has_max_ext) {
        ext = seq;
    } else {
        ext = j->max_ext + seq_delta(seq, j->max_ext & 0xFFFF);
        long long floor, lo = 0, hi = 0;
        if (j->has_next)
            floor = j->next;
        else
            floor = j_bounds(j, &lo, &hi) ? lo : ext;
        long long max_gap =
            (long long)(j->max_delay / j_frame_duration(j)) * 2 + j->max_misorder;
        if (ext - floor > max_gap || ext < floor - j->max_misorder) {
            if (ext > floor || (j->has_bad_seq && seq == j->bad_seq)) {
                j->st_resets += 1;
                if (j_flush(j) < 0)
                    return NULL;
                j->has_prev = 0;
                ext = seq;
                result = arrival_reset;
            } else {
                j->has_bad_seq = 1;
                j->bad_seq = (seq + 1) & 0xFFFF;
                return Py_NewRef(arrival_ignored);
            }
        }
    }
    j->has_bad_seq = 0;
    if (j->has_next && ext < j->next) {
        j->st_late += 1;
        return Py_NewRef(arrival_late);
    }
    PyObject *key = PyLong_FromLongLong(ext);
    if (key == NULL)
        return NULL;
    int present = PyDict_Contains(j->packets, key);
    if (present != 0) {
        Py_DECREF(key);
        if (present < 0)
            return NULL;
        j->st_duplicates += 1;
        return Py_NewRef(arrival_duplicate);
    }
    j_observe(j, packet, ext, arrival, timestamp, marker, &ok);
    if (!ok || PyDict_SetItem(j->packets, key, packet) < 0) {
        Py_DECREF(key);
        return NULL;
    }
    Py_DECREF(key);
    if (!j->has_max_ext || ext > j->max_ext) {
        j->has_max_ext = 1;
        j->max_ext = ext;
    }
    if (j->state == J_IDLE) {
        j->state = J_BUFFERING;
        j->first_arrival = arrival;
    }
    return Py_NewRef(result);
}

static int j_drop(Jitter *j, long long frames) {
    for (long long i = 0; i < frames; i++) {
        if (PyDict_GET_SIZE(j->packets) == 0)
            return 0;
        PyObject *packet = j_pop(j, j->next);
        if (packet != NULL) {
            j->st_dropped += 1;
            Py_DECREF(packet);
        } else if (PyErr_Occurred()) {
            return -1;
        } else {
            j->st_lost += 1;
        }
        j->next += 1;
    }
    return 0;
}

static int j_adapt(Jitter *j) {
    long long depth = j_depth(j);
    double frame = j_frame_duration(j);
    if ((double)depth * frame > j->max_delay) {
        long long keep = (long long)(j_target_delay(j) / frame);
        if (j_drop(j, depth - (keep > 1 ? keep : 1)) < 0)
            return -1;
        depth = j_depth(j);
    }
    if (!j->has_window_min || depth < j->window_min)
        j->window_min = depth;
    j->has_window_min = 1;
    j->window_ticks += 1;
    if (j->window_ticks < j->adapt_window)
        return 0;
    long long surplus =
        (long long)(((double)j->window_min * frame - j_target_delay(j)) / frame + 1e-9);
    j->window_ticks = 0;
    j->has_window_min = 0;
    if (surplus >= 1) {
        long long half = surplus / 2;
        return j_drop(j, half > 1 ? half : 1);
    }
    return 0;
}

static PyObject *make_frame(PyObject *packet) {
    PyObject *frame = ((PyTypeObject *)frame_type)->tp_alloc((PyTypeObject *)frame_type, 0);
    if (frame == NULL)
        return NULL;
    if (PyObject_GenericSetAttr(frame, s_packet, packet) < 0)
        Py_CLEAR(frame);
    return frame;
}

static PyObject *make_lost(long long seq, int underrun) {
    PyObject *lost = ((PyTypeObject *)lost_type)->tp_alloc((PyTypeObject *)lost_type, 0);
    if (lost == NULL)
        return NULL;
    if (set_field(lost, s_sequence, PyLong_FromLongLong(seq)) < 0 ||
        set_field(lost, s_underrun, PyBool_FromLong(underrun)) < 0)
        Py_CLEAR(lost);
    return lost;
}

static PyObject *jitter_get(Jitter *j, PyObject *arg) {
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (j->state == J_IDLE)
        Py_RETURN_NONE;
    if (j->state == J_BUFFERING) {
        if (now < j->first_arrival + j_target_delay(j) - j_frame_duration(j))
            Py_RETURN_NONE;
        long long lo = 0, hi = 0;
        j_bounds(j, &lo, &hi);
        j->state = J_PLAYING;
        j->has_next = 1;
        j->next = lo;
        j->window_ticks = 0;
        j->has_window_min = 0;
    }
    if (j_adapt(j) < 0)
        return NULL;
    PyObject *packet = j_pop(j, j->next);
    if (packet != NULL) {
        j->next += 1;
        j->underruns = 0;
        j->st_played += 1;
        PyObject *frame = make_frame(packet);
        Py_DECREF(packet);
        return frame;
    }
    if (PyErr_Occurred())
        return NULL;
    if (PyDict_GET_SIZE(j->packets)) {
        long long seq = j->next & 0xFFFF;
        j->next += 1;
        j->underruns = 0;
        j->st_lost += 1;
        return make_lost(seq, 0);
    }
    j->underruns += 1;
    if (j->underruns > j->max_concealed) {
        j->state = J_IDLE;
        j->underruns = 0;
        Py_RETURN_NONE;
    }
    j->st_concealed += 1;
    return make_lost(j->next & 0xFFFF, 1);
}

static PyObject *jitter_reset(Jitter *j, PyObject *unused) {
    if (j_reset_all(j) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *jitter_frame_duration(Jitter *j, void *c) {
    return PyFloat_FromDouble(j_frame_duration(j));
}
static PyObject *jitter_jitter(Jitter *j, void *c) { return PyFloat_FromDouble(j->jitter); }
static PyObject *jitter_target(Jitter *j, void *c) {
    return PyFloat_FromDouble(j_target_delay(j));
}
static PyObject *jitter_depth(Jitter *j, void *c) { return PyLong_FromLongLong(j_depth(j)); }
static PyObject *jitter_playing(Jitter *j, void *c) { return PyBool_FromLong(j->state == J_PLAYING); }
static PyObject *jitter_stats(Jitter *j, void *c) {
    /* A JitterStats snapshot (Python's is live; nothing writes to it from outside). */
    return PyObject_CallFunction(stats_type, "LLLLLLLL", j->st_received, j->st_played,
                                 j->st_lost, j->st_concealed, j->st_dropped, j->st_duplicates,
                                 j->st_late, j->st_resets);
}

static PyGetSetDef jitter_getset[] = {
    {"frame_duration", (getter)jitter_frame_duration, NULL, NULL, NULL},
    {"jitter", (getter)jitter_jitter, NULL, "interarrival jitter, seconds (RFC 3550 A.8)", NULL},
    {"target_delay", (getter)jitter_target, NULL, NULL, NULL},
    {"depth", (getter)jitter_depth, NULL, NULL, NULL},
    {"playing", (getter)jitter_playing, NULL, NULL, NULL},
    {"stats", (getter)jitter_stats, NULL, "a JitterStats snapshot", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef jitter_members[] = {
    {"clock_rate", T_INT, offsetof(Jitter, clock_rate), READONLY, NULL},
    {"min_delay", T_DOUBLE, offsetof(Jitter, min_delay), 0, NULL},
    {"max_delay", T_DOUBLE, offsetof(Jitter, max_delay), 0, NULL},
    {"jitter_factor", T_DOUBLE, offsetof(Jitter, jitter_factor), 0, NULL},
    {"adapt_window", T_INT, offsetof(Jitter, adapt_window), 0, NULL},
    {"max_concealed", T_INT, offsetof(Jitter, max_concealed), 0, NULL},
    {"max_misorder", T_INT, offsetof(Jitter, max_misorder), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef jitter_methods[] = {
    {"put", (PyCFunction)jitter_put, METH_VARARGS, "put(packet, arrival) -> Arrival"},
    {"get", (PyCFunction)jitter_get, METH_O, "get(now) -> Frame | Lost | None"},
    {"reset", (PyCFunction)jitter_reset, METH_NOARGS, "forget everything, as for a new stream"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject JitterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "control.media.native._media.JitterBuffer",
    .tp_basicsize = sizeof(Jitter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "control.media.jitter.JitterBuffer in C: the same policy and results.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)jitter_init,
    .tp_dealloc = (destructor)jitter_dealloc,
    .tp_methods = jitter_methods,
    .tp_members = jitter_members,
    .tp_getset = jitter_getset,
};

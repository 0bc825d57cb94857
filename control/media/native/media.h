/* Shared by the C files of control.media.native._media (the module: _media.c). */

#ifndef CHORUS_MEDIA_H
#define CHORUS_MEDIA_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stddef.h>
#include <stdint.h>

/* The Python classes configure() was given (control.media.rtp, control.media.jitter). */
extern PyObject *packet_type, *rtp_error, *frame_type, *lost_type, *stats_type, *update_type;
extern PyObject *arrival_queued, *arrival_duplicate, *arrival_late, *arrival_reset,
    *arrival_ignored;

/* Attribute names, interned once. */
extern PyObject *s_payload_type, *s_sequence, *s_timestamp, *s_ssrc, *s_payload, *s_marker,
    *s_csrcs, *s_extension_profile, *s_extension, *s_padding, *s_version, *s_packet,
    *s_underrun, *s_valid, *s_extended_seq, *s_new_source, *s_resynced;

/* object.__setattr__(obj, name, value), stealing value (NULL: an error already set). */
int set_field(PyObject *obj, PyObject *name, PyObject *value);
/* Python's a % m (never negative), and RFC 3550's wrap-around differences. */
long long pymod(long long a, long long m);
long long seq_delta(long long a, long long b);
long long ts_delta(long long a, long long b);

extern PyMethodDef io_methods[];  /* io.c: recvmmsg / sendto batches */
extern PyMethodDef rtp_methods[]; /* rtp.c: parse_rtp */
extern PyMethodDef mix_methods[]; /* mix.c: level_db, mix_minus */
extern PyTypeObject TrackerType;  /* rtp.c: SequenceTracker */
extern PyTypeObject JitterType;   /* jitter.c: JitterBuffer */

#endif

/* control.media.native._media: the embedded mixer's per-packet work in C.
 *
 * Python (control/media/rtp.py, stream.py, mixer.py) is the reference; this module does
 * the same work without the interpreter per packet:
 *
 *   recv_batch   every datagram waiting on a set of UDP sockets, by recvmmsg, with the
 *                kernel's arrival time (SO_TIMESTAMPNS) on the monotonic clock the event
 *                loop uses: one call per mixer tick instead of one wake-up per packet;
 *   send_batch   a tick's datagrams, each on its own leg's socket, in one call;
 *   parse_rtp    RtpPacket.parse (RFC 3550 §5.1, the same checks, the same RtpPacket);
 *   level_db     stream.level_db (RMS level of an int16 frame in dBFS).
 *
 * No state beyond the RtpPacket/RtpError classes given to configure() and a receive
 * buffer; no allocation per packet beyond the Python objects returned.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 16          /* datagrams per recvmmsg call */
#define DGRAM_MAX 65536   /* a whole UDP datagram, as asyncio's recvfrom reads it */

static PyObject *packet_type = NULL; /* control.media.rtp.RtpPacket */
static PyObject *rtp_error = NULL;   /* control.media.rtp.RtpError */

/* RtpPacket field names, interned once. */
static PyObject *s_payload_type, *s_sequence, *s_timestamp, *s_ssrc, *s_payload, *s_marker,
    *s_csrcs, *s_extension_profile, *s_extension, *s_padding, *s_version;

static unsigned char (*bufs)[DGRAM_MAX] = NULL;

/* --- configure ------------------------------------------------------------------------ */

static PyObject *frame_type, *lost_type, *stats_type;
static PyObject *arrival_queued, *arrival_duplicate, *arrival_late, *arrival_reset,
    *arrival_ignored;

static int arrival_member(PyObject *arrival, const char *name, PyObject **slot) {
    PyObject *member = PyObject_GetAttrString(arrival, name);
    if (member == NULL)
        return -1;
    Py_XSETREF(*slot, member);
    return 0;
}

PyDoc_STRVAR(configure_doc,
"configure(RtpPacket, RtpError, Frame, Lost, Arrival, JitterStats)\n\n"
"The Python classes the C returns (control.media.rtp, control.media.jitter).");

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *classes[6];
    if (!PyArg_ParseTuple(args, "OOOOOO:configure", &classes[0], &classes[1], &classes[2],
                          &classes[3], &classes[4], &classes[5]))
        return NULL;
    for (int i = 0; i < 6; i++) {
        if (!PyType_Check(classes[i])) {
            PyErr_SetString(PyExc_TypeError, "configure() takes six classes");
            return NULL;
        }
    }
    if (arrival_member(classes[4], "QUEUED", &arrival_queued) < 0 ||
        arrival_member(classes[4], "DUPLICATE", &arrival_duplicate) < 0 ||
        arrival_member(classes[4], "LATE", &arrival_late) < 0 ||
        arrival_member(classes[4], "RESET", &arrival_reset) < 0 ||
        arrival_member(classes[4], "IGNORED", &arrival_ignored) < 0)
        return NULL;
    PyObject **slots[] = {&packet_type, &rtp_error, &frame_type, &lost_type, NULL, &stats_type};
    for (int i = 0; i < 6; i++) {
        if (slots[i] != NULL)
            Py_XSETREF(*slots[i], Py_NewRef(classes[i]));
    }
    Py_RETURN_NONE;
}

/* --- time ----------------------------------------------------------------------------- */

static double ts_seconds(const struct timespec *t) {
    return (double)t->tv_sec + (double)t->tv_nsec * 1e-9;
}

/* CLOCK_REALTIME minus CLOCK_MONOTONIC (time.monotonic, the event loop's clock). */
static double realtime_offset(double *mono_now) {
    struct timespec real, mono;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_REALTIME, &real);
    *mono_now = ts_seconds(&mono);
    return ts_seconds(&real) - *mono_now;
}

static PyObject *enable_timestamps(PyObject *self, PyObject *arg) {
    int fd = PyObject_AsFileDescriptor(arg);
    int on = 1;
    if (fd < 0)
        return NULL;
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* --- addresses ------------------------------------------------------------------------ */

/* (host, port) as the mixer's _RtpProtocol builds it from asyncio's address. */
static PyObject *address(const struct sockaddr_storage *sa) {
    char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    int port;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        if (in6->sin6_scope_id) { /* as CPython's socket module: "fe80::1%eth0" */
            size_t n = strlen(host);
            char name[IF_NAMESIZE];
            if (if_indextoname(in6->sin6_scope_id, name) != NULL)
                snprintf(host + n, sizeof host - n, "%%%s", name);
            else
                snprintf(host + n, sizeof host - n, "%%%u", in6->sin6_scope_id);
        }
        port = ntohs(in6->sin6_port);
    } else {
        host[0] = '\0';
        port = 0;
    }
    return Py_BuildValue("(si)", host, port);
}

/* An IP literal and port into a sockaddr; 0 when `host` is not a literal (a name). */
static int literal(const char *host, int port, struct sockaddr_storage *sa, socklen_t *len) {
    memset(sa, 0, sizeof *sa);
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
        char plain[INET6_ADDRSTRLEN];
        const char *pct = strchr(host, '%');
        if (pct != NULL) {
            size_t n = (size_t)(pct - host);
            if (n >= sizeof plain)
                return 0;
            memcpy(plain, host, n);
            plain[n] = '\0';
            in6->sin6_scope_id = if_nametoindex(pct + 1);
            if (in6->sin6_scope_id == 0)
                return 0;
            host = plain;
        }
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            return 0;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 1;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
        return 0;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    *len = sizeof *in;
    return 1;
}

/* --- recv_batch ----------------------------------------------------------------------- */

/* errors.append((index, err)); -1 with an exception set when that fails. */
static int append_error(PyObject *errors, Py_ssize_t index, int err) {
    PyObject *item = Py_BuildValue("(ni)", index, err);
    int rc = item != NULL ? PyList_Append(errors, item) : -1;
    Py_XDECREF(item);
    return rc;
}

PyDoc_STRVAR(recv_batch_doc,
"recv_batch(fds, max_per_fd) -> (packets, errors)\n\n"
"Every datagram waiting on each socket (at most max_per_fd each), without blocking.\n"
"packets: [(index, data, (host, port), arrival)], arrival on time.monotonic's clock\n"
"(the kernel's receive time with SO_TIMESTAMPNS, else now); errors: [(index, errno)].");

static PyObject *recv_batch(PyObject *self, PyObject *args) {
    PyObject *fds_arg, *fds = NULL, *packets = NULL, *errors = NULL;
    int max_per_fd;
    struct mmsghdr msgs[BATCH];
    struct iovec iovs[BATCH];
    struct sockaddr_storage addrs[BATCH];
    char controls[BATCH][CMSG_SPACE(sizeof(struct timespec)) + 64];
    double mono_now, offset;

    if (!PyArg_ParseTuple(args, "Oi:recv_batch", &fds_arg, &max_per_fd))
        return NULL;
    if (bufs == NULL) {
        bufs = PyMem_RawMalloc(sizeof(*bufs) * BATCH);
        if (bufs == NULL)
            return PyErr_NoMemory();
    }
    fds = PySequence_Fast(fds_arg, "recv_batch: fds must be a sequence of ints");
    if (fds == NULL)
        return NULL;
    packets = PyList_New(0);
    errors = PyList_New(0);
    if (packets == NULL || errors == NULL)
        goto fail;
    offset = realtime_offset(&mono_now);
    Py_ssize_t nfds = PySequence_Fast_GET_SIZE(fds);
    for (Py_ssize_t index = 0; index < nfds; index++) {
        int fd = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(fds, index));
        if (fd == -1 && PyErr_Occurred())
            goto fail;
        int left = max_per_fd;
        while (left > 0) {
            int want = left < BATCH ? left : BATCH;
            for (int i = 0; i < want; i++) {
                iovs[i].iov_base = bufs[i];
                iovs[i].iov_len = DGRAM_MAX;
                memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                msgs[i].msg_hdr.msg_name = &addrs[i];
                msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
                msgs[i].msg_hdr.msg_iov = &iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_hdr.msg_control = controls[i];
                msgs[i].msg_hdr.msg_controllen = sizeof controls[i];
            }
            int got;
            Py_BEGIN_ALLOW_THREADS
            got = recvmmsg(fd, msgs, (unsigned int)want, MSG_DONTWAIT, NULL);
            Py_END_ALLOW_THREADS
            if (got < 0) {
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK && append_error(errors, index, errno) < 0)
                    goto fail;
                break;
            }
            for (int i = 0; i < got; i++) {
                double arrival = mono_now;
                struct msghdr *h = &msgs[i].msg_hdr;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
                    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                        struct timespec t;
                        memcpy(&t, CMSG_DATA(c), sizeof t);
                        arrival = ts_seconds(&t) - offset;
                        if (arrival > mono_now)
                            arrival = mono_now;
                    }
                }
                PyObject *addr = address(&addrs[i]);
                if (addr == NULL)
                    goto fail;
                PyObject *item = Py_BuildValue("(ny#Nd)", index, (const char *)bufs[i],
                                               (Py_ssize_t)msgs[i].msg_len, addr, arrival);
                if (item == NULL || PyList_Append(packets, item) < 0) {
                    Py_XDECREF(item);
                    goto fail;
                }
                Py_DECREF(item);
            }
            left -= got;
            if (got < want)
                break;
        }
    }
    Py_DECREF(fds);
    return Py_BuildValue("(NN)", packets, errors);
fail:
    Py_XDECREF(fds);
    Py_XDECREF(packets);
    Py_XDECREF(errors);
    return NULL;
}

/* --- send_batch ----------------------------------------------------------------------- */

PyDoc_STRVAR(send_batch_doc,
"send_batch(items) -> errors\n\n"
"items: [(fd, data, host, port)]; each datagram sent on its own socket without blocking.\n"
"errors: [(index, errno)], errno 0 when host is not an IP literal (the caller resolves it).");

static PyObject *send_batch(PyObject *self, PyObject *arg) {
    PyObject *items = PySequence_Fast(arg, "send_batch: items must be a sequence");
    PyObject *errors = NULL;
    if (items == NULL)
        return NULL;
    errors = PyList_New(0);
    if (errors == NULL)
        goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t index = 0; index < n; index++) {
        PyObject *item = PySequence_Fast_GET_ITEM(items, index);
        int fd, port;
        const char *data, *host;
        Py_ssize_t size;
        struct sockaddr_storage sa;
        socklen_t salen;
        int err = 0;
        if (!PyArg_ParseTuple(item, "iy#si:send_batch item", &fd, &data, &size, &host, &port))
            goto fail;
        if (port < 0 || port > 65535 || !literal(host, port, &sa, &salen)) {
            err = 0; /* not for us: the caller falls back to the transport */
        } else {
            ssize_t sent;
            do {
                sent = sendto(fd, data, (size_t)size, MSG_DONTWAIT, (struct sockaddr *)&sa, salen);
            } while (sent < 0 && errno == EINTR);
            if (sent >= 0)
                continue;
            err = errno;
        }
        if (append_error(errors, index, err) < 0)
            goto fail;
    }
    Py_DECREF(items);
    return errors;
fail:
    Py_DECREF(items);
    Py_XDECREF(errors);
    return NULL;
}

/* --- parse_rtp ------------------------------------------------------------------------ */

static PyObject *rtp_fail(const char *message) {
    PyErr_SetString(rtp_error != NULL ? rtp_error : PyExc_ValueError, message);
    return NULL;
}

static int set_field(PyObject *obj, PyObject *name, PyObject *value) {
    /* object.__setattr__: RtpPacket is a frozen dataclass with slots. */
    if (value == NULL)
        return -1;
    int rc = PyObject_GenericSetAttr(obj, name, value);
    Py_DECREF(value);
    return rc;
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

static PyObject *s_packet, *s_underrun;

static long long pymod(long long a, long long m) {
    long long r = a % m;
    return r < 0 ? r + m : r;
}

static long long seq_delta(long long a, long long b) {
    long long d = pymod(a - b, 1LL << 16);
    return d >= (1LL << 15) ? d - (1LL << 16) : d;
}

static long long ts_delta(long long a, long long b) {
    long long d = pymod(a - b, 1LL << 32);
    return d >= (1LL << 31) ? d - (1LL << 32) : d;
}

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

static PyTypeObject JitterType = {
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

/* --- module --------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, configure_doc},
    {"enable_timestamps", enable_timestamps, METH_O,
     "enable_timestamps(fd): SO_TIMESTAMPNS, the arrival times recv_batch reports"},
    {"recv_batch", recv_batch, METH_VARARGS, recv_batch_doc},
    {"send_batch", send_batch, METH_O, send_batch_doc},
    {"parse_rtp", parse_rtp, METH_O, parse_rtp_doc},
    {"level_db", level_db, METH_O, level_db_doc},
    {"mix_minus", mix_minus, METH_VARARGS, mix_minus_doc},
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
#undef INTERN
    if (PyType_Ready(&JitterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "JitterBuffer", (PyObject *)&JitterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

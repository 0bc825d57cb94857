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

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
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

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *ptype, *err;
    if (!PyArg_ParseTuple(args, "OO:configure", &ptype, &err))
        return NULL;
    if (!PyType_Check(ptype) || !PyType_Check(err)) {
        PyErr_SetString(PyExc_TypeError, "configure(RtpPacket, RtpError) takes two classes");
        return NULL;
    }
    Py_INCREF(ptype);
    Py_INCREF(err);
    Py_XSETREF(packet_type, ptype);
    Py_XSETREF(rtp_error, err);
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

/* --- module --------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "configure(RtpPacket, RtpError): parse_rtp's classes"},
    {"enable_timestamps", enable_timestamps, METH_O,
     "enable_timestamps(fd): SO_TIMESTAMPNS, the arrival times recv_batch reports"},
    {"recv_batch", recv_batch, METH_VARARGS, recv_batch_doc},
    {"send_batch", send_batch, METH_O, send_batch_doc},
    {"parse_rtp", parse_rtp, METH_O, parse_rtp_doc},
    {"level_db", level_db, METH_O, level_db_doc},
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
#undef INTERN
    return PyModule_Create(&module);
}

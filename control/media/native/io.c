/* The mixer's socket work: every leg's datagrams per tick, and the tick's sends. */

#include "media.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 16          /* datagrams per recvmmsg call */
#define DGRAM_MAX 65536   /* a whole UDP datagram, as asyncio's recvfrom reads it */

static unsigned char (*bufs)[DGRAM_MAX] = NULL;

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

PyMethodDef io_methods[] = {
    {"enable_timestamps", enable_timestamps, METH_O,
     "enable_timestamps(fd): SO_TIMESTAMPNS, the arrival times recv_batch reports"},
    {"recv_batch", recv_batch, METH_VARARGS, recv_batch_doc},
    {"send_batch", send_batch, METH_O, send_batch_doc},
    {NULL, NULL, 0, NULL},
};

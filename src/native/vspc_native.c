/*
 * vspc_native: the few system calls Node.js does not offer and the access methods
 * need (docs/decisions/0010-own-native-addon-for-ptys.md). Plain C on Node-API (no
 * C++ and no dependency), each function a thin wrapper around one or two calls:
 *
 *   openPty()              -> { fd, path }  a pseudo-terminal master (non-blocking,
 *                                           close-on-exec) whose slave is in raw mode
 *                                           (cfmakeraw) and closed again
 *   dupFd(fd)              -> fd            a close-on-exec duplicate
 *   ptySlaveOpen(fd)       -> boolean       whether some process has the slave open
 *                                           (no POLLHUP on the master)
 *   flushPtyOutput(fd, both) -> undefined   discard what was written to the master and
 *                                           not read from the slave yet (TCOFLUSH); with
 *                                           `both`, also what the slave wrote (TCIOFLUSH)
 *   peerCredentials(fd)    -> { pid, uid, gid }  SO_PEERCRED of a connected unix socket
 *
 * Errors are thrown as Error objects whose `code` is the errno name (`EIO`, ...).
 * Linux only (the pty and SO_PEERCRED parts are Linux's); the module is loaded lazily
 * by src/access/common/native.ts, which reports it missing instead of failing.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  const char *name = strerrorname_np(err);
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, name ? name : "EUNKNOWN", msg);
  return NULL;
}

static int fd_arg(napi_env env, napi_callback_info info, int *fd) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t value;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &value) != napi_ok || value < 0) {
    napi_throw_type_error(env, "EINVAL", "expected a file descriptor");
    return -1;
  }
  *fd = value;
  return 0;
}

static napi_value open_pty(napi_env env, napi_callback_info info) {
  (void)info;
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return throw_errno(env, "posix_openpt", errno);
  char path[128];
  if (grantpt(master) != 0 || unlockpt(master) != 0 || ptsname_r(master, path, sizeof path) != 0) {
    int err = errno;
    close(master);
    return throw_errno(env, "unlockpt/ptsname", err);
  }
  /* Raw from the start: no echo (which would send the VM its own output back), no line
     editing, no CR/NL translation, 8 bits. A program that opens the slave may change it;
     its settings stay while the master is open, as on a real serial port. */
  int slave = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) {
    int err = errno;
    close(master);
    return throw_errno(env, "open pty slave", err);
  }
  struct termios t;
  if (tcgetattr(slave, &t) != 0) {
    int err = errno;
    close(slave);
    close(master);
    return throw_errno(env, "tcgetattr", err);
  }
  cfmakeraw(&t);
  t.c_cflag |= CLOCAL | CREAD;
  cfsetispeed(&t, B115200);
  cfsetospeed(&t, B115200);
  if (tcsetattr(slave, TCSANOW, &t) != 0) {
    int err = errno;
    close(slave);
    close(master);
    return throw_errno(env, "tcsetattr", err);
  }
  close(slave);
  int flags = fcntl(master, F_GETFL);
  if (flags < 0 || fcntl(master, F_SETFL, flags | O_NONBLOCK) != 0) {
    int err = errno;
    close(master);
    return throw_errno(env, "fcntl O_NONBLOCK", err);
  }
  napi_value result, fd_value, path_value;
  napi_create_object(env, &result);
  napi_create_int32(env, master, &fd_value);
  napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &path_value);
  napi_set_named_property(env, result, "fd", fd_value);
  napi_set_named_property(env, result, "path", path_value);
  return result;
}

static napi_value dup_fd(napi_env env, napi_callback_info info) {
  int fd;
  if (fd_arg(env, info, &fd) != 0) return NULL;
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return throw_errno(env, "dup", errno);
  napi_value result;
  napi_create_int32(env, copy, &result);
  return result;
}

static napi_value pty_slave_open(napi_env env, napi_callback_info info) {
  int fd;
  if (fd_arg(env, info, &fd) != 0) return NULL;
  struct pollfd p = {fd, POLLIN, 0};
  int r;
  do r = poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, "poll", errno);
  if (p.revents & POLLNVAL) return throw_errno(env, "poll", EBADF);
  napi_value result;
  napi_get_boolean(env, (p.revents & POLLHUP) == 0, &result);
  return result;
}

static napi_value flush_pty_output(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  bool both = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "expected a file descriptor");
    return NULL;
  }
  if (argc > 1) napi_get_value_bool(env, argv[1], &both);
  if (tcflush(fd, both ? TCIOFLUSH : TCOFLUSH) != 0) return throw_errno(env, "tcflush", errno);
  return NULL;
}

static napi_value peer_credentials(napi_env env, napi_callback_info info) {
  int fd;
  if (fd_arg(env, info, &fd) != 0) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return throw_errno(env, "getsockopt SO_PEERCRED", errno);
  napi_value result, pid, uid, gid;
  napi_create_object(env, &result);
  napi_create_int32(env, cred.pid, &pid);
  napi_create_uint32(env, cred.uid, &uid);
  napi_create_uint32(env, cred.gid, &gid);
  napi_set_named_property(env, result, "pid", pid);
  napi_set_named_property(env, result, "uid", uid);
  napi_set_named_property(env, result, "gid", gid);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"openPty", NULL, open_pty, NULL, NULL, NULL, napi_default, NULL},
      {"dupFd", NULL, dup_fd, NULL, NULL, NULL, napi_default, NULL},
      {"ptySlaveOpen", NULL, pty_slave_open, NULL, NULL, NULL, napi_default, NULL},
      {"flushPtyOutput", NULL, flush_pty_output, NULL, NULL, NULL, napi_default, NULL},
      {"peerCredentials", NULL, peer_credentials, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

/*
 * qemu's image locks from Node: fcntl(F_OFD_SETLK / F_OFD_GETLK) on one byte range of an open
 * file. OFD locks belong to the open file description, not the process, so two opens in one
 * process conflict like two processes do, and closing another descriptor of the file does not
 * drop them. Built by `npm run build:native`; src/engine/image-lock.ts works without it.
 *
 * setlk(fd, start, len, type) -> 0 or -errno        type: 0 unlock, 1 shared, 2 exclusive
 * getlk(fd, start, len, type) -> 0 free, 1/2 the type of a conflicting lock, or -errno
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <node_api.h>

static napi_value run(napi_env env, napi_callback_info info, int cmd) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t fd = -1, type = 0;
  int64_t start = 0, len = 0;
  napi_value out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &start) != napi_ok ||
      napi_get_value_int64(env, argv[2], &len) != napi_ok || napi_get_value_int32(env, argv[3], &type) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected (fd, start, len, type) numbers");
    return NULL;
  }
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type == 0 ? F_UNLCK : type == 1 ? F_RDLCK : F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  int result = 0;
  if (fcntl(fd, cmd, &fl) < 0) result = -errno;
  else if (cmd == F_OFD_GETLK) result = fl.l_type == F_UNLCK ? 0 : fl.l_type == F_RDLCK ? 1 : 2;
  napi_create_int32(env, result, &out);
  return out;
}

static napi_value setlk(napi_env env, napi_callback_info info) { return run(env, info, F_OFD_SETLK); }
static napi_value getlk(napi_env env, napi_callback_info info) { return run(env, info, F_OFD_GETLK); }

NAPI_MODULE_INIT() {
  napi_value f;
  napi_create_function(env, "setlk", NAPI_AUTO_LENGTH, setlk, NULL, &f);
  napi_set_named_property(env, exports, "setlk", f);
  napi_create_function(env, "getlk", NAPI_AUTO_LENGTH, getlk, NULL, &f);
  napi_set_named_property(env, exports, "getlk", f);
  return exports;
}

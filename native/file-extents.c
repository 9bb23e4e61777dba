/*
 * Where a file's holes are, from Node: lseek(SEEK_DATA / SEEK_HOLE), which Node's fs does not
 * offer. A raw image's holes then read as zero without being read, as qemu's file driver finds
 * them. Built by `npm run build:native`; src/engine/file-extents.ts works without it (every byte
 * is then data).
 *
 * dataRun(fd, offset, end) -> n > 0: [offset, offset + n) holds data (or may: a file system
 * without SEEK_DATA reports all data); n < 0: [offset, offset - n) is a hole, reading as zeros;
 * never 0, never past `end`. Past the file's size is a hole (SEEK_HOLE finds the end of the
 * file; ENXIO at or past it), as it reads as zeros.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <unistd.h>
#include <node_api.h>

static napi_value data_run(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd = -1;
  int64_t offset = 0, end = 0;
  napi_value out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &end) != napi_ok || offset < 0 || end <= offset) {
    napi_throw_type_error(env, NULL, "expected (fd, offset, end) with 0 <= offset < end");
    return NULL;
  }
  int64_t run = end - offset; /* unknown: data */
  off_t data = lseek(fd, offset, SEEK_DATA);
  if (data < 0) {
    /* ENXIO: no data at or after offset (offset is below the size: the rest is a hole). */
    if (errno == ENXIO) run = -(end - offset);
  } else if (data > offset) {
    run = -((data < end ? data : end) - offset);
  } else {
    off_t hole = lseek(fd, offset, SEEK_HOLE);
    if (hole > offset && hole < end) run = hole - offset;
  }
  napi_create_int64(env, run, &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value f;
  napi_create_function(env, "dataRun", NAPI_AUTO_LENGTH, data_run, NULL, &f);
  napi_set_named_property(env, exports, "dataRun", f);
  return exports;
}

/* error.c: the runtime's one way to report failure.
 *
 * Runtime functions never print or exit; they format a message into the
 * caller's nnc_rt_error and return -1. nnc_rt_fail does both in one call so
 * an error path reads `return nnc_rt_fail(err, "...", ...);`. A NULL err is
 * allowed (the caller does not want the text).
 */
#include "nnc_rt.h"

#include <stdarg.h>

int nnc_rt_fail(nnc_rt_error *err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return -1;
}

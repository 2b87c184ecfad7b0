/* fuzz_npy.c: libFuzzer target for the NumPy reader (runtime/npy.c): the
 * input is a features file and a labels file (split as fuzz_util.h says);
 * the first byte of the labels part picks class labels or targets. Any
 * input loads or fails with a message; loaded values are finite. */
#include <math.h>

#include "fuzz_util.h"
#include "nnc_rt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_parts p = fz_split(data, size);
  int is_class = p.blen && (p.b[0] & 1);
  const char *x = fz_file(0, "x.npy", p.a, p.alen);
  const char *y = fz_file(1, "y.npy", p.b + (p.blen > 0), p.blen - (p.blen > 0));
  nnc_rt_dataset ds;
  nnc_rt_error err;
  if (nnc_rt_load_npy(&ds, x, y, is_class, &err) == 0) {
    for (int64_t i = 0; i < ds.n * ds.sample_size; i++)
      if (!isfinite(ds.x[i])) abort();
    for (int64_t i = 0; ds.targets && i < ds.n * ds.target_size; i++)
      if (!isfinite(ds.targets[i])) abort();
    nnc_rt_dataset_free(&ds);
  }
  return 0;
}

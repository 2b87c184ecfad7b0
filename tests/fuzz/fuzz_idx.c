/* fuzz_idx.c: libFuzzer target for the IDX reader (runtime/idx.c), raw and
 * gzip: the input is an images file and a labels file (split as
 * fuzz_util.h says). Any input loads or fails with a message; a loaded set
 * is consistent (its sample size is the product of its shape, with no
 * wrap-around, its labels below num_classes). */
#include "fuzz_util.h"
#include "nnc_rt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_parts p = fz_split(data, size);
  const char *images = fz_file(0, "images", p.a, p.alen);
  const char *labels = fz_file(1, "labels", p.b, p.blen);
  nnc_rt_dataset ds;
  nnc_rt_error err;
  if (nnc_rt_load_idx(&ds, images, labels, 1.0f / 255, &err) == 0) {
    /* The shape's product, computed without wrapping, is the sample size. */
    int64_t n = 1, total;
    for (int i = 0; i < ds.rank; i++)
      if (__builtin_mul_overflow(n, ds.shape[i], &n)) abort();
    if (n != ds.sample_size || __builtin_mul_overflow(n, ds.n, &total)) abort();
    for (int64_t i = 0; i < ds.n; i++)
      if (ds.labels[i] < 0 || ds.labels[i] >= ds.num_classes) abort();
    nnc_rt_dataset_free(&ds);
  }
  return 0;
}

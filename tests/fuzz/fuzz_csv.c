/* fuzz_csv.c: libFuzzer target for the CSV reader (runtime/csv.c). The
 * first byte picks the options (header row, label column, class labels or
 * targets, a class limit); the rest is the file. Any input loads or fails
 * with a message; loaded values are finite and labels within the limit. */
#include <math.h>

#include "fuzz_util.h"
#include "nnc_rt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  nnc_rt_csv_opts o = {.header = data[0] & 1,
                       .label_column = (int64_t)((data[0] >> 1) & 3) - 2,
                       .label_is_class = (data[0] >> 3) & 1,
                       .num_classes = (data[0] >> 4) & 7};
  const char *path = fz_file(0, "data.csv", data + 1, size - 1);
  nnc_rt_dataset ds;
  nnc_rt_error err;
  if (nnc_rt_load_csv(&ds, path, &o, &err) == 0) {
    /* A NUL byte is in no number: none may be past the header line. */
    const uint8_t *body = data + 1, *end = data + size, *nl = memchr(body, '\n', size - 1);
    if (o.header) body = nl ? nl : end;
    if (memchr(body, 0, (size_t)(end - body))) abort();
    for (int64_t i = 0; i < ds.n * ds.sample_size; i++)
      if (!isfinite(ds.x[i])) abort();
    for (int64_t i = 0; ds.labels && i < ds.n; i++)
      if (ds.labels[i] < 0 || (o.num_classes && ds.labels[i] >= o.num_classes)) abort();
    nnc_rt_dataset_free(&ds);
  }
  return 0;
}

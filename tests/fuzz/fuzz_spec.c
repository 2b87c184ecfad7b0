/* fuzz_spec.c: libFuzzer target for the training spec text that trainers
 * carry and `nnc run` hands over (runtime/spec.c, format in
 * docs/runtime.md). Any text parses or fails with a message. */
#include <stdlib.h>
#include <string.h>

#include "nnc_rt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = 0; /* the spec is a C string in the trainer */
  nnc_rt_spec s;
  nnc_rt_error err;
  if (nnc_rt_spec_parse(&s, text, "fuzz spec", &err) == 0) nnc_rt_spec_free(&s);
  free(text);
  return 0;
}

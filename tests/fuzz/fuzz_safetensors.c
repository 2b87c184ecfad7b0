/* fuzz_safetensors.c: libFuzzer target for safetensors files as
 * checkpoints (runtime/safetensors.c, checkpoint.c, ckpt_show.c): the
 * header's JSON, each entry's dtype/shape/offsets and the training
 * position in "__metadata__". The first byte picks the load (a resume of
 * everything, weights only, or with a glob); the rest is the file, loaded
 * into a fixed three-tensor model and listed as `nnc show` would. Any file
 * loads or fails with a message; a loaded position is within its ranges
 * and its RNG states are not all zero. */
#include "fuzz_util.h"
#include "nnc_rt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *sink;
  if (!sink) sink = fopen("/dev/null", "w");
  if (size < 1) return 0;
  nnc_rt_tensor t[3] = {
      {.name = "mlp.w", .role = NNC_RT_PARAM, .rank = 2, .shape = {2, 3}, .offset = 0},
      {.name = "mlp.b", .role = NNC_RT_PARAM, .rank = 1, .shape = {3}, .offset = 64},
      {.name = "opt.m.mlp.b", .role = NNC_RT_OPT_STATE, .rank = 1, .shape = {3}, .offset = 128}};
  nnc_rt_model m = {.arena_bytes = 192, .tensors = t, .ntensors = 3};
  _Alignas(64) char arena[192] = {0};
  const char *glob[1] = {"mlp.*"};
  nnc_rt_ckpt_load_opts o = {.weights_only = data[0] & 1,
                             .only = (data[0] & 2) ? glob : NULL,
                             .nonly = (data[0] & 2) ? 1 : 0};
  const char *path = fz_file(0, "ckpt.safetensors", data + 1, size - 1);
  nnc_rt_train_state st;
  int has = 0;
  nnc_rt_error err;
  if (nnc_rt_checkpoint_load(path, &m, arena, &o, &st, &has, &err) == 0 && has) {
    if (st.epoch < 0 || st.step < 0 || st.best_epoch > st.epoch || st.wait < 0) abort();
    if (!(st.shuffle_rng.s[0] | st.shuffle_rng.s[1] | st.shuffle_rng.s[2] | st.shuffle_rng.s[3]))
      abort();
  }
  nnc_rt_checkpoint_show(sink, path, NULL, 0, &err);
  return 0;
}

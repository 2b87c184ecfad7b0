/* test_checkpoint.c: safetensors checkpoints (safetensors.c, checkpoint.c,
 * json.c).
 *   - The bytes of a saved file: header length, JSON header (every tensor of
 *     every role by name, offsets, 8-byte padding, metadata), raw data.
 *   - A round trip restores every tensor and the training position bit for
 *     bit; weights-only loads skip optimizer state; globs and prefix renames
 *     select and map tensors; F64 files convert, F16 is refused.
 *   - Loading into a different model lists every mismatch, missing and
 *     extra tensor by name and shape, and changes nothing.
 *   - Malformed files: each gives its message with the byte offset.
 *   - Failure injection: the Nth write-class system call fails, for every
 *     N: an error, the previous checkpoint byte-identical, no temporary file;
 *     ENOSPC (disk full) reads as such.
 *   - A child process checkpointing in a loop is SIGKILLed 20 times at random
 *     moments; the checkpoint always loads whole and self-consistent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rt_testutil.h"

static const char *dir;

static int setup(void **state) {
  dir = tu_tmpdir("ckpt");
  return dir ? 0 : -1;
}

static int teardown(void **state) {
  tu_rmdir(dir);
  return 0;
}

/* A model that is only a tensor table over an arena (no steps). */
typedef struct table_model {
  nnc_rt_model m;
  nnc_rt_tensor t[8];
  char *arena;
} table_model;

static void add_tensor(table_model *tm, const char *name, int role, int rank,
                       const int64_t *shape) {
  nnc_rt_tensor *t = &tm->t[tm->m.ntensors++];
  *t = (nnc_rt_tensor){.name = name, .role = role, .rank = rank};
  int64_t n = 1;
  for (int i = 0; i < rank; i++)
    n *= t->shape[i] = shape[i];
  t->offset = (int64_t)tm->m.arena_bytes;
  tm->m.arena_bytes += (size_t)(4 * n + 63) / 64 * 64;
  tm->m.tensors = tm->t;
}

/* Fills every tensor with base + element index / 8. */
static void table_alloc(table_model *tm, float base) {
  tm->arena = malloc(tm->m.arena_bytes);
  for (size_t i = 0; i < tm->m.arena_bytes / 4; i++)
    ((float *)tm->arena)[i] = base + (float)i / 8;
}

static float at(const table_model *tm, int tensor, int64_t i) {
  return ((const float *)(tm->arena + tm->t[tensor].offset))[i];
}

static const nnc_rt_train_state STATE = {
    .epoch = 3,
    .step = 36,
    .seed = UINT64_C(0xFFFFFFFF00000007),
    .shuffle_rng = {{1, UINT64_C(0xFEDCBA9876543210), 3, 4}},
    .augment_rng = {{5, 6, 7, UINT64_MAX}},
    .best_metric = 0.1,
    .best_epoch = 2,
    .wait = 1,
    .wall_s = 12.75,
    .model_hash = "abc123",
};

static void test_file_layout(void **state) {
  tu_lin l;
  tu_lin_make(&l, 4, 1);
  const char *p = tu_path(dir, "layout.safetensors");
  nnc_rt_error err = {{0}};
  nnc_rt_ckpt_save_opts so = {.state = &STATE, .model_hash = "abc123"};
  assert_int_equal(nnc_rt_checkpoint_save(p, &l.m, l.arena, &so, &err), 0);
  size_t len;
  char *b = tu_read(p, &len);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | (unsigned char)b[i];
  assert_int_equal(hlen % 8, 0);
  assert_int_equal(len, 8 + hlen + 6 * 4); /* six f32 scalars */
  char *h = strndup(b + 8, hlen);
  printf("%s\n", h);
  assert_non_null(strstr(h, "\"lin.w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"));
  assert_non_null(
      strstr(h, "\"lin.steps\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}"));
  assert_non_null(
      strstr(h, "\"opt.lin.b.v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[20,24]}"));
  assert_non_null(strstr(h, "\"format\":\"nnc-checkpoint/1\""));
  assert_non_null(strstr(h, "\"model_hash\":\"abc123\""));
  assert_non_null(strstr(h, "\"step\":\"36\""));
  assert_non_null(strstr(h, "\"epoch\":\"3\""));
  assert_non_null(strstr(h, "\"schedule_step\":\"36\""));
  assert_non_null(strstr(h, "\"seed\":\"18446744069414584327\""));
  assert_non_null(strstr(h, "\"rng_shuffle\":\"0000000000000001 fedcba9876543210 "
                            "0000000000000003 0000000000000004\""));
  assert_non_null(strstr(h, "\"best_metric\":\"0.10000000000000001\""));
  /* The data section is the arena's bytes, in table order. */
  assert_memory_equal(b + 8 + hlen, l.arena + l.w_off, 4);
  assert_memory_equal(b + 8 + hlen + 4, l.arena + l.b_off, 4);
  free(h);
  free(b);
  tu_lin_free(&l);
}

static void test_round_trip(void **state) {
  tu_lin a, b;
  tu_lin_make(&a, 4, 1);
  float norm_mean[3] = {1, 2, 3}, norm_std[3] = {4, 5, 6}, back_mean[3] = {0}, back_std[3] = {0};
  nnc_rt_named_tensor extra[2] = {{"data.mean", 1, {3}, norm_mean}, {"data.std", 1, {3}, norm_std}};
  *(float *)(a.arena + a.vw_off) = 0.25f;
  *(float *)(a.arena + a.steps_off) = 17;
  const char *p = tu_path(dir, "rt.safetensors");
  nnc_rt_error err = {{0}};
  nnc_rt_ckpt_save_opts so = {.state = &STATE, .extra = extra, .nextra = 2};
  assert_int_equal(nnc_rt_checkpoint_save(p, &a.m, a.arena, &so, &err), 0);
  tu_lin_make(&b, 4, 2); /* other initial weights */
  assert_true(tu_lin_w(&a) != tu_lin_w(&b));
  nnc_rt_named_tensor back[2] = {{"data.mean", 1, {3}, back_mean}, {"data.std", 1, {3}, back_std}};
  nnc_rt_ckpt_load_opts lo = {.extra = back, .nextra = 2};
  nnc_rt_train_state st;
  int has = 0;
  assert_int_equal(nnc_rt_checkpoint_load(p, &b.m, b.arena, &lo, &st, &has, &err), 0);
  assert_int_equal(has, 1);
  for (int i = 0; i < 6; i++) {
    int64_t off = a.m.tensors[i].offset;
    assert_memory_equal(a.arena + off, b.arena + off, 4);
  }
  assert_memory_equal(back_mean, norm_mean, sizeof norm_mean);
  assert_memory_equal(back_std, norm_std, sizeof norm_std);
  assert_memory_equal(&st, &STATE, sizeof st);
  /* Weights only: optimizer state stays as it was. */
  tu_lin_free(&b);
  tu_lin_make(&b, 4, 2);
  lo = (nnc_rt_ckpt_load_opts){.weights_only = 1};
  /* The file's extra tensors are unknown to a load that does not name them. */
  assert_int_equal(nnc_rt_checkpoint_load(p, &b.m, b.arena, &lo, NULL, NULL, &err), -1);
  assert_non_null(strstr(err.msg, ": 2 tensors do not match the model:\n  data.mean: in the "
                                  "checkpoint (f32[3]) but not in the model\n"));
  lo = (nnc_rt_ckpt_load_opts){.weights_only = 1, .extra = back, .nextra = 2};
  assert_int_equal(nnc_rt_checkpoint_load(p, &b.m, b.arena, &lo, NULL, NULL, &err), 0);
  assert_true(tu_lin_w(&b) == tu_lin_w(&a));
  assert_true(*(float *)(b.arena + b.steps_off) == 17.0f); /* a buffer: loaded */
  assert_true(*(float *)(b.arena + b.vw_off) == 0.0f);     /* optimizer state: not */
  /* A file without training state. */
  const char *q = tu_path(dir, "weights.safetensors");
  assert_int_equal(nnc_rt_checkpoint_save(q, &a.m, a.arena, NULL, &err), 0);
  assert_int_equal(nnc_rt_checkpoint_load(q, &b.m, b.arena, NULL, &st, &has, &err), 0);
  assert_int_equal(has, 0);
  assert_true(isnan(st.best_metric));
  tu_lin_free(&a);
  tu_lin_free(&b);
}

static const int64_t S128[2] = {128, 784}, S256[2] = {256, 784}, S10[2] = {10, 128},
                     B128[1] = {128}, B10[1] = {10}, B256[1] = {256};

/* The checkpoint side: an MLP with a 128-wide hidden layer. */
static void mlp128(table_model *tm) {
  memset(tm, 0, sizeof *tm);
  add_tensor(tm, "mlp.dense1.weight", NNC_RT_PARAM, 2, S128);
  add_tensor(tm, "mlp.dense1.bias", NNC_RT_PARAM, 1, B128);
  add_tensor(tm, "mlp.dense2.weight", NNC_RT_PARAM, 2, S10);
  add_tensor(tm, "mlp.dense2.bias", NNC_RT_PARAM, 1, B10);
  add_tensor(tm, "mlp.extra", NNC_RT_BUFFER, 1, B10);
  table_alloc(tm, 1);
}

static void test_mismatch_report(void **state) {
  table_model src, dst;
  mlp128(&src);
  const char *p = tu_path(dir, "mlp.safetensors");
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_checkpoint_save(p, &src.m, src.arena, NULL, &err), 0);
  /* The model: 256 wide, renamed bias, no mlp.extra, a new head tensor. */
  memset(&dst, 0, sizeof dst);
  add_tensor(&dst, "mlp.dense1.weight", NNC_RT_PARAM, 2, S256);
  add_tensor(&dst, "mlp.dense1.b", NNC_RT_PARAM, 1, B256);
  add_tensor(&dst, "mlp.dense2.weight", NNC_RT_PARAM, 2, S10);
  add_tensor(&dst, "mlp.dense2.bias", NNC_RT_PARAM, 1, B128);
  table_alloc(&dst, -5);
  char *before = malloc(dst.m.arena_bytes);
  memcpy(before, dst.arena, dst.m.arena_bytes);
  assert_int_equal(nnc_rt_checkpoint_load(p, &dst.m, dst.arena, NULL, NULL, NULL, &err), -1);
  printf("%s\n", err.msg);
  char want[1024];
  snprintf(want, sizeof want,
           "%s: 5 tensors do not match the model:\n"
           "  mlp.dense1.weight: checkpoint has f32[128,784], model has f32[256,784]\n"
           "  mlp.dense1.b: missing from the checkpoint (model has f32[256])\n"
           "  mlp.dense2.bias: checkpoint has f32[10], model has f32[128]\n"
           "  mlp.dense1.bias: in the checkpoint (f32[128]) but not in the model\n"
           "  mlp.extra: in the checkpoint (f32[10]) but not in the model",
           p);
  assert_string_equal(err.msg, want);
  /* Nothing was loaded, not even the tensor that matched. */
  assert_memory_equal(before, dst.arena, dst.m.arena_bytes);
  free(before);
  free(src.arena);
  free(dst.arena);
}

static int problem_lines;
static void count_problem(void *user, const char *line) {
  problem_lines++;
}

static void test_many_problems_truncated(void **state) {
  /* 40 missing tensors: err holds what fits, the callback sees all. */
  static char names[40][64];
  table_model tm;
  memset(&tm, 0, sizeof tm);
  nnc_rt_tensor many[40];
  for (int i = 0; i < 40; i++) {
    snprintf(names[i], sizeof names[i], "backbone.block%02d.conv.weight.long_name", i);
    many[i] = (nnc_rt_tensor){.name = names[i], .rank = 2, .shape = {64, 64}, .offset = 0};
  }
  tm.m.tensors = many;
  tm.m.ntensors = 40;
  tm.m.arena_bytes = 64 * 64 * 4;
  table_alloc(&tm, 0);
  table_model src;
  mlp128(&src);
  const char *p = tu_path(dir, "few.safetensors");
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_checkpoint_save(p, &src.m, src.arena, NULL, &err), 0);
  nnc_rt_ckpt_load_opts lo = {.on_problem = count_problem};
  assert_int_equal(nnc_rt_checkpoint_load(p, &tm.m, tm.arena, &lo, NULL, NULL, &err), -1);
  assert_int_equal(problem_lines, 45); /* 40 missing + 5 extra */
  assert_non_null(strstr(err.msg, ": 45 tensors do not match the model:\n  backbone.block00"));
  assert_non_null(strstr(err.msg, " more)"));
  assert_true(strlen(err.msg) < sizeof err.msg - 1);
  free(src.arena);
  free(tm.arena);
}

static void test_globs_and_rename(void **state) {
  table_model src, dst;
  mlp128(&src);
  const char *p = tu_path(dir, "pre.safetensors");
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_checkpoint_save(p, &src.m, src.arena, NULL, &err), 0);
  /* Transfer: the file's "mlp.dense1.*" become the model's "net.body.*";
   * the model's own head is left alone. */
  memset(&dst, 0, sizeof dst);
  add_tensor(&dst, "net.body.dense1.weight", NNC_RT_PARAM, 2, S128);
  add_tensor(&dst, "net.body.dense1.bias", NNC_RT_PARAM, 1, B128);
  add_tensor(&dst, "net.head.weight", NNC_RT_PARAM, 2, S10);
  table_alloc(&dst, -1);
  const char *only[] = {"net.body.*"};
  nnc_rt_ckpt_load_opts lo = {.weights_only = 1,
                              .only = only,
                              .nonly = 1,
                              .strip_prefix = "mlp.",
                              .add_prefix = "net.body."};
  assert_int_equal(nnc_rt_checkpoint_load(p, &dst.m, dst.arena, &lo, NULL, NULL, &err), 0);
  assert_true(at(&dst, 0, 0) == at(&src, 0, 0) && at(&dst, 0, 1000) == at(&src, 0, 1000));
  assert_true(at(&dst, 1, 127) == at(&src, 1, 127));
  assert_true(at(&dst, 2, 0) == -1.0f + (float)(dst.t[2].offset / 4) / 8); /* untouched */
  /* A glob selecting a model tensor the file lacks is an error. */
  const char *head[] = {"net.head.*"};
  lo.only = head;
  assert_int_equal(nnc_rt_checkpoint_load(p, &dst.m, dst.arena, &lo, NULL, NULL, &err), -1);
  assert_non_null(strstr(err.msg, "net.head.weight: missing from the checkpoint (model has "
                                  "f32[10,128])"));
  /* Without globs, renamed file tensors the model lacks are named both ways. */
  lo.nonly = 0;
  assert_int_equal(nnc_rt_checkpoint_load(p, &dst.m, dst.arena, &lo, NULL, NULL, &err), -1);
  assert_non_null(strstr(err.msg, "net.body.extra (renamed from mlp.extra): in the checkpoint "
                                  "(f32[10]) but not in the model"));
  free(src.arena);
  free(dst.arena);
}

/* Writes a safetensors file from a header string and data bytes. */
static const char *raw_file(const char *name, const char *header, const void *data, size_t dlen) {
  size_t hlen = strlen(header);
  char *b = malloc(8 + hlen + dlen);
  for (int i = 0; i < 8; i++)
    b[i] = (char)((uint64_t)hlen >> (8 * i));
  memcpy(b + 8, header, hlen);
  memcpy(b + 8 + hlen, data, dlen);
  const char *p = tu_path(dir, name);
  tu_write(p, b, 8 + hlen + dlen);
  free(b);
  return p;
}

static void test_f64_converts_f16_refused(void **state) {
  table_model tm;
  memset(&tm, 0, sizeof tm);
  const int64_t s3[1] = {3};
  add_tensor(&tm, "w", NNC_RT_PARAM, 1, s3);
  table_alloc(&tm, 0);
  const double d[3] = {0.5, -1e-3, 3.0000001};
  const char *p =
      raw_file("f64.safetensors",
               "{\"w\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,24]}}", d, sizeof d);
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_checkpoint_load(p, &tm.m, tm.arena, NULL, NULL, NULL, &err), 0);
  for (int i = 0; i < 3; i++)
    assert_true(at(&tm, 0, i) == (float)d[i]);
  p = raw_file("f16.safetensors",
               "{\"w\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]}}", d, 6);
  assert_int_equal(nnc_rt_checkpoint_load(p, &tm.m, tm.arena, NULL, NULL, NULL, &err), -1);
  assert_non_null(strstr(err.msg, "1 tensor does not match the model:\n  w: checkpoint has "
                                  "F16[3]; only F32 and F64 tensors load"));
  free(tm.arena);
}

/* NaN and infinities in a checkpoint's tensors are refused with the
 * tensor, element and byte (they would only show later as a NaN loss). */
static void test_non_finite_refused(void **state) {
  table_model tm;
  memset(&tm, 0, sizeof tm);
  const int64_t s3[1] = {3};
  add_tensor(&tm, "w", NNC_RT_PARAM, 1, s3);
  add_tensor(&tm, "v", NNC_RT_PARAM, 1, s3);
  table_alloc(&tm, 0);
  const float f[6] = {0.5f, 1, 2, 3, NAN, 4};
  const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                    "\"v\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[12,24]}}";
  const char *p = raw_file("nan.safetensors", hdr, f, sizeof f);
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_checkpoint_load(p, &tm.m, tm.arena, NULL, NULL, NULL, &err), -1);
  char want[1024];
  snprintf(want, sizeof want,
           "%s: 1 tensor does not match the model:\n  v: element 1 is nan (byte %zu; only finite "
           "values load)",
           p, 8 + strlen(hdr) + 16);
  assert_string_equal(err.msg, want);
  assert_true(at(&tm, 0, 0) == 0); /* nothing loaded */
  const double d[3] = {1, 1e300, 2};
  p = raw_file("inf64.safetensors",
               "{\"w\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,24]}}", d, sizeof d);
  nnc_rt_ckpt_load_opts only_w = {.only = (const char *const[]){"w"}, .nonly = 1};
  assert_int_equal(nnc_rt_checkpoint_load(p, &tm.m, tm.arena, &only_w, NULL, NULL, &err), -1);
  assert_non_null(strstr(err.msg, "w: element 1 is 1e+300 (byte "));
  free(tm.arena);
}

static void test_malformed(void **state) {
  static const struct {
    const char *header, *want;
  } cases[] = {
      {"[1]", "byte 8: not a safetensors file: the header must start with '{'"},
      {"{\"w\" 1}", "byte 13: expected ':' after an object key"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", "byte 8: unclosed '{'"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}",
       "byte 55: tensor 'w': data_offsets [0, 8] hold 8 bytes, the shape needs 4"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
       "byte 55: tensor 'w': data ends at byte 70, past the end of the file (66 bytes)"},
      {"{\"w\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}",
       "byte 22: tensor 'w': unknown dtype \"Q4\""},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
       "byte 37: tensor 'w': \"shape\" must be an array of at most 8 non-negative integers"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
       "byte 65: tensor 'w': unknown field"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
       "byte 66: \"w\" appears twice in the header"},
      {"{\"__metadata__\":{\"a\":1}}", "byte 29: metadata value of \"a\" must be a string"},
      {"{\"a\\u0000\":1}", "byte 11: \\u0000 is not allowed in a string"},
      {"{\"a\":tru}", "byte 13: expected a value"},
      {"{\"a\":01}", "byte 13: number with a leading zero"},
      {"{} x", "byte 11: unexpected text after the JSON value"},
  };
  const float data[1] = {1};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *p = raw_file("bad.safetensors", cases[i].header, data, sizeof data);
    nnc_rt_train_state st;
    tu_lin l;
    tu_lin_make(&l, 4, 1);
    nnc_rt_error err = {{0}};
    assert_int_equal(nnc_rt_checkpoint_load(p, &l.m, l.arena, NULL, &st, NULL, &err), -1);
    char want[1100];
    snprintf(want, sizeof want, "%s: %s", p, cases[i].want);
    printf("  %s\n", err.msg);
    assert_string_equal(err.msg, want);
    tu_lin_free(&l);
  }
  /* Length field problems. */
  const char *p = tu_path(dir, "short.safetensors");
  tu_write(p, "\x05\0\0", 3);
  nnc_rt_error err = {{0}};
  tu_lin l;
  tu_lin_make(&l, 4, 1);
  assert_int_equal(nnc_rt_checkpoint_load(p, &l.m, l.arena, NULL, NULL, NULL, &err), -1);
  assert_non_null(strstr(err.msg, "short.safetensors: byte 3: file ends inside the 8-byte header "
                                  "length"));
  tu_write(p, "\xff\xff\0\0\0\0\0\0{}", 10);
  assert_int_equal(nnc_rt_checkpoint_load(p, &l.m, l.arena, NULL, NULL, NULL, &err), -1);
  assert_non_null(strstr(
      err.msg, "byte 0: not a safetensors file: header length 65535 runs past the end of the file "
               "(10 bytes)"));
  tu_write(p, "\0\0\0\x10\0\0\0\0{}", 10);
  assert_int_equal(nnc_rt_checkpoint_load(p, &l.m, l.arena, NULL, NULL, NULL, &err), -1);
  assert_non_null(strstr(
      err.msg, "byte 0: not a safetensors file: header length 268435456 is over the 100 MB limit"));
  tu_lin_free(&l);
}

/* ---- Failure injection ---- */

typedef struct fail_at {
  int64_t index; /* fail this call (-1: none) */
  int errnum;
  int64_t calls; /* calls seen */
  char what[16][16];
} fail_at;

static int fail_hook(void *user, int64_t call, const char *what) {
  fail_at *f = user;
  if (call < 16) snprintf(f->what[call], sizeof f->what[0], "%s", what);
  f->calls = call + 1;
  return call == f->index ? f->errnum : 0;
}

static int count_files(void) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static void test_injected_failures(void **state) {
  tu_lin l;
  tu_lin_make(&l, 4, 1);
  const char *p = tu_path(dir, "inject.safetensors");
  nnc_rt_error err = {{0}};
  nnc_rt_train_state st = STATE;
  nnc_rt_ckpt_save_opts so = {.state = &st};
  assert_int_equal(nnc_rt_checkpoint_save(p, &l.m, l.arena, &so, &err), 0);
  size_t old_len;
  char *old = tu_read(p, &old_len);
  int files = count_files();
  /* How many calls a save makes. */
  fail_at f = {.index = -1};
  nnc_rt_io_hooks io = {fail_hook, &f};
  so.io = &io;
  st.step = 99;
  *(float *)(l.arena + l.w_off) = 42.0f;
  assert_int_equal(nnc_rt_checkpoint_save(p, &l.m, l.arena, &so, &err), 0);
  int64_t ncalls = f.calls;
  printf("  %lld calls:", (long long)ncalls);
  for (int64_t i = 0; i < ncalls; i++)
    printf(" %s", f.what[i]);
  printf("\n");
  /* open, 2+6 writes (length, header, six tensors), fsync, close, rename,
   * open folder, fsync folder. */
  assert_int_equal(ncalls, 14);
  assert_string_equal(f.what[0], "open");
  assert_string_equal(f.what[11], "rename");
  assert_string_equal(f.what[13], "fsync folder");
  fail_at names = f;
  tu_write(p, old, old_len); /* back to the old checkpoint */
  for (int64_t k = 0; k < ncalls; k++) {
    int is_write = strcmp(names.what[k], "write") == 0;
    f = (fail_at){.index = k, .errnum = is_write ? ENOSPC : EIO};
    assert_int_equal(nnc_rt_checkpoint_save(p, &l.m, l.arena, &so, &err), -1);
    printf("  call %lld: %s\n", (long long)k, err.msg);
    assert_int_equal(count_files(), files); /* no temporary file left */
    size_t len;
    char *now = tu_read(p, &len);
    nnc_rt_train_state back;
    int has;
    tu_lin other;
    tu_lin_make(&other, 4, 3);
    assert_int_equal(nnc_rt_checkpoint_load(p, &other.m, other.arena, NULL, &back, &has, &err), 0);
    if (k <= 11) {
      /* Up to the rename: the old checkpoint, byte for byte. */
      assert_int_equal(len, old_len);
      assert_memory_equal(now, old, len);
      assert_int_equal(back.step, 36);
    } else {
      /* The rename happened: the new checkpoint is complete. */
      assert_int_equal(back.step, 99);
      assert_true(tu_lin_w(&other) == 42.0f);
      tu_write(p, old, old_len);
    }
    if (is_write) assert_non_null(strstr(err.msg, "cannot write: No space left on device"));
    free(now);
    tu_lin_free(&other);
  }
  free(old);
  tu_lin_free(&l);
}

/* ---- Kill -9 while checkpointing ---- */

enum { KILL_ROUNDS = 20, KILL_FLOATS = 1 << 18 };

/* Checkpoint k holds a 1 MB tensor filled with k and step k. */
static void child_loop(const char *p) {
  table_model tm;
  memset(&tm, 0, sizeof tm);
  const int64_t big[1] = {KILL_FLOATS}, small[1] = {7};
  add_tensor(&tm, "big", NNC_RT_PARAM, 1, big);
  add_tensor(&tm, "small", NNC_RT_PARAM, 1, small);
  table_alloc(&tm, 0);
  nnc_rt_train_state st = {.best_metric = NAN};
  nnc_rt_rng_seed(&st.shuffle_rng, 1); /* an all-zero state does not load */
  nnc_rt_rng_seed(&st.augment_rng, 2);
  nnc_rt_ckpt_save_opts so = {.state = &st};
  for (int64_t k = 1;; k++) {
    for (size_t i = 0; i < tm.m.arena_bytes / 4; i++)
      ((float *)tm.arena)[i] = (float)k;
    st.step = k;
    if (nnc_rt_checkpoint_save(p, &tm.m, tm.arena, &so, NULL)) _exit(3);
  }
}

static void test_kill_during_checkpoint(void **state) {
  const char *p = tu_path(dir, "killed.safetensors");
  srand(12345);
  int64_t last_step = 0;
  for (int round = 0; round < KILL_ROUNDS; round++) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) child_loop(p);
    /* Let it get going (on a loaded machine the first checkpoint can take
     * longer than the kill delay: wait for it, up to 10 s), then kill at a
     * random moment (2..32 ms). */
    struct timespec poll = {0, 1000000};
    for (int i = 0; i < 10000 && !tu_exists(p); i++)
      nanosleep(&poll, NULL);
    struct timespec ts = {0, (long)(rand() % 30000) * 1000 + 2000000};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    if (!tu_exists(p)) continue; /* killed before its first checkpoint */
    table_model tm;
    memset(&tm, 0, sizeof tm);
    const int64_t big[1] = {KILL_FLOATS}, small[1] = {7};
    add_tensor(&tm, "big", NNC_RT_PARAM, 1, big);
    add_tensor(&tm, "small", NNC_RT_PARAM, 1, small);
    table_alloc(&tm, -1);
    nnc_rt_train_state st;
    int has;
    nnc_rt_error err = {{0}};
    assert_int_equal(nnc_rt_checkpoint_load(p, &tm.m, tm.arena, NULL, &st, &has, &err), 0);
    assert_true(has && st.step >= 1);
    /* Whole and consistent: every element equals the step it was saved at. */
    const float *big_t = (const float *)(tm.arena + tm.t[0].offset);
    const float *small_t = (const float *)(tm.arena + tm.t[1].offset);
    for (int j = 0; j < KILL_FLOATS; j++)
      assert_true(big_t[j] == (float)st.step);
    for (int j = 0; j < 7; j++)
      assert_true(small_t[j] == (float)st.step);
    last_step = st.step;
    free(tm.arena);
    /* The killed child's temporary file: removed by whoever restarts. */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)pid);
    unlink(tmp);
  }
  printf("  last checkpoint seen at step %lld\n", (long long)last_step);
  assert_true(last_step >= 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_file_layout),        cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_mismatch_report),    cmocka_unit_test(test_many_problems_truncated),
      cmocka_unit_test(test_globs_and_rename),   cmocka_unit_test(test_f64_converts_f16_refused),
      cmocka_unit_test(test_non_finite_refused), cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_injected_failures),  cmocka_unit_test(test_kill_during_checkpoint),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

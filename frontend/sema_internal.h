/* sema_internal.h: state and helpers shared by the semantic-analysis files.
 *
 *   sema.c          declarations, duplicate names, model call cycles, order of work
 *   sema_args.c     matching call arguments to a signature; constant values
 *   sema_data.c     `data` declarations -> nnc_data_config
 *   sema_train.c    the `train` block -> nnc_train_config
 *   sema_model.c    model bodies: names, tensor expressions, shapes -> graph ops
 *   sema_layers.c   the built-in layers and functions, desugared into primitives
 *   sema_loss.c     the graphs around a model: inputs, loss, outputs
 */
#ifndef NNC_SEMA_INTERNAL_H
#define NNC_SEMA_INTERNAL_H

#include "sema.h"

/* Tensors bigger than this many elements are rejected as absurd. */
#define NNC_MAX_ELEMENTS ((int64_t)1 << 32)
#define NNC_MAX_DIM      ((int64_t)INT32_MAX)
enum { NNC_MAX_MODEL_DEPTH = 16, NNC_MAX_DATA = 64 };

typedef struct nnc_sema {
  nnc_arena *arena;
  nnc_diags *diags;
  const nnc_ast *file;
  nnc_ast_list models;       /* MODEL declarations, in file order */
  nnc_ast_list datas;        /* DATA declarations */
  nnc_name_map model_index;  /* name -> index in models */
  nnc_name_map data_index;   /* name -> index in datas */
  nnc_data_config *data_cfg; /* one per DATA declaration, same order */
  bool *model_bad;           /* per model: not to be lowered (cycle) */
  const nnc_ast *train;      /* the TRAIN declaration, or NULL */
  /* TRAIN nodes of --set: settings that replace the file's */
  const nnc_ast *const *overrides;
  int noverrides;
  nnc_train_config cfg;
  int64_t eval_batch;         /* > 0: the eval graph's batch instead of cfg.batch */
  int64_t stat_ranks;         /* ranks whose batches share batch-norm statistics (1: none) */
  int64_t stat_ranks_set;     /* nnc_frontend_options.stat_ranks as given (module->stat_ranks) */
  const nnc_ast *train_model; /* MODEL being trained */
  nnc_span loss_at, metrics_at, early_stop_at; /* where these were set */
  bool metrics_given;
  nnc_span group_at[NNC_MAX_GROUPS];
  nnc_span pattern_at[NNC_MAX_GROUPS][NNC_MAX_PATTERNS];
  nnc_span load_only_at[NNC_MAX_PATTERNS]; /* load = checkpoint(..., only = [...]) */
  nnc_module *module;
  int quiet; /* > 0: errors are not reported (re-lowering code already checked) */
} nnc_sema;

/* ---- sema.c ---- */
/* Report unless s->quiet; every sema file reports through these. */
void nnc_sema_error(nnc_sema *s, nnc_span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void nnc_sema_note(nnc_sema *s, nnc_span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const nnc_ast *nnc_sema_find_model(const nnc_sema *s, const char *name);
int nnc_sema_find_data(const nnc_sema *s, const char *name);

/* ---- sema_args.c ----
 * A signature: parameter names in order; the first npositional may be given
 * by position, the first nrequired must be given. */
typedef struct nnc_sig {
  const char *what; /* for messages: "dense", "adam", "data block" */
  const char *const *names;
  int n, npositional, nrequired;
} nnc_sig;

/* Fills out[i] with the value given for names[i] (NULL if absent). Reports
 * unknown keywords (with a suggestion), duplicates, too many positional
 * arguments and missing required ones; returns false if any. */
bool nnc_sema_match(nnc_sema *s, const nnc_ast *call, const nnc_sig *sig, const nnc_ast **out);
/* A short description of what an expression is, for messages. */
const char *nnc_sema_describe(nnc_sema *s, const nnc_ast *e);
/* Constant values. Each reports (mentioning `what`) and returns false when e
 * is not a constant of that kind or is out of [lo, hi]. */
bool nnc_sema_num(nnc_sema *s, const nnc_ast *e, const char *what, double lo, double hi,
                  double *out);
bool nnc_sema_int(nnc_sema *s, const nnc_ast *e, const char *what, int64_t lo, int64_t hi,
                  int64_t *out);
bool nnc_sema_bool(nnc_sema *s, const nnc_ast *e, const char *what, bool *out);
bool nnc_sema_str(nnc_sema *s, const nnc_ast *e, const char *what, const char **out);
/* A list of strings (or one string); at most max. */
bool nnc_sema_strs(nnc_sema *s, const nnc_ast *e, const char *what, const char **out, int max,
                   int *n);
/* One of the words in choices, written as a name or as a call without
 * arguments (`relu`, `cross_entropy()`); index in *out. */
bool nnc_sema_word(nnc_sema *s, const nnc_ast *e, const char *what, const char *const *choices,
                   int n, int *out);
/* Like nnc_sema_word, but a call may have arguments (`adam(lr = 1e-3)`). */
bool nnc_sema_word_or_call(nnc_sema *s, const nnc_ast *e, const char *what,
                           const char *const *choices, int n, int *out);
/* An initialiser expression (`he_normal()`, `normal(0, 0.01)`, `zeros`). */
bool nnc_sema_init(nnc_sema *s, const nnc_ast *e, int64_t fan_in, int64_t fan_out, nnc_init *out);
/* The callee of a call, or the name of a bare NAME (a call without args). */
const char *nnc_sema_callee(const nnc_ast *e);
/* Reports "duplicate setting" with a note at the first one. */
void nnc_sema_duplicate(nnc_sema *s, const char *what, const nnc_ast *again, const nnc_ast *first);

/* ---- sema_data.c / sema_train.c ---- */
void nnc_sema_data(nnc_sema *s, const nnc_ast *decl, nnc_data_config *out);
void nnc_sema_train(nnc_sema *s);

/* ---- sema_model.c: lowering model bodies into a graph ---- */
typedef struct nnc_value {
  nnc_node *node; /* NULL: a number (is_num) or an error already reported */
  bool batched;   /* first axis is the batch */
  bool is_num;
  double num;
} nnc_value;

typedef struct nnc_lower {
  nnc_sema *s;
  nnc_module *m;
  nnc_graph *g;
  bool training;
  bool failed; /* an error happened (reported or not) */
  int64_t batch;
  int next_stream; /* random stream of the next dropout layer */
  nnc_node *seed, *step;
  const nnc_ast *stack[NNC_MAX_MODEL_DEPTH];
  int depth;
} nnc_lower;

typedef struct nnc_var {
  const char *name;
  nnc_value value;
  nnc_span at;
  bool is_param;
} nnc_var;

typedef struct nnc_scope {
  const char *prefix; /* "mlp", "transfer.cnn" */
  const nnc_ast *model;
  nnc_var *vars;
  int nvars, var_cap;
  /* layer names taken in this scope, for "duplicate layer name" */
  const char **layer_names;
  nnc_span *layer_at;
  int nlayers, layer_cap;
  nnc_name_map layer_index; /* name -> its index in layer_names */
  int counters[32];         /* per layer kind, for default names dense1, dense2, ... */
} nnc_scope;

#define NNC_VALUE_ERROR ((nnc_value){NULL, false, false, 0})

void nnc_lower_error(nnc_lower *L, nnc_span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void nnc_lower_note(nnc_lower *L, nnc_span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "f32[64,784]" into a small arena string. */
const char *nnc_lower_shape_str(nnc_lower *L, const nnc_node *n);
/* Rejects shapes with a zero/negative dim or too many elements. */
bool nnc_lower_check_shape(nnc_lower *L, nnc_span at, const char *what, const nnc_shape *s);
/* Lowers an expression of a model body. */
nnc_value nnc_lower_expr(nnc_lower *L, nnc_scope *sc, const nnc_ast *e);
/* Lowers `model` applied to inputs, under name prefix. Returns its output
 * (checked against the declared output type) or NNC_VALUE_ERROR. */
nnc_value nnc_lower_model(nnc_lower *L, const nnc_ast *model, const char *prefix,
                          const nnc_value *inputs, int ninputs);
/* Parses a TYPE node: dtype (f32 or i32) and per-sample shape. */
bool nnc_lower_type(nnc_sema *s, const nnc_ast *type, nnc_dtype *dtype, nnc_shape *shape);
/* The persistent tensor `name` (created on first use, with the group rules
 * of the training configuration applied); returns its PARAM node. */
nnc_node *nnc_lower_tensor(nnc_lower *L, const char *name, nnc_tensor_role role,
                           const nnc_shape *shape, nnc_init init, nnc_span at);
/* Claims a layer name in a scope; reports a duplicate. Returns the full
 * path "prefix.name". */
const char *nnc_lower_layer_name(nnc_lower *L, nnc_scope *sc, const char *name, nnc_span at);
/* Names and spans every node created since `mark`. */
void nnc_lower_tag(nnc_lower *L, int mark, nnc_span at, const char *name);
/* Elementwise binary op with numpy-style broadcasting (rank-aligned with
 * reshapes); reports incompatible shapes. */
nnc_value nnc_lower_binary(nnc_lower *L, nnc_span at, nnc_op op, const char *opname, nnc_value a,
                           nnc_value b);
/* A float node for v (numbers become rank-0 constants). */
nnc_node *nnc_lower_node(nnc_lower *L, nnc_value v);
/* Whether tensor `name` matches a frozen group. */
bool nnc_lower_is_frozen(const nnc_lower *L, const char *name);

/* ---- sema_layers.c ---- */
/* Lowers a call to a built-in layer or function; *found false if `call`
 * names none (then it may be a model). */
nnc_value nnc_lower_builtin(nnc_lower *L, nnc_scope *sc, const nnc_ast *call, bool *found);
/* The built-in layers and functions, by index (for suggestions). */
int nnc_builtin_count(void);
const char *nnc_builtin_name(int i);

/* ---- sema_loss.c ---- */
/* Builds m->train and m->eval for the trained model. */
bool nnc_sema_build(nnc_sema *s);

#endif

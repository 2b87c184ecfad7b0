/* math.c: transcendental functions as plain LLVM IR.
 *
 * LLVM does not vectorise calls to libm, so the f32 versions of exp, log,
 * tanh, sigmoid and erf are emitted inline as range reduction plus a
 * polynomial (Cephes' single-precision coefficients, 1-2 ulp), with only
 * bit casts, integer shifts and selects besides arithmetic: the loop
 * vectoriser turns them into <16 x float> code. Their instructions carry
 * only the `contract` fast-math flag, so LLVM may fuse multiply-adds but
 * never reassociates the careful parts (Cody-Waite reduction). The f64
 * versions call libm (precision over speed: f64 is for checking).
 * cos is used by schedules on scalars only and calls libm.
 */
#include "cg_internal.h"
#include "cg_loop.h"

#include <string.h>

LLVMValueRef nnc_cg_fm(LLVMValueRef v) {
  if (LLVMCanValueUseFastMathFlags(v))
    LLVMSetFastMathFlags(v, LLVMFastMathAllowReassoc | LLVMFastMathAllowContract |
                                LLVMFastMathAllowReciprocal | LLVMFastMathNoSignedZeros |
                                LLVMFastMathApproxFunc);
  return v;
}

static LLVMValueRef strict(LLVMValueRef v) {
  if (LLVMCanValueUseFastMathFlags(v)) LLVMSetFastMathFlags(v, LLVMFastMathAllowContract);
  return v;
}

static LLVMValueRef call_intrinsic(nnc_cg_math *m, const char *name, LLVMValueRef *args,
                                   unsigned n) {
  LLVMTypeRef t = LLVMTypeOf(args[0]);
  return nnc_cg_call_intrinsic(m->mod, m->b, name, &t, 1, args, n);
}

LLVMValueRef nnc_cg_intrinsic1(nnc_cg_math *m, const char *name, LLVMValueRef x) {
  return nnc_cg_fm(call_intrinsic(m, name, &x, 1));
}

LLVMValueRef nnc_cg_intrinsic2(nnc_cg_math *m, const char *name, LLVMValueRef x, LLVMValueRef y) {
  LLVMValueRef args[2] = {x, y};
  return nnc_cg_fm(call_intrinsic(m, name, args, 2));
}

static bool is_f64(LLVMValueRef x) {
  return LLVMGetTypeKind(LLVMTypeOf(x)) == LLVMDoubleTypeKind;
}

/* double name(double), declared once per module. */
static LLVMValueRef libm1(nnc_cg_math *m, const char *name, LLVMValueRef x) {
  LLVMTypeRef d = LLVMDoubleTypeInContext(m->ctx);
  LLVMTypeRef ft = LLVMFunctionType(d, &d, 1, 0);
  LLVMValueRef fn = LLVMGetNamedFunction(m->mod, name);
  if (!fn) {
    fn = LLVMAddFunction(m->mod, name, ft);
    LLVMAddAttributeAtIndex(
        fn, LLVMAttributeFunctionIndex,
        LLVMCreateEnumAttribute(m->ctx, LLVMGetEnumAttributeKindForName("nounwind", 8), 0));
  }
  return LLVMBuildCall2(m->b, ft, fn, &x, 1, "");
}

/* ---- small builders over the type of x ---- */

static LLVMValueRef c(LLVMValueRef like, double v) {
  return LLVMConstReal(LLVMTypeOf(like), v);
}
static LLVMValueRef add(nnc_cg_math *m, LLVMValueRef x, LLVMValueRef y) {
  return strict(LLVMBuildFAdd(m->b, x, y, ""));
}
static LLVMValueRef sub(nnc_cg_math *m, LLVMValueRef x, LLVMValueRef y) {
  return strict(LLVMBuildFSub(m->b, x, y, ""));
}
static LLVMValueRef mul(nnc_cg_math *m, LLVMValueRef x, LLVMValueRef y) {
  return strict(LLVMBuildFMul(m->b, x, y, ""));
}
static LLVMValueRef fdiv(nnc_cg_math *m, LLVMValueRef x, LLVMValueRef y) {
  return strict(LLVMBuildFDiv(m->b, x, y, ""));
}
static LLVMValueRef lt(nnc_cg_math *m, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildFCmp(m->b, LLVMRealOLT, x, y, "");
}
static LLVMValueRef gt(nnc_cg_math *m, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildFCmp(m->b, LLVMRealOGT, x, y, "");
}
static LLVMValueRef sel(nnc_cg_math *m, LLVMValueRef cnd, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildSelect(m->b, cnd, x, y, "");
}
static LLVMValueRef fabs_(nnc_cg_math *m, LLVMValueRef x) {
  return call_intrinsic(m, "llvm.fabs", &x, 1);
}

/* Horner: ((k[0] x + k[1]) x + ...) + k[n-1]. */
static LLVMValueRef horner(nnc_cg_math *m, LLVMValueRef x, const double *k, int n) {
  LLVMValueRef p = c(x, k[0]);
  for (int i = 1; i < n; i++)
    p = add(m, mul(m, p, x), c(x, k[i]));
  return p;
}

static LLVMValueRef copysign_(nnc_cg_math *m, LLVMValueRef mag, LLVMValueRef sgn) {
  LLVMValueRef args[2] = {mag, sgn};
  return call_intrinsic(m, "llvm.copysign", args, 2);
}

/* ---- exp ---- */

LLVMValueRef nnc_cg_exp(nnc_cg_math *m, LLVMValueRef x) {
  if (is_f64(x)) return nnc_cg_intrinsic1(m, "llvm.exp", x);
  LLVMTypeRef i32 = LLVMInt32TypeInContext(m->ctx);
  /* exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 (in two parts). */
  LLVMValueRef xc = x;
  LLVMValueRef args[2] = {xc, c(x, 88.37)};
  xc = call_intrinsic(m, "llvm.minnum", args, 2);
  args[0] = xc;
  args[1] = c(x, -87.33654);
  xc = call_intrinsic(m, "llvm.maxnum", args, 2);
  LLVMValueRef fx = add(m, mul(m, xc, c(x, 1.44269504088896341)), c(x, 0.5));
  LLVMValueRef n = call_intrinsic(m, "llvm.floor", &fx, 1);
  LLVMValueRef r =
      sub(m, sub(m, xc, mul(m, n, c(x, 0.693359375))), mul(m, n, c(x, -2.12194440e-4)));
  static const double P[] = {1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3,
                             4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1};
  LLVMValueRef p = horner(m, r, P, 6);
  LLVMValueRef y = add(m, add(m, mul(m, mul(m, p, r), r), r), c(x, 1.0));
  LLVMValueRef ni = LLVMBuildFPToSI(m->b, n, i32, "");
  LLVMValueRef bits = LLVMBuildShl(m->b, LLVMBuildAdd(m->b, ni, LLVMConstInt(i32, 127, 0), ""),
                                   LLVMConstInt(i32, 23, 0), "");
  LLVMValueRef scale = LLVMBuildBitCast(m->b, bits, LLVMTypeOf(x), "");
  y = mul(m, y, scale);
  y = sel(m, lt(m, x, c(x, -87.33654)), c(x, 0.0), y);
  y = sel(m, gt(m, x, c(x, 88.7228391)), c(x, __builtin_inf()), y);
  return y;
}

/* ---- log ---- */

LLVMValueRef nnc_cg_log(nnc_cg_math *m, LLVMValueRef x) {
  if (is_f64(x)) return nnc_cg_intrinsic1(m, "llvm.log", x);
  LLVMTypeRef i32 = LLVMInt32TypeInContext(m->ctx), f = LLVMTypeOf(x);
  /* x = mant * 2^e with mant in [sqrt(1/2), sqrt(2)); log = log1p(mant-1) + e ln 2. */
  LLVMValueRef bits = LLVMBuildBitCast(m->b, x, i32, "");
  LLVMValueRef e = LLVMBuildSub(m->b, LLVMBuildLShr(m->b, bits, LLVMConstInt(i32, 23, 0), ""),
                                LLVMConstInt(i32, 126, 0), "");
  LLVMValueRef mb =
      LLVMBuildOr(m->b, LLVMBuildAnd(m->b, bits, LLVMConstInt(i32, 0x807fffff, 0), ""),
                  LLVMConstInt(i32, 0x3f000000, 0), "");
  LLVMValueRef mant = LLVMBuildBitCast(m->b, mb, f, ""); /* [0.5, 1) */
  LLVMValueRef small = lt(m, mant, c(x, 0.707106781186547524));
  e = LLVMBuildSub(m->b, e, LLVMBuildZExt(m->b, small, i32, ""), "");
  LLVMValueRef t = sub(m, add(m, mant, sel(m, small, mant, c(x, 0.0))), c(x, 1.0));
  LLVMValueRef ef = LLVMBuildSIToFP(m->b, e, f, "");
  LLVMValueRef z = mul(m, t, t);
  static const double P[] = {7.0376836292E-2,  -1.1514610310E-1, 1.1676998740E-1,
                             -1.2420140846E-1, 1.4249322787E-1,  -1.6668057665E-1,
                             2.0000714765E-1,  -2.4999993993E-1, 3.3333331174E-1};
  LLVMValueRef y = mul(m, mul(m, horner(m, t, P, 9), t), z);
  y = add(m, y, mul(m, ef, c(x, -2.12194440e-4)));
  y = sub(m, y, mul(m, z, c(x, 0.5)));
  LLVMValueRef r = add(m, add(m, t, y), mul(m, ef, c(x, 0.693359375)));
  r = sel(m, LLVMBuildFCmp(m->b, LLVMRealOEQ, x, c(x, __builtin_inf()), ""), x, r);
  r = sel(m, LLVMBuildFCmp(m->b, LLVMRealOEQ, x, c(x, 0.0), ""), c(x, -__builtin_inf()), r);
  r = sel(m, LLVMBuildFCmp(m->b, LLVMRealULT, x, c(x, 0.0), ""), c(x, __builtin_nan("")), r);
  return r;
}

/* ---- tanh, sigmoid ---- */

LLVMValueRef nnc_cg_tanh(nnc_cg_math *m, LLVMValueRef x) {
  if (is_f64(x)) return libm1(m, "tanh", x);
  LLVMValueRef ax = fabs_(m, x);
  /* |x| < 0.625: odd polynomial; else 1 - 2 / (exp(2|x|) + 1) with x's sign. */
  LLVMValueRef z = mul(m, x, x);
  static const double P[] = {-5.70498872745E-3, 2.06390887954E-2, -5.37397155531E-2,
                             1.33314422036E-1, -3.33332819422E-1};
  LLVMValueRef small = add(m, mul(m, mul(m, horner(m, z, P, 5), z), x), x);
  LLVMValueRef e = nnc_cg_exp(m, add(m, ax, ax));
  LLVMValueRef big = sub(m, c(x, 1.0), fdiv(m, c(x, 2.0), add(m, e, c(x, 1.0))));
  big = copysign_(m, big, x);
  return sel(m, lt(m, ax, c(x, 0.625)), small, big);
}

LLVMValueRef nnc_cg_sigmoid(nnc_cg_math *m, LLVMValueRef x) {
  LLVMValueRef e = nnc_cg_exp(m, strict(LLVMBuildFNeg(m->b, x, "")));
  return fdiv(m, c(x, 1.0), add(m, c(x, 1.0), e));
}

/* ---- erf ---- */

LLVMValueRef nnc_cg_erf(nnc_cg_math *m, LLVMValueRef x) {
  if (is_f64(x)) return libm1(m, "erf", x);
  LLVMValueRef ax = fabs_(m, x), z = mul(m, x, x);
  /* |x| < 0.5: Taylor series 2/sqrt(pi) (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320). */
  static const double T[] = {-1.0 / 1320, 1.0 / 216, -1.0 / 42, 1.0 / 10, -1.0 / 3, 1.0};
  LLVMValueRef small = mul(m, mul(m, horner(m, z, T, 6), x), c(x, 1.12837916709551257));
  /* else Abramowitz-Stegun 7.1.26: 1 - t P(t) exp(-x^2), t = 1/(1 + p|x|). */
  LLVMValueRef t = fdiv(m, c(x, 1.0), add(m, c(x, 1.0), mul(m, ax, c(x, 0.3275911))));
  static const double P[] = {1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592};
  LLVMValueRef poly = mul(m, horner(m, t, P, 5), t);
  LLVMValueRef e = nnc_cg_exp(m, strict(LLVMBuildFNeg(m->b, z, "")));
  LLVMValueRef big = copysign_(m, sub(m, c(x, 1.0), mul(m, poly, e)), x);
  return sel(m, lt(m, ax, c(x, 0.5)), small, big);
}

/* ---- cos, pow ---- */

LLVMValueRef nnc_cg_cos(nnc_cg_math *m, LLVMValueRef x) {
  return call_intrinsic(m, "llvm.cos", &x, 1);
}

LLVMValueRef nnc_cg_pow(nnc_cg_math *m, LLVMValueRef x, LLVMValueRef y) {
  if (is_f64(x)) {
    LLVMValueRef args[2] = {x, y};
    return call_intrinsic(m, "llvm.pow", args, 2);
  }
  return nnc_cg_exp(m, mul(m, y, nnc_cg_log(m, x)));
}

// Fused row gather + add + LayerNorm for XLA:CPU, as an XLA FFI handler.
//
// y[r] = LayerNorm(scale * table[tok[r]] + pos_table[pos[r]]) * gamma + beta
//
// One pass per row: the row is built in a small float32 buffer (it stays in L1),
// its mean and variance are taken from that buffer (two-pass, as the XLA path),
// and it is written out once (an output of 16 MiB or more with non-temporal stores).
// The largest magnitude of a row is looked at only when its statistics overflowed.
// Rows are split over XLA's intra-op thread pool. Outputs of 32 MiB or more (of both
// kernels) are advised into transparent huge pages (see AdviseHugePages).
//
// Index conventions (the Python side resolves the out-of-range policy):
//   idx >= 0  the row to read (already inside the table)
//   idx == -1 a zero row
//   idx == -2 a NaN row
// `tok_scale` is a 1-element buffer (1.0 when there is no scale: an exact multiply);
// `flags` bit 1: a position term, bit 2: gamma, bit 3: beta.
#include <Python.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>

#include <fstream>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace ej {

enum class Kind { kF32, kBf16 };

// Bytes per stored element of a kind.
constexpr int64_t BytesOf(Kind k) { return k == Kind::kF32 ? 4 : 2; }

inline bool KindOf(ffi::DataType t, Kind* k) {
  if (t == ffi::DataType::F32) { *k = Kind::kF32; return true; }
  if (t == ffi::DataType::BF16) { *k = Kind::kBf16; return true; }
  return false;
}

struct Args {
  const void* table;
  const int32_t* tok;
  const void* pos;
  const int32_t* pos_idx;
  const float* gamma;
  const float* beta;
  void* out;
  int64_t d;
  int64_t vocab;     // rows of `table`
  int64_t pos_rows;  // rows of `pos`
  float scale;
  float eps;
  bool has_pos, has_gamma, has_beta;
  bool stream;  // write float32 output rows with non-temporal stores (see Stream)
};

using RowFn = void (*)(const Args&, int64_t, int64_t);
using ScatterFn = void (*)(const float*, const int32_t*, const int64_t*, void*, int64_t, int64_t,
                           int64_t);

}  // namespace ej

// The row kernels, compiled for the baseline instruction set and, on x86-64 with
// GCC, again for AVX2 and AVX-512; the widest one the CPU has is picked at run time.
// Contraction into FMA is off (-ffp-contract=off in setup.py) and every sum keeps
// its 16 explicit accumulators, so all variants give bit-identical results.
namespace ej_generic {
using ej::Args;
using ej::BytesOf;
using ej::Kind;
using ej::RowFn;
using ej::ScatterFn;
#define EJ_VECTOR_FLOATS 4
#include "rows.inc"
#undef EJ_VECTOR_FLOATS
}  // namespace ej_generic

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EJ_MULTI_ISA 1
#pragma GCC push_options
#pragma GCC target("avx2")
namespace ej_avx2 {
using ej::Args;
using ej::BytesOf;
using ej::Kind;
using ej::RowFn;
using ej::ScatterFn;
#define EJ_VECTOR_FLOATS 8
#include "rows.inc"
#undef EJ_VECTOR_FLOATS
}  // namespace ej_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
namespace ej_avx512 {
using ej::Args;
using ej::BytesOf;
using ej::Kind;
using ej::RowFn;
using ej::ScatterFn;
#define EJ_VECTOR_FLOATS 16
#include "rows.inc"
#undef EJ_VECTOR_FLOATS
}  // namespace ej_avx512
#pragma GCC pop_options
#endif

namespace {

using ej::Args;
using ej::BytesOf;
using ej::Kind;
using ej::RowFn;
using ej::ScatterFn;

// The value of an environment variable ("" when unset), read at every call so that one
// process can time both settings side by side.
std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

enum class Isa { kGeneric, kAvx2, kAvx512 };

// The widest instruction set this CPU has, capped by EMBEDDINGS_JAX_CPU_ISA=generic|avx2
// (the tests use the cap to check that every variant gives the same bits).
Isa BestIsa() {
#ifdef EJ_MULTI_ISA
  const std::string cap = Env("EMBEDDINGS_JAX_CPU_ISA");
  if (cap != "generic" && cap != "avx2" && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return Isa::kAvx512;
  if (cap != "generic" && __builtin_cpu_supports("avx2")) return Isa::kAvx2;
#endif
  return Isa::kGeneric;
}

RowFn Pick(Kind kt, Kind kp, Kind ko) {
  switch (BestIsa()) {
#ifdef EJ_MULTI_ISA
    case Isa::kAvx512:
      return ej_avx512::Pick(kt, kp, ko);
    case Isa::kAvx2:
      return ej_avx2::Pick(kt, kp, ko);
#endif
    default:
      return ej_generic::Pick(kt, kp, ko);
  }
}

ScatterFn PickScatter(Kind ko) {
  switch (BestIsa()) {
#ifdef EJ_MULTI_ISA
    case Isa::kAvx512:
      return ej_avx512::PickScatterOut(ko);
    case Isa::kAvx2:
      return ej_avx2::PickScatterOut(ko);
#endif
    default:
      return ej_generic::PickScatterOut(ko);
  }
}

// f(begin, end) over [0, n) in chunks of `grain`, on the caller and XLA's intra-op
// pool: the caller and num_threads - 1 pool tasks, one thread per core of the pool (a
// thread more would be preempted while holding a chunk that the others wait for).
// Tasks that start late find no chunk left and return without calling f (whose
// captures may be gone by then); the caller waits only for chunks that were claimed.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, int64_t grain, F f) {
  const int64_t chunks = (n + grain - 1) / grain;
  const int64_t workers = std::min<int64_t>(pool.num_threads() - 1, chunks - 1);
  if (workers <= 0) {
    f(int64_t{0}, n);
    return;
  }
  struct State {
    State(int64_t c, F fn) : remaining(c), f(std::move(fn)) {}
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> remaining;
    F f;
  };
  auto st = std::make_shared<State>(chunks, std::move(f));
  auto work = [st, n, grain, chunks]() {
    for (;;) {
      const int64_t c = st->next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      st->f(c * grain, std::min(n, (c + 1) * grain));
      st->remaining.fetch_sub(1, std::memory_order_acq_rel);
    }
  };
  for (int64_t w = 0; w < workers; ++w) pool.Schedule([work] { work(); });
  work();
  while (st->remaining.load(std::memory_order_acquire) > 0) std::this_thread::yield();
}

// Whether an output of `bytes` is written with non-temporal stores: from 16 MiB, past
// what a core's share of a server's last-level cache keeps, the output would leave the
// cache anyway, and writing it around the cache saves reading every output line in
// first. EMBEDDINGS_JAX_CPU_STREAM=always|never overrides (the tests check that both
// give the same bits).
bool Stream(int64_t bytes) {
  const std::string force = Env("EMBEDDINGS_JAX_CPU_STREAM");
  if (force == "always") return true;
  if (force == "never") return false;
  return bytes >= (int64_t{16} << 20);
}

// The size of a transparent huge page (Linux), or 0 where there are none: the kernel's
// own figure, read once.
int64_t HugePageBytes() {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const int64_t bytes = [] {
    std::ifstream f("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
    int64_t b = 0;
    return (f >> b) && b > 0 && (b & (b - 1)) == 0 ? b : int64_t{0};
  }();
  return bytes;
#else
  return 0;
#endif
}

// Ask Linux to back the huge-page-aligned interior of an output of `bytes` with
// transparent huge pages (MADV_HUGEPAGE), from 32 MiB. glibc serves an allocation that
// large from a fresh mapping of its own on every call, so every 4 KiB page of the
// output is faulted in, zeroed and torn down again: 16,000 faults for a 64 MiB
// gradient, which cost more than computing it. With the advice (where the system's THP
// mode is "madvise"; "always" needs none, "never" ignores it) that is 32 faults. The
// advice changes no data, and only pages this call writes in full are advised, so it
// adds no memory. Smaller outputs come from glibc's heap, whose mappings other buffers
// share, and are left alone. EMBEDDINGS_JAX_CPU_HUGE_PAGES=never turns the advice off
// (for side-by-side timing).
void AdviseHugePages(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t huge = HugePageBytes();
  if (huge == 0 || bytes < (int64_t{32} << 20)) return;
  if (Env("EMBEDDINGS_JAX_CPU_HUGE_PAGES") == "never") return;
  const uintptr_t mask = static_cast<uintptr_t>(huge) - 1;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + mask) & ~mask;
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) & ~mask;
  if (e > b) (void)madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);  // advice only
#else
  (void)p;
  (void)bytes;
#endif
}

// Rows per chunk of n rows of d: about 64 KiB of float32 output, and at most 64 chunks
// in all. The larger chunks of large outputs measured 5-6% faster at S2 than 64 KiB
// ones (3 in-process runs of 61 rounds), and no different at S1.
inline int64_t RowsPerChunk(int64_t d, int64_t n) {
  return std::max({int64_t{1}, (int64_t{1} << 14) / d, n / 64});
}

ffi::Error EmbedAddLayerNormImpl(ffi::ThreadPool pool, ffi::AnyBuffer table,
                                 ffi::Buffer<ffi::S32> tok, ffi::AnyBuffer pos,
                                 ffi::Buffer<ffi::S32> pos_idx,
                                 ffi::Buffer<ffi::F32> tok_scale,
                                 ffi::Buffer<ffi::F32> gamma, ffi::Buffer<ffi::F32> beta,
                                 ffi::Result<ffi::AnyBuffer> out, float eps,
                                 int32_t flags) {
  Kind kt, kp, ko;
  if (!KindOf(table.element_type(), &kt) || !KindOf(pos.element_type(), &kp) ||
      !KindOf(out->element_type(), &ko))
    return ffi::Error::InvalidArgument("ej_embed_add_layer_norm: dtypes must be f32 or bf16");
  // The Python side guarantees these shapes; a mismatch is a bug, not garbage output.
  auto tdims = table.dimensions();
  auto pdims = pos.dimensions();
  auto odims = out->dimensions();
  if (tdims.size() != 2 || pdims.size() != 2 || odims.size() != 2)
    return ffi::Error::InvalidArgument("ej_embed_add_layer_norm: tables and output must be 2-D");
  const int64_t d = tdims[1];
  const int64_t n = static_cast<int64_t>(tok.element_count());
  const bool has_pos = flags & 2, has_gamma = flags & 4, has_beta = flags & 8;
  if (odims[0] != n || odims[1] != d ||
      (has_pos && (pdims[1] != d || static_cast<int64_t>(pos_idx.element_count()) != n)) ||
      (has_gamma && static_cast<int64_t>(gamma.element_count()) != d) ||
      (has_beta && static_cast<int64_t>(beta.element_count()) != d) ||
      tok_scale.element_count() != 1)
    return ffi::Error::InvalidArgument("ej_embed_add_layer_norm: inconsistent shapes");
  Args a;
  a.table = table.untyped_data();
  a.tok = tok.typed_data();
  a.pos = pos.untyped_data();
  a.pos_idx = pos_idx.typed_data();
  a.gamma = gamma.typed_data();
  a.beta = beta.typed_data();
  a.out = out->untyped_data();
  a.d = d;
  a.vocab = tdims[0];
  a.pos_rows = pdims[0];
  a.scale = tok_scale.typed_data()[0];
  a.eps = eps;
  a.has_pos = has_pos;
  a.has_gamma = has_gamma;
  a.has_beta = has_beta;
  const int64_t out_bytes = n * d * BytesOf(ko);
  a.stream = Stream(out_bytes);
  RowFn fn = Pick(kt, kp, ko);
  if (n == 0 || d == 0) return ffi::Error::Success();
  AdviseHugePages(a.out, out_bytes);
  ParallelFor(pool, n, RowsPerChunk(d, n), [fn, a](int64_t b, int64_t e) { fn(a, b, e); });
  return ffi::Error::Success();
}

// The dense gradient of a row gather: out[v] = sum of ct rows i with idx[i] == v (in
// order of i, in float32, stored as float32 or rounded once to bfloat16), zero
// elsewhere; indices outside [0, V) are dropped. One stable counting
// sort of the indices, then every output row is written once, rows split over the pool.
ffi::Error ScatterAddRowsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> ct,
                              ffi::Buffer<ffi::S32> idx, ffi::Result<ffi::AnyBuffer> out) {
  Kind ko;
  if (!KindOf(out->element_type(), &ko))
    return ffi::Error::InvalidArgument("ej_scatter_add_rows: the output must be f32 or bf16");
  auto odims = out->dimensions();
  if (odims.size() != 2)
    return ffi::Error::InvalidArgument("ej_scatter_add_rows: the output must be 2-D");
  const int64_t vocab = odims[0], d = odims[1];
  const int64_t n = static_cast<int64_t>(idx.element_count());
  if (static_cast<int64_t>(ct.element_count()) != n * d)
    return ffi::Error::InvalidArgument("ej_scatter_add_rows: inconsistent shapes");
  if (vocab == 0 || d == 0) return ffi::Error::Success();
  const int32_t* ix = idx.typed_data();
  std::vector<int64_t> off(static_cast<size_t>(vocab) + 1, 0);
  for (int64_t i = 0; i < n; ++i)
    if (ix[i] >= 0 && ix[i] < vocab) ++off[ix[i] + 1];
  for (int64_t v = 0; v < vocab; ++v) off[v + 1] += off[v];
  std::vector<int32_t> order(static_cast<size_t>(off[vocab]));
  std::vector<int64_t> fill(off.begin(), off.end() - 1);
  for (int64_t i = 0; i < n; ++i)
    if (ix[i] >= 0 && ix[i] < vocab) order[fill[ix[i]]++] = static_cast<int32_t>(i);
  ScatterFn fn = PickScatter(ko);
  const float* c = ct.typed_data();
  void* o = out->untyped_data();
  const int32_t* ord = order.data();
  const int64_t* offs = off.data();
  AdviseHugePages(o, vocab * d * BytesOf(ko));
  // 1 MiB of output per chunk: the zero runs are long, and memset is fastest on those.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / d);
  ParallelFor(pool, vocab, grain, [=](int64_t b, int64_t e) { fn(c, ord, offs, o, d, b, e); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EjEmbedAddLayerNorm, EmbedAddLayerNormImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("eps")
                                  .Attr<int32_t>("flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(EjScatterAddRows, ScatterAddRowsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>());

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_cpu_kernels",
                              "XLA:CPU FFI handlers of embeddings_jax.", -1, nullptr};

static int AddCapsule(PyObject* m, const char* name, XLA_FFI_Handler* fn) {
  PyObject* cap = PyCapsule_New(reinterpret_cast<void*>(fn), nullptr, nullptr);
  if (cap == nullptr) return -1;
  if (PyModule_AddObject(m, name, cap) < 0) {
    Py_DECREF(cap);
    return -1;
  }
  return 0;
}

PyMODINIT_FUNC PyInit__cpu_kernels(void) {
  PyObject* m = PyModule_Create(&kModule);
  if (m == nullptr) return nullptr;
  if (AddCapsule(m, "embed_add_layer_norm", EjEmbedAddLayerNorm) < 0 ||
      AddCapsule(m, "scatter_add_rows", EjScatterAddRows) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}

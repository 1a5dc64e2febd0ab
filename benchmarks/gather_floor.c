/* What a row gather costs on this machine, against a copy of the same size, in C.

   The LayerNorm path of embed_and_add gathers token rows from a large table, adds a
   position row and normalises. This program times the part no kernel can avoid, a
   gather + add with nothing else (no LayerNorm, no checks), against a same-size
   negated copy, both on the same threads with non-temporal stores: a floor for the
   LayerNorm path / copy ratio that `embeddings-jax bench` and
   benchmarks/policy_side_by_side.py report.

   Build and run (x86-64 with AVX2; other machines use plain loops):
     cc -O2 -mavx2 -pthread benchmarks/gather_floor.c -o /tmp/gather_floor
     /tmp/gather_floor [vocab features rows positions threads rounds]
   Defaults: S2 (50257 768 8192 1024), 2 threads, 61 rounds, uniform ids. The table,
   ids and output are allocated as XLA:CPU allocates them (malloc, 4 KiB pages). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

static int64_t V = 50257, D = 768, N = 8192, L = 1024;
static float *table, *pos, *src, *out;
static int32_t *ids;

typedef struct { int64_t begin, end; int gather; } Part;

static void *rows(void *arg) {
  const Part *p = arg;
  for (int64_t r = p->begin; r < p->end; ++r) {
    const float *a = p->gather ? table + (int64_t)ids[r] * D : src + r * D;
    const float *b = pos + (r % L) * D;
    float *o = out + r * D;
    int64_t j = 0;
#if defined(__AVX2__)
    if (D % 8 == 0) {
      for (; j < D; j += 8) {
        __m256 x = _mm256_loadu_ps(a + j);
        x = p->gather ? _mm256_add_ps(x, _mm256_loadu_ps(b + j))
                      : _mm256_sub_ps(_mm256_setzero_ps(), x);
        _mm256_stream_ps(o + j, x);
      }
    }
#endif
    for (; j < D; ++j) o[j] = p->gather ? a[j] + b[j] : -a[j];
  }
#if defined(__AVX2__)
  _mm_sfence();
#endif
  return NULL;
}

static double seconds(int threads, int gather) {
  pthread_t t[64];
  Part parts[64];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int k = 0; k < threads; ++k) {
    parts[k] = (Part){N * k / threads, N * (k + 1) / threads, gather};
    if (k > 0) pthread_create(&t[k], NULL, rows, &parts[k]);
  }
  rows(&parts[0]);
  for (int k = 1; k < threads; ++k) pthread_join(t[k], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc > 4) { V = atoll(argv[1]); D = atoll(argv[2]); N = atoll(argv[3]); L = atoll(argv[4]); }
  int threads = argc > 5 ? atoi(argv[5]) : 2, rounds = argc > 6 ? atoi(argv[6]) : 61;
  if (threads < 1 || threads > 64 || rounds < 1) return 2;
  table = aligned_alloc(64, (size_t)(V * D) * 4);
  pos = aligned_alloc(64, (size_t)(L * D) * 4);
  src = aligned_alloc(64, (size_t)(N * D) * 4);
  out = aligned_alloc(64, (size_t)(N * D) * 4);
  ids = malloc((size_t)N * 4);
  uint64_t s = 88172645463325252ull;  /* xorshift64: uniform ids */
  for (int64_t i = 0; i < V * D; ++i) table[i] = (float)(i % 13);
  for (int64_t i = 0; i < L * D; ++i) pos[i] = 1.0f;
  for (int64_t i = 0; i < N * D; ++i) src[i] = (float)(i % 7);
  for (int64_t i = 0; i < N; ++i) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    ids[i] = (int32_t)(s % (uint64_t)V);
  }
  double *g = malloc(sizeof(double) * rounds), *c = malloc(sizeof(double) * rounds);
  seconds(threads, 1);  /* first touch of the output */
  seconds(threads, 0);
  for (int r = 0; r < rounds; ++r) {  /* interleaved */
    g[r] = seconds(threads, 1);
    c[r] = seconds(threads, 0);
  }
  qsort(g, rounds, sizeof(double), by_value);
  qsort(c, rounds, sizeof(double), by_value);
  printf("vocab %lld, features %lld, rows %lld, %d threads, %d rounds (medians)\n",
         (long long)V, (long long)D, (long long)N, threads, rounds);
  printf("gather + add %.3f ms, copy %.3f ms, gather + add / copy %.2f\n", g[rounds / 2] * 1e3,
         c[rounds / 2] * 1e3, g[rounds / 2] / c[rounds / 2]);
  return 0;
}

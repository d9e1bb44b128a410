/* `motion.vectors_to_flow` in one pass over the vectors (optional, built by pip).
 *
 * The NumPy code of `vectors_to_flow` is the reference (`motion._flow_numpy`: its factors,
 * `_predictions_per_block` and `_scatter_numpy`): this computes the same float64 field, bit for
 * bit. Every sum gets its terms in the reference's order (np.bincount and np.add.at add their
 * entries one after the other), every product and quotient is the reference's, and nothing is
 * contracted into a fused multiply-add (setup: -ffp-contract=off; the pragma is for compilers
 * that honour it).
 *
 *   scatter(vectors, slot, past, future, out_of, w_of, num_rounds, num_frames, gh, gw, num_out,
 *           field)
 *
 *   vectors  bytes-like, N FFmpeg AVMotionVector records of 40 bytes (`motion.MOTION_VECTOR_DTYPE`)
 *   slot     int64 [N], each vector's frame
 *   past     float64 [F], each frame's distance to its past reference
 *   future   float64 [F], each frame's distance to its future reference
 *   out_of   int64 [R, F], each round's output of each frame (-1: not used in that round)
 *   w_of     float64 [R, F], each round's weight of each frame
 *   field    writable float64 [num_out, gh, gw, 2], all of it written (need not be zeroed)
 *
 * A vector counts if its frame is used (round 0 holds every used frame). Each counted vector with
 * motion adds motion * weight * factor, factor = sign / max(scale * distance, 1) (sign -1 for a
 * past reference, +1 for a future one), divided by its block's predictions
 * (`motion._predictions_per_block`) when any counted vector has a future reference.
 * Vectors with zero motion add nothing and are skipped. The GIL is released while it runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF

enum { RECORD = 40, OFF_SOURCE = 0, OFF_W = 4, OFF_H = 5, OFF_DST_X = 10, OFF_DST_Y = 12,
       OFF_MOTION_X = 24, OFF_MOTION_Y = 28, OFF_SCALE = 32 };

static int16_t get_i16(const uint8_t *p) { int16_t v; memcpy(&v, p, 2); return v; }
static int32_t get_i32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }
static uint16_t get_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static int64_t clip(int64_t v, int64_t hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

enum { UNUSED = -1, STATIC = -2, REST = -3 };  /* a vector's kind; >= 0: its macroblock bin */

typedef struct {  /* a block that is not a whole macroblock on the macroblock grid */
  int64_t index;  /* into the vectors */
  int32_t cx0, cy0, nx, ny;  /* its first cell and its extent in cells */
} Rest;

/* How many predictions each moving vector's block has (`motion._predictions_per_block`), where
 * any used vector has a future reference: *count = int64 [N] (NULL where none has; then nothing
 * is averaged). A 16x16 block's are the 16x16 vectors of its macroblock, static ones too; a
 * partitioned block's are its moving vectors, counted per macroblock and block centre on the
 * 4-pixel grid (the centres of all partitions differ within a macroblock): 16 counters for each
 * macroblock that has any. Returns 0, or -1 when out of memory. */
static int predictions(const uint8_t *vec, Py_ssize_t n, const int64_t *slot,
                       const int32_t *kind, int64_t frames, int64_t mbh, int64_t mbw,
                       int64_t **count) {
  int any_future = 0;
  for (Py_ssize_t i = 0; i < n && !any_future; i++) {
    any_future = kind[i] != UNUSED && get_i32(vec + i * RECORD + OFF_SOURCE) > 0;
  }
  *count = NULL;
  if (!any_future) return 0;
  const int64_t bins = frames * (mbh + 1) * (mbw + 1);
  int32_t *whole = calloc((size_t)(bins > 0 ? bins : 1), sizeof(int32_t));
  int64_t *first = malloc((size_t)(bins > 0 ? bins : 1) * sizeof(int64_t));  /* -1, or 16k */
  int64_t *at = malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));  /* each vector's counter */
  int32_t *parts = NULL;
  if (!whole || !first || !at) goto fail;
  for (int64_t b = 0; b < bins; b++) first[b] = -1;
  int64_t num_chunks = 0;
  for (Py_ssize_t i = 0; i < n; i++) {
    if (kind[i] == UNUSED) continue;
    const uint8_t *v = vec + i * RECORD;
    const int64_t dx = get_i16(v + OFF_DST_X), dy = get_i16(v + OFF_DST_Y);
    const int64_t mb = (slot[i] * (mbh + 1) + clip(dy >> 4, mbh)) * (mbw + 1) + clip(dx >> 4, mbw);
    if (v[OFF_W] == 16 && v[OFF_H] == 16) {
      whole[mb]++;
      at[i] = -1 - mb;
    } else if (kind[i] != STATIC) {
      if (first[mb] < 0) first[mb] = 16 * num_chunks++;
      at[i] = first[mb] + ((dy >> 2) & 3) * 4 + ((dx >> 2) & 3);
    }
  }
  parts = calloc((size_t)(num_chunks > 0 ? num_chunks : 1) * 16, sizeof(int32_t));
  if (!parts) goto fail;
  for (Py_ssize_t i = 0; i < n; i++) {
    if (kind[i] != UNUSED && kind[i] != STATIC && at[i] >= 0) parts[at[i]]++;
  }
  for (Py_ssize_t i = 0; i < n; i++) {  /* in place: each moving vector's count (>= 1: itself) */
    if (kind[i] == UNUSED || kind[i] == STATIC) continue;
    at[i] = at[i] < 0 ? whole[-1 - at[i]] : parts[at[i]];
  }
  free(whole);
  free(first);
  free(parts);
  *count = at;
  return 0;
fail:
  free(whole);
  free(first);
  free(parts);
  free(at);
  return -1;
}

/* px/frame per unit of motion_x / motion_y of vector i (the reference's products and quotients:
 * computed again where needed, the same bits each time). */
static double factor(const uint8_t *v, int64_t slot, const double *past, const double *future,
                     const int64_t *count, Py_ssize_t i) {
  const int future_ref = get_i32(v + OFF_SOURCE) > 0;
  const double d = (double)get_u16(v + OFF_SCALE) * (future_ref ? future : past)[slot];
  const double f = (future_ref ? 1.0 : -1.0) / (d < 1.0 ? 1.0 : d);  /* np.maximum: NaN stays */
  return count ? f / (double)count[i] : f;
}

/* Returns 0; -1: out of memory; -2: a slot or output out of range. */
static int scatter(const uint8_t *vec, Py_ssize_t n, const int64_t *slot, const double *past,
                   const double *future, const int64_t *out_of, const double *w_of,
                   int64_t rounds, int64_t frames, int64_t gh, int64_t gw, int64_t num_out,
                   double *field) {
  const int64_t mbh = (gh + 1) / 2, mbw = (gw + 1) / 2, num_mb = mbh * mbw;
  const int64_t cells = gh * gw;
  const size_t vectors = (size_t)(n > 0 ? n : 1);
  double *sums = calloc((size_t)(num_out * num_mb * 2 + 2), sizeof(double));
  Rest *rest = malloc(vectors * sizeof(Rest));
  int32_t *kind = malloc(vectors * sizeof(int32_t));
  int64_t *count = NULL;
  int status = -1;
  if (!sums || !rest || !kind) goto done;
  status = -2;
  for (int64_t k = 0; k < rounds * frames; k++) {  /* indices the caller passed: in bounds */
    if (out_of[k] < -1 || out_of[k] >= num_out) goto done;
  }
  Py_ssize_t num_rest = 0;
  int32_t max_nx = 0, max_ny = 0;
  for (Py_ssize_t i = 0; i < n; i++) {
    const uint8_t *v = vec + i * RECORD;
    if (slot[i] < 0 || slot[i] >= frames) goto done;
    kind[i] = UNUSED;
    if (rounds == 0 || out_of[slot[i]] < 0) continue;  /* a frame no output uses */
    kind[i] = STATIC;
    if (get_i32(v + OFF_MOTION_X) == 0 && get_i32(v + OFF_MOTION_Y) == 0) continue;
    const int16_t dx = get_i16(v + OFF_DST_X), dy = get_i16(v + OFF_DST_Y);
    const int32_t w = v[OFF_W], h = v[OFF_H];
    const uint16_t col = (uint16_t)(int16_t)(dx >> 4), row = (uint16_t)(int16_t)(dy >> 4);
    if (w == 16 && h == 16 && (((dx ^ 8) | (dy ^ 8)) & 15) == 0 && col < mbw && row < mbh) {
      kind[i] = (int32_t)(row * mbw + col);  /* < 2^31: the caller checked the grid */
      continue;
    }
    kind[i] = REST;
    Rest *r = &rest[num_rest++];
    const int32_t x0 = dx - (w >> 1), y0 = dy - (h >> 1);
    r->index = i;
    r->cx0 = x0 >> 3;  /* arithmetic shift: floor division by the 8-pixel cell */
    r->cy0 = y0 >> 3;
    r->nx = ((x0 + w - 1) >> 3) - r->cx0 + 1;
    r->ny = ((y0 + h - 1) >> 3) - r->cy0 + 1;
    if (r->nx > max_nx) max_nx = r->nx;
    if (r->ny > max_ny) max_ny = r->ny;
  }
  status = -1;
  if (predictions(vec, n, slot, kind, frames, mbh, mbw, &count) < 0) goto done;
  /* Macroblocks: one sum per (output, macroblock, channel), round after round, in vector order. */
  for (int64_t k = 0; k < rounds; k++) {
    const int64_t *out = out_of + k * frames;
    const double *weight = w_of + k * frames;
    for (Py_ssize_t i = 0; i < n; i++) {
      if (kind[i] < 0) continue;
      const int64_t o = out[slot[i]];
      if (o < 0) continue;
      const uint8_t *v = vec + i * RECORD;
      const double s = weight[slot[i]] * factor(v, slot[i], past, future, count, i);
      double *sum = sums + (o * num_mb + kind[i]) * 2;
      sum[0] += (double)get_i32(v + OFF_MOTION_X) * s;
      sum[1] += (double)get_i32(v + OFF_MOTION_Y) * s;
    }
  }
  /* Copied to their 2 x 2 cells. */
  for (int64_t o = 0; o < num_out; o++) {
    for (int64_t y = 0; y < gh; y++) {
      for (int64_t x = 0; x < gw; x++) {
        const double *sum = sums + (o * num_mb + (y / 2) * mbw + x / 2) * 2;
        double *f = field + ((o * gh + y) * gw + x) * 2;
        f[0] = sum[0];
        f[1] = sum[1];
      }
    }
  }
  /* The other blocks, added to each cell they cover: round, then cell offset, then block. */
  for (int64_t k = 0; k < rounds; k++) {
    const int64_t *out = out_of + k * frames;
    const double *weight = w_of + k * frames;
    for (int32_t oy = 0; oy < max_ny; oy++) {
      for (int32_t ox = 0; ox < max_nx; ox++) {
        for (Py_ssize_t b = 0; b < num_rest; b++) {
          const Rest *r = &rest[b];
          if (r->ny <= oy || r->nx <= ox) continue;
          const int32_t cy = r->cy0 + oy, cx = r->cx0 + ox;
          if ((uint32_t)cy >= (uint64_t)gh || (uint32_t)cx >= (uint64_t)gw) continue;
          const int64_t i = r->index, o = out[slot[i]];
          if (o < 0) continue;
          const uint8_t *v = vec + i * RECORD;
          const double s = weight[slot[i]] * factor(v, slot[i], past, future, count, i);
          double *f = field + (o * cells + (int64_t)cy * gw + cx) * 2;
          f[0] += (double)get_i32(v + OFF_MOTION_X) * s;
          f[1] += (double)get_i32(v + OFF_MOTION_Y) * s;
        }
      }
    }
  }
  status = 0;
done:
  free(sums);
  free(rest);
  free(kind);
  free(count);
  return status;
}

enum { LIMIT = 1 << 20 };  /* the most rounds, frames or outputs */

static int check(const Py_buffer *buf, Py_ssize_t bytes, const char *name) {
  if (buf->len != bytes) {
    PyErr_Format(PyExc_ValueError, "_flow_kernel.scatter: %s has %zd bytes, expected %zd", name,
                 buf->len, bytes);
    return -1;
  }
  return 0;
}

static PyObject *py_scatter(PyObject *self, PyObject *args) {
  (void)self;
  Py_buffer vec, slot, past, future, out_of, w_of, field;
  long long rounds, frames, gh, gw, num_out;
  if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*LLLLLw*", &vec, &slot, &past, &future, &out_of, &w_of,
                        &rounds, &frames, &gh, &gw, &num_out, &field)) {
    return NULL;
  }
  PyObject *result = NULL;
  const Py_ssize_t n = vec.len / RECORD;
  if (vec.len % RECORD != 0) {
    PyErr_SetString(PyExc_ValueError, "_flow_kernel.scatter: vectors are not 40-byte records");
  } else if (rounds < 0 || frames < 0 || gh < 0 || gw < 0 || num_out < 0 || rounds > LIMIT
             || frames > LIMIT || gh > 32768 || gw > 32768 || num_out > LIMIT) {
    /* (no size product overflows; macroblock bins stay below 2^31) */
    PyErr_SetString(PyExc_ValueError, "_flow_kernel.scatter: a size is negative or too large");
  } else if (check(&slot, n * 8, "slot") < 0 || check(&past, frames * 8, "past") < 0
             || check(&future, frames * 8, "future") < 0
             || check(&out_of, rounds * frames * 8, "out_of") < 0
             || check(&w_of, rounds * frames * 8, "w_of") < 0
             || check(&field, num_out * gh * gw * 2 * 8, "field") < 0) {
  } else {
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = scatter(vec.buf, n, slot.buf, past.buf, future.buf, out_of.buf, w_of.buf, rounds,
                     frames, gh, gw, num_out, field.buf);
    Py_END_ALLOW_THREADS
    if (status == -2) {
      PyErr_SetString(PyExc_ValueError, "_flow_kernel.scatter: a slot or output out of range");
    } else if (status < 0) {
      PyErr_NoMemory();
    } else {
      result = Py_NewRef(Py_None);
    }
  }
  PyBuffer_Release(&vec);
  PyBuffer_Release(&slot);
  PyBuffer_Release(&past);
  PyBuffer_Release(&future);
  PyBuffer_Release(&out_of);
  PyBuffer_Release(&w_of);
  PyBuffer_Release(&field);
  return result;
}

static PyMethodDef methods[] = {
    {"scatter", py_scatter, METH_VARARGS,
     "The field of `motion.vectors_to_flow` (see the source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_flow_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__flow_kernel(void) { return PyModule_Create(&module); }

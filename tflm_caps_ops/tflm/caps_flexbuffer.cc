/*
 * Bounds-checked FlexBuffer reader (see caps_flexbuffer.h).
 *
 * Format reminders (FlexBuffers, little-endian):
 *  - root: last byte = byte width of the root slot, the byte before it =
 *    packed type of the root, the root slot precedes them;
 *  - packed type byte = (type << 2) | log2(byte width of the target);
 *  - maps, vectors, strings, keys and indirect scalars are stored as an
 *    unsigned offset (slot width) pointing backwards to their data;
 *  - a vector's size precedes its elements (same width); untyped vectors
 *    and maps follow their elements with one packed type byte per element;
 *  - a map is a vector of values preceded by [keys offset, keys width,
 *    size]; keys form a typed vector of offsets to NUL-terminated strings.
 * Written in the C subset of C++ (compiled with the TFLM glue).
 */
#include "tflm/caps_flexbuffer.h"

#include <string.h>

namespace {

bool valid_width(size_t w) { return w == 1 || w == 2 || w == 4 || w == 8; }

/* Unsigned little-endian read of `width` bytes at pos. */
caps_flexbuf_status read_uint(const uint8_t *buf, size_t len, size_t pos, size_t width,
                              uint64_t *out) {
  if (!valid_width(width) || len < width || pos > len - width) return CAPS_FLEXBUF_MALFORMED;
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) v |= (uint64_t)buf[pos + i] << (8 * i);
  *out = v;
  return CAPS_FLEXBUF_OK;
}

caps_flexbuf_status read_int(const uint8_t *buf, size_t len, size_t pos, size_t width,
                             int64_t *out) {
  uint64_t u;
  caps_flexbuf_status st = read_uint(buf, len, pos, width, &u);
  if (st != CAPS_FLEXBUF_OK) return st;
  if (width < 8) {
    const uint64_t sign = (uint64_t)1 << (8 * width - 1);
    if (u & sign) u |= ~((sign << 1) - 1); /* sign-extend */
  }
  memcpy(out, &u, sizeof(u));
  return CAPS_FLEXBUF_OK;
}

caps_flexbuf_status read_float(const uint8_t *buf, size_t len, size_t pos, size_t width,
                               double *out) {
  uint64_t u;
  if (width != 4 && width != 8) return CAPS_FLEXBUF_WRONG_TYPE; /* no half floats */
  caps_flexbuf_status st = read_uint(buf, len, pos, width, &u);
  if (st != CAPS_FLEXBUF_OK) return st;
  if (width == 4) {
    uint32_t u32 = (uint32_t)u;
    float f;
    memcpy(&f, &u32, sizeof(f));
    *out = (double)f;
  } else {
    double d;
    memcpy(&d, &u, sizeof(d));
    *out = d;
  }
  return CAPS_FLEXBUF_OK;
}

/* Follows a backward offset stored in a slot of `width` bytes at pos. */
caps_flexbuf_status follow(const uint8_t *buf, size_t len, size_t pos, size_t width,
                           size_t *target) {
  uint64_t off;
  caps_flexbuf_status st = read_uint(buf, len, pos, width, &off);
  if (st != CAPS_FLEXBUF_OK) return st;
  if (off > pos) return CAPS_FLEXBUF_MALFORMED;
  *target = pos - (size_t)off;
  return CAPS_FLEXBUF_OK;
}

bool is_untyped_vector(uint8_t t) { return t == CAPS_FBT_VECTOR || t == CAPS_FBT_MAP; }
bool is_typed_vector(uint8_t t) {
  return (t >= CAPS_FBT_VECTOR_INT && t <= CAPS_FBT_VECTOR_KEY) || t == CAPS_FBT_VECTOR_BOOL;
}
bool is_fixed_vector(uint8_t t) {
  return t >= CAPS_FBT_VECTOR_INT2 && t <= CAPS_FBT_VECTOR_FLOAT4;
}

/* Where a vector's (or map's) elements start, how wide and how many, with
 * the whole element region (and type bytes) checked against the buffer. */
caps_flexbuf_status vector_layout(const caps_flexbuf_ref *vec, size_t *start, size_t *width,
                                  size_t *size) {
  const uint8_t t = vec->type;
  if (!is_untyped_vector(t) && !is_typed_vector(t) && !is_fixed_vector(t))
    return CAPS_FLEXBUF_WRONG_TYPE;
  size_t target;
  caps_flexbuf_status st = follow(vec->buf, vec->len, vec->pos, vec->parent_width, &target);
  if (st != CAPS_FLEXBUF_OK) return st;
  const size_t w = vec->child_width;
  if (!valid_width(w)) return CAPS_FLEXBUF_MALFORMED;
  uint64_t n;
  if (is_fixed_vector(t)) {
    n = (uint64_t)((t - CAPS_FBT_VECTOR_INT2) / 3 + 2);
  } else {
    if (target < w) return CAPS_FLEXBUF_MALFORMED;
    st = read_uint(vec->buf, vec->len, target - w, w, &n);
    if (st != CAPS_FLEXBUF_OK) return st;
  }
  /* elements (and one type byte each for untyped vectors) must fit */
  const size_t per_elem = w + (is_untyped_vector(t) ? 1 : 0);
  if (target > vec->len || n > (uint64_t)((vec->len - target) / per_elem))
    return CAPS_FLEXBUF_MALFORMED;
  if (n > (uint64_t)INT32_MAX) return CAPS_FLEXBUF_MALFORMED;
  *start = target;
  *width = w;
  *size = (size_t)n;
  return CAPS_FLEXBUF_OK;
}

caps_flexbuf_ref make_ref(const caps_flexbuf_ref *parent, size_t pos, size_t parent_width,
                          uint8_t packed_type) {
  caps_flexbuf_ref r;
  r.buf = parent->buf;
  r.len = parent->len;
  r.pos = pos;
  r.parent_width = (uint8_t)parent_width;
  r.type = (uint8_t)(packed_type >> 2);
  r.child_width = (uint8_t)(1u << (packed_type & 3u));
  return r;
}

/* Compares the NUL-terminated string at spos with key, never reading past
 * the buffer: 1 equal, 0 different, -1 runs off the end while matching. */
int key_equals(const uint8_t *buf, size_t len, size_t spos, const char *key) {
  for (size_t j = 0;; ++j) {
    if (spos + j >= len) return -1;
    const uint8_t c = buf[spos + j];
    if (c != (uint8_t)key[j]) return 0;
    if (c == 0) return 1;
  }
}

}  // namespace

extern "C" {

caps_flexbuf_status caps_flexbuf_root(const uint8_t *buf, size_t len, caps_flexbuf_ref *out) {
  if (buf == NULL || out == NULL || len < 3) return CAPS_FLEXBUF_MALFORMED;
  const size_t bw = buf[len - 1];
  if (!valid_width(bw) || len < 2 + bw) return CAPS_FLEXBUF_MALFORMED;
  caps_flexbuf_ref parent;
  parent.buf = buf;
  parent.len = len;
  *out = make_ref(&parent, len - 2 - bw, bw, buf[len - 2]);
  return CAPS_FLEXBUF_OK;
}

caps_flexbuf_status caps_flexbuf_map_get(const caps_flexbuf_ref *map, const char *key,
                                         caps_flexbuf_ref *out) {
  if (map == NULL || key == NULL || out == NULL) return CAPS_FLEXBUF_MALFORMED;
  if (map->type != CAPS_FBT_MAP) return CAPS_FLEXBUF_WRONG_TYPE;
  size_t start, w, n;
  caps_flexbuf_status st = vector_layout(map, &start, &w, &n);
  if (st != CAPS_FLEXBUF_OK) return st;
  if (start < 3 * w) return CAPS_FLEXBUF_MALFORMED;
  const size_t keys_slot = start - 3 * w;
  size_t keys;
  st = follow(map->buf, map->len, keys_slot, w, &keys);
  if (st != CAPS_FLEXBUF_OK) return st;
  uint64_t kw, kn;
  st = read_uint(map->buf, map->len, start - 2 * w, w, &kw);
  if (st != CAPS_FLEXBUF_OK) return st;
  if (!valid_width((size_t)kw) || keys < kw) return CAPS_FLEXBUF_MALFORMED;
  st = read_uint(map->buf, map->len, keys - (size_t)kw, (size_t)kw, &kn);
  if (st != CAPS_FLEXBUF_OK) return st;
  if (kn != n || keys > map->len || n > (map->len - keys) / kw) return CAPS_FLEXBUF_MALFORMED;
  for (size_t i = 0; i < n; ++i) {
    size_t spos;
    st = follow(map->buf, map->len, keys + i * (size_t)kw, (size_t)kw, &spos);
    if (st != CAPS_FLEXBUF_OK) return st;
    const int eq = key_equals(map->buf, map->len, spos, key);
    if (eq < 0) return CAPS_FLEXBUF_MALFORMED;
    if (eq == 1) {
      *out = make_ref(map, start + i * w, w, map->buf[start + n * w + i]);
      return CAPS_FLEXBUF_OK;
    }
  }
  return CAPS_FLEXBUF_NOT_FOUND;
}

caps_flexbuf_status caps_flexbuf_as_int(const caps_flexbuf_ref *ref, int64_t *out) {
  if (ref == NULL || out == NULL) return CAPS_FLEXBUF_MALFORMED;
  size_t target;
  uint64_t u;
  caps_flexbuf_status st;
  switch (ref->type) {
    case CAPS_FBT_INT:
      return read_int(ref->buf, ref->len, ref->pos, ref->parent_width, out);
    case CAPS_FBT_INDIRECT_INT:
      st = follow(ref->buf, ref->len, ref->pos, ref->parent_width, &target);
      if (st != CAPS_FLEXBUF_OK) return st;
      return read_int(ref->buf, ref->len, target, ref->child_width, out);
    case CAPS_FBT_UINT:
    case CAPS_FBT_BOOL:
      st = read_uint(ref->buf, ref->len, ref->pos, ref->parent_width, &u);
      break;
    case CAPS_FBT_INDIRECT_UINT:
      st = follow(ref->buf, ref->len, ref->pos, ref->parent_width, &target);
      if (st != CAPS_FLEXBUF_OK) return st;
      st = read_uint(ref->buf, ref->len, target, ref->child_width, &u);
      break;
    default:
      return CAPS_FLEXBUF_WRONG_TYPE;
  }
  if (st != CAPS_FLEXBUF_OK) return st;
  if (u > (uint64_t)INT64_MAX) return CAPS_FLEXBUF_WRONG_TYPE;
  *out = (int64_t)u;
  return CAPS_FLEXBUF_OK;
}

caps_flexbuf_status caps_flexbuf_as_double(const caps_flexbuf_ref *ref, double *out) {
  if (ref == NULL || out == NULL) return CAPS_FLEXBUF_MALFORMED;
  size_t target;
  caps_flexbuf_status st;
  switch (ref->type) {
    case CAPS_FBT_FLOAT:
      return read_float(ref->buf, ref->len, ref->pos, ref->parent_width, out);
    case CAPS_FBT_INDIRECT_FLOAT:
      st = follow(ref->buf, ref->len, ref->pos, ref->parent_width, &target);
      if (st != CAPS_FLEXBUF_OK) return st;
      return read_float(ref->buf, ref->len, target, ref->child_width, out);
    default: {
      int64_t i;
      st = caps_flexbuf_as_int(ref, &i);
      if (st != CAPS_FLEXBUF_OK) return st;
      *out = (double)i;
      return CAPS_FLEXBUF_OK;
    }
  }
}

caps_flexbuf_status caps_flexbuf_vector_size(const caps_flexbuf_ref *vec, int32_t *size) {
  if (vec == NULL || size == NULL) return CAPS_FLEXBUF_MALFORMED;
  if (vec->type == CAPS_FBT_MAP) return CAPS_FLEXBUF_WRONG_TYPE;
  size_t start, w, n;
  caps_flexbuf_status st = vector_layout(vec, &start, &w, &n);
  if (st != CAPS_FLEXBUF_OK) return st;
  *size = (int32_t)n;
  return CAPS_FLEXBUF_OK;
}

caps_flexbuf_status caps_flexbuf_vector_at(const caps_flexbuf_ref *vec, int32_t index,
                                           caps_flexbuf_ref *out) {
  if (vec == NULL || out == NULL) return CAPS_FLEXBUF_MALFORMED;
  if (vec->type == CAPS_FBT_MAP) return CAPS_FLEXBUF_WRONG_TYPE;
  size_t start, w, n;
  caps_flexbuf_status st = vector_layout(vec, &start, &w, &n);
  if (st != CAPS_FLEXBUF_OK) return st;
  if (index < 0 || (size_t)index >= n) return CAPS_FLEXBUF_NOT_FOUND;
  const size_t pos = start + (size_t)index * w;
  uint8_t elem_type;
  if (vec->type == CAPS_FBT_VECTOR) {
    *out = make_ref(vec, pos, w, vec->buf[start + n * w + (size_t)index]);
    return CAPS_FLEXBUF_OK;
  } else if (vec->type == CAPS_FBT_VECTOR_BOOL) {
    elem_type = CAPS_FBT_BOOL;
  } else if (is_typed_vector(vec->type)) {
    elem_type = (uint8_t)(vec->type - CAPS_FBT_VECTOR_INT + CAPS_FBT_INT);
  } else {
    elem_type = (uint8_t)((vec->type - CAPS_FBT_VECTOR_INT2) % 3 + CAPS_FBT_INT);
  }
  /* typed elements: inline scalars of the vector's width */
  *out = make_ref(vec, pos, w, (uint8_t)(elem_type << 2));
  return CAPS_FLEXBUF_OK;
}

}  /* extern "C" */

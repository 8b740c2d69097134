/*
 * Minimal, bounds-checked FlexBuffer reader for custom-op options.
 *
 * Custom operators receive their options as a FlexBuffer map
 * (docs/custom_ops.md).  This reader understands what our converter and the
 * TensorFlow converter write: a root map whose values are ints, uints,
 * bools, floats (inline or indirect, 32 or 64 bit) and vectors of numbers
 * (untyped, typed or fixed-size typed).  Every read is checked against the
 * buffer bounds, so a truncated or corrupt buffer yields
 * CAPS_FLEXBUF_MALFORMED, never an out-of-bounds access.
 *
 * Plain C-compatible code with C linkage: no heap, no TFLM types; the only
 * floating point is the conversion of float options (used at init time,
 * never in the integer kernels).
 */
#ifndef TFLM_CAPS_TFLM_CAPS_FLEXBUFFER_H
#define TFLM_CAPS_TFLM_CAPS_FLEXBUFFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  CAPS_FLEXBUF_OK = 0,
  CAPS_FLEXBUF_NOT_FOUND = 1,   /* key absent from the map */
  CAPS_FLEXBUF_MALFORMED = -1,  /* offsets or sizes point outside the buffer */
  CAPS_FLEXBUF_WRONG_TYPE = -2  /* value exists but has another type */
} caps_flexbuf_status;

/* FlexBuffer value types (the subset we name; others are rejected). */
enum {
  CAPS_FBT_NULL = 0,
  CAPS_FBT_INT = 1,
  CAPS_FBT_UINT = 2,
  CAPS_FBT_FLOAT = 3,
  CAPS_FBT_KEY = 4,
  CAPS_FBT_STRING = 5,
  CAPS_FBT_INDIRECT_INT = 6,
  CAPS_FBT_INDIRECT_UINT = 7,
  CAPS_FBT_INDIRECT_FLOAT = 8,
  CAPS_FBT_MAP = 9,
  CAPS_FBT_VECTOR = 10,
  CAPS_FBT_VECTOR_INT = 11,
  CAPS_FBT_VECTOR_UINT = 12,
  CAPS_FBT_VECTOR_FLOAT = 13,
  CAPS_FBT_VECTOR_KEY = 14,
  CAPS_FBT_VECTOR_INT2 = 16,
  CAPS_FBT_VECTOR_FLOAT4 = 24,
  CAPS_FBT_BOOL = 26,
  CAPS_FBT_VECTOR_BOOL = 36
};

/* A reference to one value: where it sits, how wide its slot is, its type
 * and the byte width of what it points to (for offsets). */
typedef struct {
  const uint8_t *buf;
  size_t len;
  size_t pos;
  uint8_t parent_width;
  uint8_t type;
  uint8_t child_width;
} caps_flexbuf_ref;

/* Root value of a FlexBuffer of len bytes. */
caps_flexbuf_status caps_flexbuf_root(const uint8_t *buf, size_t len, caps_flexbuf_ref *out);

/* Value of key in a map (NOT_FOUND if absent, WRONG_TYPE if not a map). */
caps_flexbuf_status caps_flexbuf_map_get(const caps_flexbuf_ref *map, const char *key,
                                         caps_flexbuf_ref *out);

/* Integer value: INT, UINT, BOOL and their indirect forms.  UINT values
 * above INT64_MAX are WRONG_TYPE. */
caps_flexbuf_status caps_flexbuf_as_int(const caps_flexbuf_ref *ref, int64_t *out);

/* Number as double: FLOAT (32/64 bit), INT, UINT and indirect forms. */
caps_flexbuf_status caps_flexbuf_as_double(const caps_flexbuf_ref *ref, double *out);

/* Number of elements of a vector (untyped, typed or fixed typed). */
caps_flexbuf_status caps_flexbuf_vector_size(const caps_flexbuf_ref *vec, int32_t *size);

/* Element i of a vector. */
caps_flexbuf_status caps_flexbuf_vector_at(const caps_flexbuf_ref *vec, int32_t index,
                                           caps_flexbuf_ref *out);

#ifdef __cplusplus
}
#endif

#endif /* TFLM_CAPS_TFLM_CAPS_FLEXBUFFER_H */

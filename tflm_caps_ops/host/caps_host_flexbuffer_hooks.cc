/*
 * C entry points exposing the operators' FlexBuffer reader to Python, so
 * tests can check it against the flatbuffers package's writer and feed it
 * corrupt buffers.  Return values are caps_flexbuf_status codes.
 */
#include "tflm/caps_flexbuffer.h"

extern "C" {

// Integer value of map key.
int32_t TFLMCaps_FlexbufMapInt(const uint8_t* buf, size_t len, const char* key, int64_t* out) {
  caps_flexbuf_ref root, value;
  caps_flexbuf_status st = caps_flexbuf_root(buf, len, &root);
  if (st == CAPS_FLEXBUF_OK) st = caps_flexbuf_map_get(&root, key, &value);
  if (st == CAPS_FLEXBUF_OK) st = caps_flexbuf_as_int(&value, out);
  return st;
}

// Number of map key as double (index < 0) or element `index` of the
// vector stored under key.
int32_t TFLMCaps_FlexbufMapNumber(const uint8_t* buf, size_t len, const char* key,
                                  int32_t index, double* out) {
  caps_flexbuf_ref root, value, elem;
  caps_flexbuf_status st = caps_flexbuf_root(buf, len, &root);
  if (st == CAPS_FLEXBUF_OK) st = caps_flexbuf_map_get(&root, key, &value);
  if (st == CAPS_FLEXBUF_OK && index >= 0) {
    st = caps_flexbuf_vector_at(&value, index, &elem);
    value = elem;
  }
  if (st == CAPS_FLEXBUF_OK) st = caps_flexbuf_as_double(&value, out);
  return st;
}

// Size of the vector stored under key.
int32_t TFLMCaps_FlexbufMapVectorSize(const uint8_t* buf, size_t len, const char* key,
                                      int32_t* out) {
  caps_flexbuf_ref root, value;
  caps_flexbuf_status st = caps_flexbuf_root(buf, len, &root);
  if (st == CAPS_FLEXBUF_OK) st = caps_flexbuf_map_get(&root, key, &value);
  if (st == CAPS_FLEXBUF_OK) st = caps_flexbuf_vector_size(&value, out);
  return st;
}

}  // extern "C"

/*
 * TFLMCaps_Squash: x int8 [B, N, D] (any scale / zero point) ->
 * v int8 [B, N, D] (fixed scale 1/128, zero point 0), v = squash(x) per
 * capsule (docs/custom_ops.md, docs/quantization.md).  The kernel reads a
 * gain table for the input quantization, so Eval does no division or
 * square root.  Options version >= 2: the converter wrote the table into
 * the model as input 1 (constant int32, flash), read in place; Prepare only
 * checks it.  Version 1 models: Prepare fills it in the persistent arena.
 */
#include "tflm/caps_op_common.h"
#include "tflm/caps_ops.h"
#include "tflm_caps/caps_nn_functions.h"

namespace tflm_caps {
namespace {

constexpr const char* kOp = kSquashOpName;  // names the op in messages
constexpr const char* kTable = "input 1 (gain table)";
const CapsUnaryCapsSpec kSpec = {kOp, "input 0 (x)", "output 0 (v)", 3,
                                 kSquashOutputScale, kSquashOutputZeroPoint,
                                 kSquashTableVersion};

struct OpData {
  CapsUnaryCapsData<caps_squash_params> op;
  caps_nn_context table;  // buf: the arena copy, or null when table_input
  bool table_input;       // the table is input 1 of the node
};

// Input 1 must be the table caps_squash_s8_init_table would fill for these
// dims and params, stored as a 4-byte aligned constant int32 vector.
TfLiteStatus CheckTableInput(const TfLiteTensor* t, const OpData* data) {
  const caps_squash_params& p = data->op.params;
  if (t == nullptr) {
    CapsReportError("%s: %s is missing (could not allocate its tensor)", kOp, kTable);
    return kTfLiteError;
  }
  if (CapsTensorType(t) != kTfLiteInt32) {
    CapsReportError("%s: %s must be int32, got %s", kOp, kTable, CapsTypeName(CapsTensorType(t)));
    return kTfLiteError;
  }
  if (t->allocation_type != kCapsConstantAllocation) {
    CapsReportError("%s: %s must be a constant tensor (written into the model by the "
                    "converter)", kOp, kTable);
    return kTfLiteError;
  }
  const int words = (int)caps_squash_s8_table_words(&data->op.dims, &p);
  CAPS_ENSURE_OK(CapsCheckDims(kOp, kTable, t, &words, 1));
  if (((uintptr_t)t->data.raw & 3u) != 0) {
    CapsReportError("%s: %s data must be 4-byte aligned", kOp, kTable);
    return kTfLiteError;
  }
  caps_nn_context ctx = {t->data.raw, 4 * words};
  caps_caps_dims table_dims = data->op.dims;
  table_dims.n_caps = 0;  // checks the table only
  if (caps_squash_s8_args_check(&ctx, &table_dims, &p, nullptr, nullptr, nullptr) !=
      CAPS_NN_SUCCESS) {
    CapsReportError("%s: %s was not written for this op (its header must hold capsule dim "
                    "%d, input zero point %d, sq_multiplier %d, sq_exponent %d); convert the "
                    "model again", kOp, kTable, (int)data->op.dims.dim, (int)p.input_zp,
                    (int)p.sq_multiplier, (int)p.sq_exponent);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

// Version 1 models: the table filled once in the persistent arena.
TfLiteStatus FillTable(TfLiteContext* context, OpData* data) {
  const int32_t bytes = caps_squash_s8_get_buffer_size(&data->op.dims, &data->op.params);
  data->table.buf = bytes > 0 ? CapsAllocatePersistent(context, (size_t)bytes) : nullptr;
  data->table.size = bytes;
  if (data->table.buf == nullptr) {
    CapsReportError("%s: the arena has no room for the %d-byte squash gain table", kOp,
                    (int)bytes);
    return kTfLiteError;
  }
  const caps_nn_status st =
      caps_squash_s8_init_table(&data->table, &data->op.dims, &data->op.params);
  if (st != CAPS_NN_SUCCESS) {
    CapsReportError("%s: caps_squash_s8_init_table failed with status %d", kOp, (int)st);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = CapsGetOpData<OpData>(kOp, node);
  if (data == nullptr) return kTfLiteError;
  CapsQuant in_q;
  CAPS_ENSURE_OK(
      CapsPrepareUnaryCaps(context, node, kSpec, &data->op.dims, &in_q, &data->table_input));
  CAPS_ENSURE_OK(CapsCheckParamsInit(
      kOp, caps_squash_params_init(in_q.scale, in_q.zero_point, &data->op.params), in_q));
  if (!data->table_input) return FillTable(context, data);
  TfLiteTensor* table = CapsTempInput(context, node, 1);
  const TfLiteStatus status = CheckTableInput(table, data);
  CapsFreeTemp(context, table);
  data->table.buf = nullptr;
  data->table.size = 4 * caps_squash_s8_table_words(&data->op.dims, &data->op.params);
  return status;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* input = CapsEvalInput(context, node, 0);
  TfLiteEvalTensor* output = CapsEvalOutput(context, node, 0);
  caps_nn_context table = data->table;
  if (data->table_input) table.buf = CapsEvalInput(context, node, 1)->data.raw;
  const caps_nn_status st = caps_squash_s8(&table, &data->op.dims, &data->op.params,
                                           input->data.int8, output->data.int8);
  if (st != CAPS_NN_SUCCESS) {
    CapsReportError("%s: kernel caps_squash_s8 failed with status %d", kOp, (int)st);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace

TFLMRegistration* Register_TFLMCAPS_SQUASH() {
  static TFLMRegistration registration =
      CapsMakeRegistration(CapsInitOpData<OpData>, Prepare, Eval, nullptr);
  return &registration;
}

}  // namespace tflm_caps

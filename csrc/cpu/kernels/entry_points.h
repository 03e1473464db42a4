// The entry points of one instruction-set path, declared in isa.h: included once by each isa_*.cpp, inside that
// path's namespace and after it has chosen its Vec (kernels/simd.h), so the three paths cannot drift apart.
// No include guard on purpose.
void dwsep_rows(const DwsepArgs& a, int64_t begin, int64_t end, float* scratch) {
  dwsep_rows_impl<Vec>(a, begin, end, scratch);
}
void pointwise_rows(const PointwiseArgs& a, int64_t begin, int64_t end, float* scratch) {
  pointwise_rows_impl<Vec>(a, begin, end, scratch);
}
void block_rows(const BlockArgs& a, int64_t begin, int64_t end, float* scratch) {
  block_rows_impl<Vec>(a, begin, end, scratch);
}
void conv3x3_rows(const Conv3x3Args& a, int64_t begin, int64_t end, float* scratch) {
  conv3x3_rows_impl<Vec>(a, begin, end, scratch);
}
void upsample_rows(const UpsampleArgs& a, int64_t begin, int64_t end, float* scratch) {
  upsample_rows_impl<Vec>(a, begin, end, scratch);
}
void upsample_labels_rows(const LabelsArgs& a, int64_t begin, int64_t end, float* scratch) {
  upsample_labels_rows_impl<Vec>(a, begin, end, scratch);
}
void decoder_rows(const DecoderArgs& a, int64_t begin, int64_t end, float* scratch) {
  decoder_rows_impl<Vec>(a, begin, end, scratch);
}

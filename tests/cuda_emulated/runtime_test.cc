// The host emulation of the CUDA runtime and cuBLASLt against what the CUDA documentation says
// the real ones do (the behaviours the emulated CUDA backend tests rely on): work on a stream runs
// only when the host waits; a copy from pinned memory reads it when it runs, from pageable
// memory at the call; stream capture records work for replay and rejects the calls that are
// unsafe during capture; launch configurations are checked; cublasLtMatmul computes
// D = alpha op(A) op(B) + beta C on column-major layouts (checked here against a plain loop).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "include/cublasLt.h"
#include "include/cuda_runtime.h"
// After the emulated runtime (PAGODA_LAUNCH picks the emulated launch).
#include "backend/cuda/kernel_macros.cuh"

namespace {

__global__ void scale_kernel(float* x, float s, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) x[i] *= s;
}

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { EXPECT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess); }
  ~Stream() { (void)cudaStreamDestroy(s); }
};

TEST(EmulatedRuntime, FreshDeviceMemoryIsNotZero) {
  void* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 64), cudaSuccess);
  std::vector<float> h(16, 0.0f);
  ASSERT_EQ(cudaMemcpy(h.data(), p, 64, cudaMemcpyDeviceToHost), cudaSuccess);
  for (float v : h) EXPECT_TRUE(std::isnan(v));
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaErrorInvalidDevicePointer);  // double free
  (void)cudaGetLastError();
}

TEST(EmulatedRuntime, StreamWorkRunsWhenTheHostWaits) {
  Stream st;
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 4 * sizeof(float)), cudaSuccess);
  float* pinned = nullptr;
  ASSERT_EQ(cudaHostAlloc(reinterpret_cast<void**>(&pinned), 4 * sizeof(float), cudaHostAllocDefault), cudaSuccess);
  std::vector<float> pageable = {1, 2, 3, 4};
  for (int i = 0; i < 4; ++i) pinned[i] = 10.0f + static_cast<float>(i);

  // From pinned memory: the copy reads the buffer when it runs (after the host changed it).
  ASSERT_EQ(cudaMemcpyAsync(d, pinned, 4 * sizeof(float), cudaMemcpyHostToDevice, st.s), cudaSuccess);
  pinned[0] = 99.0f;
  PAGODA_LAUNCH(1, 32, 0, st.s, scale_kernel)(d, 2.0f, 4);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  float out[4] = {};
  ASSERT_EQ(cudaMemcpyAsync(out, d, sizeof(out), cudaMemcpyDeviceToHost, st.s), cudaSuccess);  // pageable: waits
  EXPECT_EQ(out[0], 198.0f);
  EXPECT_EQ(out[3], 26.0f);

  // From pageable memory: the bytes are taken at the call.
  ASSERT_EQ(cudaMemcpyAsync(d, pageable.data(), 4 * sizeof(float), cudaMemcpyHostToDevice, st.s), cudaSuccess);
  pageable[0] = -1.0f;
  // Into pinned memory: written when the stream reaches it.
  pinned[1] = 0.0f;
  ASSERT_EQ(cudaMemcpyAsync(pinned, d, 4 * sizeof(float), cudaMemcpyDeviceToHost, st.s), cudaSuccess);
  EXPECT_EQ(pinned[1], 0.0f);
  cudaEvent_t ev = nullptr;
  ASSERT_EQ(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(ev, st.s), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(ev), cudaSuccess);
  EXPECT_EQ(pinned[0], 1.0f);
  EXPECT_EQ(pinned[1], 2.0f);
  EXPECT_EQ(cudaEventDestroy(ev), cudaSuccess);

  // Copies must match their kind and stay inside an allocation.
  EXPECT_EQ(cudaMemcpyAsync(d, pageable.data(), 5 * sizeof(float), cudaMemcpyHostToDevice, st.s),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpyAsync(pageable.data(), d, 4 * sizeof(float), cudaMemcpyHostToDevice, st.s),
            cudaErrorInvalidValue);
  (void)cudaGetLastError();
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST(EmulatedRuntime, LaunchConfigurationsAreChecked) {
  Stream st;
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 4), cudaSuccess);
  PAGODA_LAUNCH(1, 2048, 0, st.s, scale_kernel)(d, 1.0f, 1);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  PAGODA_LAUNCH(dim3(1, 70000), 32, 0, st.s, scale_kernel)(d, 1.0f, 1);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  PAGODA_LAUNCH(0, 32, 0, st.s, scale_kernel)(d, 1.0f, 1);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  PAGODA_LAUNCH(1, 32, 64 * 1024, st.s, scale_kernel)(d, 1.0f, 1);  // over 48 KiB without opting in
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // reading the error clears it
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST(EmulatedRuntime, CaptureRecordsWorkForReplayAndRejectsUnsafeCalls) {
  Stream st;
  float* d = nullptr;
  float* pinned = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 2 * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaHostAlloc(reinterpret_cast<void**>(&pinned), 2 * sizeof(float), cudaHostAllocDefault), cudaSuccess);

  ASSERT_EQ(cudaStreamBeginCapture(st.s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(d, pinned, 2 * sizeof(float), cudaMemcpyHostToDevice, st.s), cudaSuccess);
  PAGODA_LAUNCH(1, 32, 0, st.s, scale_kernel)(d, 3.0f, 2);
  ASSERT_EQ(cudaMemcpyAsync(pinned, d, 2 * sizeof(float), cudaMemcpyDeviceToHost, st.s), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(st.s, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  for (float x : {1.0f, 5.0f}) {  // each replay reads the pinned input as it is then
    pinned[0] = x;
    pinned[1] = -x;
    ASSERT_EQ(cudaGraphLaunch(exec, st.s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(st.s), cudaSuccess);
    EXPECT_EQ(pinned[0], 3.0f * x);
    EXPECT_EQ(pinned[1], -3.0f * x);
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);

  // Allocation, synchronisation and pageable copies during a capture fail and invalidate it.
  std::vector<float> pageable(2, 1.0f);
  const auto invalidated_by = [&](auto call) {
    EXPECT_EQ(cudaStreamBeginCapture(st.s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    EXPECT_EQ(call(), cudaErrorStreamCaptureUnsupported);
    cudaGraph_t g = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(st.s, &g), cudaErrorStreamCaptureInvalidated);
    EXPECT_EQ(g, nullptr);
    (void)cudaGetLastError();
  };
  void* p = nullptr;
  invalidated_by([&] { return cudaMalloc(&p, 16); });
  invalidated_by([&] { return cudaStreamSynchronize(st.s); });
  invalidated_by([&] { return cudaMemcpyAsync(d, pageable.data(), 8, cudaMemcpyHostToDevice, st.s); });
  invalidated_by([&] { return cudaMemcpyAsync(pageable.data(), d, 8, cudaMemcpyDeviceToHost, st.s); });
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

// cublasLtMatmul against a plain column-major loop, over every transpose combination, padded
// leading dimensions, alpha / beta and BF16 / F32 outputs.
TEST(EmulatedRuntime, CublasLtMatmulMatchesAColumnMajorReference) {
  Stream st;
  cublasLtHandle_t lt = nullptr;
  ASSERT_EQ(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int m = 5, n = 3, k = 7;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (cudaDataType_t out_type : {CUDA_R_32F, CUDA_R_16BF}) {
        SCOPED_TRACE(::testing::Message() << "transa " << ta << " transb " << tb << " out " << out_type);
        const int a_rows = ta ? k : m, a_cols = ta ? m : k, lda = a_rows + 2;
        const int b_rows = tb ? n : k, b_cols = tb ? k : n, ldb = b_rows + 1;
        const int ldc = m + 3;
        std::vector<__nv_bfloat16> a(static_cast<size_t>(lda) * a_cols), b(static_cast<size_t>(ldb) * b_cols);
        for (auto& v : a) v = __float2bfloat16_rn(dist(rng));
        for (auto& v : b) v = __float2bfloat16_rn(dist(rng));
        std::vector<float> c(static_cast<size_t>(ldc) * n);
        for (auto& v : c) v = dist(rng);
        const size_t cbytes = c.size() * (out_type == CUDA_R_32F ? 4 : 2);
        std::vector<char> c_host(cbytes);
        for (size_t i = 0; i < c.size(); ++i) {
          if (out_type == CUDA_R_32F) {
            std::memcpy(&c_host[i * 4], &c[i], 4);
          } else {
            const __nv_bfloat16 h = __float2bfloat16_rn(c[i]);
            std::memcpy(&c_host[i * 2], &h, 2);
            c[i] = __bfloat162float(h);
          }
        }
        void *da, *db, *dc, *ws;
        ASSERT_EQ(cudaMalloc(&da, a.size() * 2), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&db, b.size() * 2), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&dc, cbytes), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&ws, 1 << 20), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(db, b.data(), b.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(dc, c_host.data(), cbytes, cudaMemcpyHostToDevice), cudaSuccess);

        cublasLtMatmulDesc_t desc = nullptr;
        ASSERT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
        const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        ASSERT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)),
                  CUBLAS_STATUS_SUCCESS);
        ASSERT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)),
                  CUBLAS_STATUS_SUCCESS);
        cublasLtMatrixLayout_t la, lb, lc, bad;
        ASSERT_EQ(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, a_rows, a_cols, lda), CUBLAS_STATUS_SUCCESS);
        ASSERT_EQ(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, b_rows, b_cols, ldb), CUBLAS_STATUS_SUCCESS);
        ASSERT_EQ(cublasLtMatrixLayoutCreate(&lc, out_type, m, n, ldc), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatrixLayoutCreate(&bad, CUDA_R_16BF, 4, 4, 3), CUBLAS_STATUS_INVALID_VALUE);  // ld < rows
        const float alpha = 0.5f, beta = 2.0f;
        ASSERT_EQ(cublasLtMatmul(lt, desc, &alpha, da, la, db, lb, &beta, dc, lc, dc, lc, nullptr, ws, 1 << 20, st.s),
                  CUBLAS_STATUS_SUCCESS);
        // The layouts must agree with the transposes: B's layout given for A fails.
        EXPECT_EQ(cublasLtMatmul(lt, desc, &alpha, db, lb, db, lb, &beta, dc, lc, dc, lc, nullptr, ws, 1 << 20, st.s),
                  CUBLAS_STATUS_INVALID_VALUE);
        std::vector<char> got(cbytes);
        ASSERT_EQ(cudaMemcpyAsync(got.data(), dc, cbytes, cudaMemcpyDeviceToHost, st.s), cudaSuccess);
        for (int j = 0; j < n; ++j)
          for (int i = 0; i < m; ++i) {
            double ref = 0;
            for (int p = 0; p < k; ++p) {
              const float av =
                  __bfloat162float(ta ? a[static_cast<size_t>(p + i * lda)] : a[static_cast<size_t>(i + p * lda)]);
              const float bv =
                  __bfloat162float(tb ? b[static_cast<size_t>(j + p * ldb)] : b[static_cast<size_t>(p + j * ldb)]);
              ref += static_cast<double>(av) * bv;
            }
            ref = alpha * ref + beta * c[static_cast<size_t>(i + j * ldc)];
            const size_t at = static_cast<size_t>(i + j * ldc);
            float v;
            if (out_type == CUDA_R_32F) {
              std::memcpy(&v, &got[at * 4], 4);
              EXPECT_NEAR(v, ref, 1e-5) << i << "," << j;
            } else {
              __nv_bfloat16 h;
              std::memcpy(&h, &got[at * 2], 2);
              EXPECT_NEAR(__bfloat162float(h), ref, std::abs(ref) * 0.004 + 1e-6) << i << "," << j;
            }
          }
        (void)cublasLtMatrixLayoutDestroy(la);
        (void)cublasLtMatrixLayoutDestroy(lb);
        (void)cublasLtMatrixLayoutDestroy(lc);
        (void)cublasLtMatmulDescDestroy(desc);
        EXPECT_EQ(cudaFree(da), cudaSuccess);
        EXPECT_EQ(cudaFree(db), cudaSuccess);
        EXPECT_EQ(cudaFree(dc), cudaSuccess);
        EXPECT_EQ(cudaFree(ws), cudaSuccess);
      }
  EXPECT_EQ(cublasLtDestroy(lt), CUBLAS_STATUS_SUCCESS);
}

// An algorithm chosen for 16-byte aligned operands rejects a 2-byte aligned one.
TEST(EmulatedRuntime, CublasLtMatmulHonoursThePromisedAlignment) {
  Stream st;
  cublasLtHandle_t lt = nullptr;
  ASSERT_EQ(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulDesc_t desc = nullptr;
  ASSERT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
  cublasLtMatrixLayout_t l;
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&l, CUDA_R_16BF, 8, 8, 8), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulPreference_t pref = nullptr;
  ASSERT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
  const uint32_t align = 16;
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    ASSERT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulHeuristicResult_t res{};
  int returned = 0;
  ASSERT_EQ(cublasLtMatmulAlgoGetHeuristic(lt, desc, l, l, l, l, pref, 1, &res, &returned), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(returned, 1);
  void* buf = nullptr;
  ASSERT_EQ(cudaMalloc(&buf, 4 * 128 + 2), cudaSuccess);
  char* base = static_cast<char*>(buf);
  const float one = 1.0f, zero = 0.0f;
  EXPECT_EQ(cublasLtMatmul(lt, desc, &one, base, l, base + 128, l, &zero, base + 256, l, base + 256, l, &res.algo,
                           nullptr, 0, st.s),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatmul(lt, desc, &one, base + 2, l, base + 128, l, &zero, base + 256, l, base + 256, l, &res.algo,
                           nullptr, 0, st.s),
            CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(cudaStreamSynchronize(st.s), cudaSuccess);
  EXPECT_EQ(cudaFree(buf), cudaSuccess);
  (void)cublasLtMatmulPreferenceDestroy(pref);
  (void)cublasLtMatrixLayoutDestroy(l);
  (void)cublasLtMatmulDescDestroy(desc);
  (void)cublasLtDestroy(lt);
}

}  // namespace

// Device kernels of nexus-tensor's CUDA backend, compiled at run time with
// NVRTC (no CUDA toolkit at build time). Each kernel computes exactly what
// the CPU kernel of the same operation computes (src/cpu/), in the same
// order of operations and with sums accumulated in double, so results agree
// to the last bits f32 rounding allows. Element loops are grid-stride loops:
// any launch geometry covers every element. Row and reduction kernels are
// launched with ROW threads per block, one block per row (grid-stride over
// rows).

typedef long long i64;
#define ROW 256

__device__ double block_sum(double v, double* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = ROW / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

__device__ float block_max(float v, float* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = ROW / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

#define FOR_EACH(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// out = a op b with numpy broadcasting. meta: output dims[rank], then the
// strides of a and of b against the output (0 along broadcast axes).
// op: 0 add, 1 sub, 2 mul, 3 div.
extern "C" __global__ void binary_f32(int op, i64 n, int rank, const i64* meta,
                                      const float* a, const float* b, float* out) {
    FOR_EACH(i, n) {
        i64 rest = i, oa = 0, ob = 0;
        for (int ax = rank - 1; ax >= 0; --ax) {
            i64 d = meta[ax];
            i64 k = rest % d;
            rest /= d;
            oa += k * meta[rank + ax];
            ob += k * meta[2 * rank + ax];
        }
        float x = a[oa], y = b[ob], r;
        if (op == 0) r = x + y;
        else if (op == 1) r = x - y;
        else if (op == 2) r = x * y;
        else r = x / y;
        out[i] = r;
    }
}

// op: 0 relu, 1 gelu (erf), 2 silu.
extern "C" __global__ void unary_f32(int op, i64 n, const float* x, float* out) {
    FOR_EACH(i, n) {
        float v = x[i], r;
        if (op == 0) r = v > 0.0f ? v : 0.0f;
        else if (op == 1) r = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
        else r = v / (1.0f + expf(-v));
        out[i] = r;
    }
}

extern "C" __global__ void softmax_f32(i64 rows, i64 len, const float* x, float* out) {
    __shared__ float shf[ROW];
    __shared__ double shd[ROW];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* row = x + r * len;
        float* o = out + r * len;
        float m = __int_as_float(0xff800000);  // -inf
        for (i64 j = threadIdx.x; j < len; j += ROW) m = fmaxf(m, row[j]);
        m = block_max(m, shf);
        double s = 0.0;
        for (i64 j = threadIdx.x; j < len; j += ROW) {
            float e = expf(row[j] - m);
            o[j] = e;
            s += (double)e;
        }
        s = block_sum(s, shd);
        float inv = (float)(1.0 / s);
        for (i64 j = threadIdx.x; j < len; j += ROW) o[j] *= inv;
    }
}

// Biased variance, as the CPU kernel and PyTorch's layer_norm. g and b are
// read only when has_g / has_b.
extern "C" __global__ void layer_norm_f32(i64 rows, i64 len, float eps, int has_g, int has_b,
                                          const float* x, const float* g, const float* b,
                                          float* out) {
    __shared__ double shd[ROW];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* row = x + r * len;
        float* o = out + r * len;
        double s = 0.0;
        for (i64 j = threadIdx.x; j < len; j += ROW) s += (double)row[j];
        double mean = block_sum(s, shd) / (double)len;
        double v = 0.0;
        for (i64 j = threadIdx.x; j < len; j += ROW) {
            double d = (double)row[j] - mean;
            v += d * d;
        }
        double var = block_sum(v, shd) / (double)len;
        double inv = 1.0 / sqrt(var + (double)eps);
        for (i64 j = threadIdx.x; j < len; j += ROW) {
            float y = (float)(((double)row[j] - mean) * inv);
            if (has_g) y *= g[j];
            if (has_b) y += b[j];
            o[j] = y;
        }
    }
}

extern "C" __global__ void rms_norm_f32(i64 rows, i64 len, float eps, int has_w,
                                        const float* x, const float* w, float* out) {
    __shared__ double shd[ROW];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* row = x + r * len;
        float* o = out + r * len;
        double s = 0.0;
        for (i64 j = threadIdx.x; j < len; j += ROW) s += (double)row[j] * (double)row[j];
        double ms = block_sum(s, shd) / (double)len;
        float inv = (float)(1.0 / sqrt(ms + (double)eps));
        for (i64 j = threadIdx.x; j < len; j += ROW) o[j] = row[j] * inv * (has_w ? w[j] : 1.0f);
    }
}

// Axis permutation of 4-byte and 2-byte elements. meta: output dims[rank],
// then the input's strides in output axis order.
extern "C" __global__ void permute_b32(i64 n, int rank, const i64* meta,
                                       const unsigned int* x, unsigned int* out) {
    FOR_EACH(i, n) {
        i64 rest = i, off = 0;
        for (int ax = rank - 1; ax >= 0; --ax) {
            i64 d = meta[ax];
            off += (rest % d) * meta[rank + ax];
            rest /= d;
        }
        out[i] = x[off];
    }
}

extern "C" __global__ void permute_b16(i64 n, int rank, const i64* meta,
                                       const unsigned short* x, unsigned short* out) {
    FOR_EACH(i, n) {
        i64 rest = i, off = 0;
        for (int ax = rank - 1; ax >= 0; --ax) {
            i64 d = meta[ax];
            off += (rest % d) * meta[rank + ax];
            rest /= d;
        }
        out[i] = x[off];
    }
}

// Sum (mean when `mean`) over the reduced axes: one block per output element.
// meta: kept dims[rk], their input strides[rk], reduced dims[rr], their input
// strides[rr].
extern "C" __global__ void sum_f32(i64 n_out, i64 n_red, int rk, int rr, const i64* meta,
                                   int mean, const float* x, float* out) {
    __shared__ double shd[ROW];
    for (i64 o = blockIdx.x; o < n_out; o += gridDim.x) {
        i64 rest = o, base = 0;
        for (int ax = rk - 1; ax >= 0; --ax) {
            i64 d = meta[ax];
            base += (rest % d) * meta[rk + ax];
            rest /= d;
        }
        double s = 0.0;
        for (i64 r = threadIdx.x; r < n_red; r += ROW) {
            i64 q = r, off = base;
            for (int ax = rr - 1; ax >= 0; --ax) {
                i64 d = meta[2 * rk + ax];
                off += (q % d) * meta[2 * rk + rr + ax];
                q /= d;
            }
            s += (double)x[off];
        }
        s = block_sum(s, shd);
        if (threadIdx.x == 0) {
            float v = (float)s;
            if (mean) v *= 1.0f / (float)n_red;
            out[o] = v;
        }
    }
}

// cuda_launch's built-in kernels.
extern "C" __global__ void scale_f32(i64 n, float alpha, float* x) {
    FOR_EACH(i, n) x[i] = x[i] * alpha;
}

extern "C" __global__ void axpy_f32(i64 n, float alpha, const float* x, float* y) {
    FOR_EACH(i, n) y[i] = y[i] + alpha * x[i];
}

extern "C" __global__ void axpy_self_f32(i64 n, float alpha, float* y) {
    FOR_EACH(i, n) {
        float v = y[i];
        y[i] = v + alpha * v;
    }
}

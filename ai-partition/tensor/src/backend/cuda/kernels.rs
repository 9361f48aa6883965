//! The device kernels (`kernels.cu`), compiled at run time with NVRTC and
//! launched on the backend's stream. Every launch here is `unsafe` (a
//! kernel's parameters cannot be checked against its signature); this
//! module is the only place that launches, and each launcher's caller has
//! checked the element counts the comments below rely on.

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DriverError,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

const SOURCE: &str = include_str!("kernels.cu");

/// Threads per block of the row and reduction kernels (`ROW` in kernels.cu).
const ROW: u32 = 256;
/// Threads per block of the elementwise kernels.
const BLOCK: u32 = 256;
/// Most blocks launched; grid-stride loops cover the rest.
const MAX_BLOCKS: usize = 1 << 16;

fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (ROW, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Sizes as the kernels take them (`long long`, `int`); tensors never
/// exceed 16 GiB, so element counts fit.
fn i64_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub struct Kernels {
    binary: CudaFunction,
    unary: CudaFunction,
    softmax: CudaFunction,
    layer_norm: CudaFunction,
    rms_norm: CudaFunction,
    permute_b32: CudaFunction,
    permute_b16: CudaFunction,
    sum: CudaFunction,
    scale: CudaFunction,
    axpy: CudaFunction,
    axpy_self: CudaFunction,
}

/// Dimensions and strides for the indexing kernels, as one device array.
pub type Meta = CudaSlice<i64>;

impl Kernels {
    /// Compile the kernels for `ctx`'s device.
    pub fn compile(ctx: &Arc<CudaContext>) -> Result<Kernels, String> {
        let opts = CompileOptions {
            // No fused multiply-add: products and sums round as on the CPU.
            fmad: Some(false),
            name: Some("nexus_tensor_kernels.cu".into()),
            ..CompileOptions::default()
        };
        let ptx = compile_ptx_with_opts(SOURCE, opts)
            .map_err(|e| format!("NVRTC could not compile the kernels: {e}"))?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| format!("the driver could not load the kernels: {e}"))?;
        let f = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| format!("kernel {name}: {e}"))
        };
        Ok(Kernels {
            binary: f("binary_f32")?,
            unary: f("unary_f32")?,
            softmax: f("softmax_f32")?,
            layer_norm: f("layer_norm_f32")?,
            rms_norm: f("rms_norm_f32")?,
            permute_b32: f("permute_b32")?,
            permute_b16: f("permute_b16")?,
            sum: f("sum_f32")?,
            scale: f("scale_f32")?,
            axpy: f("axpy_f32")?,
            axpy_self: f("axpy_self_f32")?,
        })
    }

    /// `out = a op b` (op 0..=3: add, sub, mul, div) over `n` output
    /// elements; `meta` holds the output dims then a's and b's strides.
    #[allow(clippy::too_many_arguments)]
    pub fn binary(
        &self,
        stream: &Arc<CudaStream>,
        op: i32,
        n: usize,
        rank: usize,
        meta: &Meta,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), DriverError> {
        let (n64, rank) = (i64_of(n), rank as i32);
        let mut l = stream.launch_builder(&self.binary);
        l.arg(&op)
            .arg(&n64)
            .arg(&rank)
            .arg(meta)
            .arg(a)
            .arg(b)
            .arg(out);
        // SAFETY: the arguments are binary_f32's (int, long long, int, const
        // long long*, const float*, const float*, float*) in order. The caller
        // checked that meta holds 3 * rank values, that `out` holds n
        // elements and that the strides keep every offset inside a and b
        // (they come from the checked plan of those shapes).
        unsafe { l.launch(elementwise(n)) }.map(drop)
    }

    /// `out = act(x)` (op 0 relu, 1 gelu, 2 silu) over `n` elements.
    pub fn unary(
        &self,
        stream: &Arc<CudaStream>,
        op: i32,
        n: usize,
        x: &CudaView<'_, f32>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), DriverError> {
        let n64 = i64_of(n);
        let mut l = stream.launch_builder(&self.unary);
        l.arg(&op).arg(&n64).arg(x).arg(out);
        // SAFETY: unary_f32(int, long long, const float*, float*); x and out
        // hold n elements (checked by the caller).
        unsafe { l.launch(elementwise(n)) }.map(drop)
    }

    /// Softmax of `rows` rows of `len` elements.
    pub fn softmax(
        &self,
        stream: &Arc<CudaStream>,
        rows: usize,
        len: usize,
        x: &CudaView<'_, f32>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), DriverError> {
        let (r, n) = (i64_of(rows), i64_of(len));
        let mut l = stream.launch_builder(&self.softmax);
        l.arg(&r).arg(&n).arg(x).arg(out);
        // SAFETY: softmax_f32(long long, long long, const float*, float*),
        // launched with ROW threads per block as it requires; x and out hold
        // rows * len elements (checked by the caller).
        unsafe { l.launch(per_row(rows)) }.map(drop)
    }

    /// Layer norm of each row; `g`/`b` are read only when `has_g`/`has_b`
    /// (the caller passes `x` in their place otherwise).
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm(
        &self,
        stream: &Arc<CudaStream>,
        rows: usize,
        len: usize,
        eps: f32,
        g: Option<&CudaView<'_, f32>>,
        b: Option<&CudaView<'_, f32>>,
        x: &CudaView<'_, f32>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), DriverError> {
        let (r, n) = (i64_of(rows), i64_of(len));
        let (has_g, has_b) = (i32::from(g.is_some()), i32::from(b.is_some()));
        let mut l = stream.launch_builder(&self.layer_norm);
        l.arg(&r)
            .arg(&n)
            .arg(&eps)
            .arg(&has_g)
            .arg(&has_b)
            .arg(x)
            .arg(g.unwrap_or(x))
            .arg(b.unwrap_or(x))
            .arg(out);
        // SAFETY: layer_norm_f32(long long, long long, float, int, int, const
        // float* x3, float*) with ROW threads per block; x and out hold rows *
        // len elements, g and b (read only when present) hold len (checked by
        // the caller).
        unsafe { l.launch(per_row(rows)) }.map(drop)
    }

    /// RMS norm of each row; `w` is read only when present.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm(
        &self,
        stream: &Arc<CudaStream>,
        rows: usize,
        len: usize,
        eps: f32,
        w: Option<&CudaView<'_, f32>>,
        x: &CudaView<'_, f32>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), DriverError> {
        let (r, n) = (i64_of(rows), i64_of(len));
        let has_w = i32::from(w.is_some());
        let mut l = stream.launch_builder(&self.rms_norm);
        l.arg(&r)
            .arg(&n)
            .arg(&eps)
            .arg(&has_w)
            .arg(x)
            .arg(w.unwrap_or(x))
            .arg(out);
        // SAFETY: rms_norm_f32(long long, long long, float, int, const float*
        // x2, float*) with ROW threads per block; x and out hold rows * len
        // elements, w (read only when present) holds len.
        unsafe { l.launch(per_row(rows)) }.map(drop)
    }

    /// Axis permutation of `n` elements of 4 bytes (`wide`) or 2 bytes;
    /// `meta` holds the output dims then the input's strides in output
    /// order. Views are of raw bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn permute(
        &self,
        stream: &Arc<CudaStream>,
        wide: bool,
        n: usize,
        rank: usize,
        meta: &Meta,
        x: &CudaView<'_, u8>,
        out: &mut CudaViewMut<'_, u8>,
    ) -> Result<(), DriverError> {
        let (n64, rank) = (i64_of(n), rank as i32);
        let f = if wide {
            &self.permute_b32
        } else {
            &self.permute_b16
        };
        let mut l = stream.launch_builder(f);
        l.arg(&n64).arg(&rank).arg(meta).arg(x).arg(out);
        // SAFETY: permute_b32/b16(long long, int, const long long*, const
        // uint*/ushort*, uint*/ushort*); meta holds 2 * rank values, x and out
        // hold n elements of the width chosen (checked by the caller) and the
        // permuted strides address only elements of x's shape.
        unsafe { l.launch(elementwise(n)) }.map(drop)
    }

    /// Sums (means) over the reduced axes into `n_out` outputs of `n_red`
    /// elements each; `meta`: kept dims, kept strides, reduced dims, reduced
    /// strides.
    #[allow(clippy::too_many_arguments)]
    pub fn sum(
        &self,
        stream: &Arc<CudaStream>,
        n_out: usize,
        n_red: usize,
        kept: usize,
        reduced: usize,
        meta: &Meta,
        mean: bool,
        x: &CudaView<'_, f32>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), DriverError> {
        let (o, r) = (i64_of(n_out), i64_of(n_red));
        let (rk, rr, mean) = (kept as i32, reduced as i32, i32::from(mean));
        let mut l = stream.launch_builder(&self.sum);
        l.arg(&o)
            .arg(&r)
            .arg(&rk)
            .arg(&rr)
            .arg(meta)
            .arg(&mean)
            .arg(x)
            .arg(out);
        // SAFETY: sum_f32(long long, long long, int, int, const long long*,
        // int, const float*, float*) with ROW threads per block; meta holds
        // 2 * (kept + reduced) values describing x's own shape, out holds
        // n_out elements (checked by the caller).
        unsafe { l.launch(per_row(n_out)) }.map(drop)
    }

    /// `x *= alpha` over `n` elements.
    pub fn scale(
        &self,
        stream: &Arc<CudaStream>,
        n: usize,
        alpha: f32,
        x: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), DriverError> {
        let n64 = i64_of(n);
        let mut l = stream.launch_builder(&self.scale);
        l.arg(&n64).arg(&alpha).arg(x);
        // SAFETY: scale_f32(long long, float, float*); x holds n elements.
        unsafe { l.launch(elementwise(n)) }.map(drop)
    }

    /// `y += alpha * x` over `n` elements (`x` None: `y += alpha * y`).
    pub fn axpy(
        &self,
        stream: &Arc<CudaStream>,
        n: usize,
        alpha: f32,
        x: Option<&CudaView<'_, f32>>,
        y: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), DriverError> {
        let n64 = i64_of(n);
        let mut l = match x {
            Some(x) => {
                let mut l = stream.launch_builder(&self.axpy);
                l.arg(&n64).arg(&alpha).arg(x);
                l
            }
            None => {
                let mut l = stream.launch_builder(&self.axpy_self);
                l.arg(&n64).arg(&alpha);
                l
            }
        };
        l.arg(y);
        // SAFETY: axpy_f32(long long, float, const float*, float*) or
        // axpy_self_f32(long long, float, float*); x and y hold n elements.
        unsafe { l.launch(elementwise(n)) }.map(drop)
    }
}

//! The CUDA backend: tensors and allocations in GPU memory, copies between
//! host and device, matrix products through cuBLAS (`blas`) and the other
//! f32 operations through kernels compiled at run time with NVRTC
//! (`kernels`). libcuda, cuBLAS and NVRTC are loaded when the backend
//! opens, so a build with this backend needs no CUDA toolkit and runs on
//! machines without one. Without cuBLAS, matrix products run on the CPU;
//! without NVRTC, everything else does. Operations on f16, bf16 and i32
//! (and type-converting copies) have no device kernel: the service runs
//! them on the CPU over copies of the operands (docs/ai-tensor.md).
//!
//! All work goes to one CUDA stream, in submission order, and each call
//! waits for it before returning, so a fence the service reports complete
//! is complete on the device.

mod blas;
mod kernels;

use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, CudaView, CudaViewMut, DriverError};
use nexus_abi::ring::GpuBackend;

use super::{Backend, Saxpy};
use crate::cpu::elementwise::{Activation, Binary};
use crate::dtype::DType;
use crate::error::{Result, TensorError};
use crate::plan::{Kind, Plan};
use crate::shape::contiguous_strides;
use crate::storage::Memory;
use kernels::Kernels;

/// A buffer of device memory.
pub struct DeviceBuf {
    bytes: CudaSlice<u8>,
}

impl DeviceBuf {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The first `n` f32 elements.
    fn f32s(&self, n: usize) -> Result<CudaView<'_, f32>> {
        // SAFETY: every bit pattern is a valid f32; `transmute` refuses a view
        // longer than the buffer, and device allocations are aligned far
        // beyond 4 bytes.
        unsafe { self.bytes.transmute::<f32>(n) }.ok_or_else(too_small)
    }

    fn f32s_mut(&mut self, n: usize) -> Result<CudaViewMut<'_, f32>> {
        // SAFETY: as in `f32s`.
        unsafe { self.bytes.transmute_mut::<f32>(n) }.ok_or_else(too_small)
    }
}

fn too_small() -> TensorError {
    TensorError::internal("a device buffer is smaller than its tensor")
}

fn driver(e: DriverError) -> TensorError {
    if e.0 == cudarc::driver::sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
        TensorError::no_memory(format!("the GPU is out of memory: {e}"))
    } else {
        TensorError::internal(format!("CUDA: {e}"))
    }
}

fn device(mem: &Memory) -> Result<&DeviceBuf> {
    match mem {
        Memory::Cuda(b) => Ok(b),
        Memory::Host(_) => Err(TensorError::internal(
            "the CUDA backend was handed host memory",
        )),
    }
}

fn device_mut(mem: &mut Memory) -> Result<&mut DeviceBuf> {
    match mem {
        Memory::Cuda(b) => Ok(b),
        Memory::Host(_) => Err(TensorError::internal(
            "the CUDA backend was handed host memory",
        )),
    }
}

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// cuBLAS, when its library is there; one handle, used by one call at a time.
    blas: Option<Mutex<CudaBlas>>,
    /// The NVRTC-compiled kernels, when NVRTC is there.
    kernels: Option<Kernels>,
    name: String,
}

impl CudaBackend {
    /// Device `ordinal`, or why it cannot be used (no driver, no device).
    /// A missing cuBLAS or NVRTC is logged and leaves that part to the CPU.
    pub fn open(ordinal: usize) -> std::result::Result<CudaBackend, String> {
        // SAFETY: tries to load the driver library by its usual names; the
        // library's initialisers are the driver's own.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no NVIDIA driver library (libcuda.so) was found".into());
        }
        let count = CudaContext::device_count()
            .map_err(|e| format!("the CUDA driver did not start: {e}"))?;
        if usize::try_from(count).map_or(true, |c| c <= ordinal) {
            return Err(format!(
                "the NVIDIA driver reports {count} device(s), none with index {ordinal}"
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("device {ordinal}: {e}"))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| format!("device {ordinal}: no stream: {e}"))?;
        let mut name = ctx.name().unwrap_or_else(|_| "NVIDIA GPU".into());
        if let Ok((major, minor)) = ctx.compute_capability() {
            name.push_str(&format!(" (sm_{major}{minor})"));
        }
        // SAFETY: as for the driver library above.
        let blas = if unsafe { cudarc::cublas::sys::is_culib_present() } {
            match CudaBlas::new(stream.clone()) {
                Ok(b) => Some(Mutex::new(b)),
                Err(e) => {
                    tracing::warn!("cuBLAS did not start ({e}): matrix products run on the CPU");
                    None
                }
            }
        } else {
            tracing::warn!(
                "no cuBLAS library (libcublas.so) found: matrix products run on the CPU"
            );
            None
        };
        // SAFETY: as for the driver library above.
        let kernels = if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            match Kernels::compile(&ctx) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!("{e}: operations other than matmul run on the CPU");
                    None
                }
            }
        } else {
            tracing::warn!(
                "no NVRTC library (libnvrtc.so) found: operations other than matmul run on the CPU"
            );
            None
        };
        Ok(CudaBackend {
            ctx,
            stream,
            blas,
            kernels,
            name,
        })
    }

    /// Whether cuBLAS and the kernels are both there (every f32 operation
    /// runs on the device).
    pub fn complete(&self) -> bool {
        self.blas.is_some() && self.kernels.is_some()
    }

    fn meta(&self, values: &[usize]) -> Result<kernels::Meta> {
        // Never empty (a zero-length allocation is refused by some drivers).
        let mut v: Vec<i64> = values.iter().map(|&x| x as i64).collect();
        v.push(0);
        self.stream.clone_htod(&v).map_err(driver)
    }

    fn finish(&self) -> Result<bool> {
        self.stream.synchronize().map_err(driver)?;
        Ok(true)
    }

    fn run_f32(&self, plan: &Plan, inputs: &[&Memory], out: &mut Memory) -> Result<bool> {
        let n_out = plan.out_shape.numel();
        let (_, x_shape) = &plan.inputs[0];
        let views: Vec<CudaView<'_, f32>> = inputs
            .iter()
            .zip(&plan.inputs)
            .map(|(m, (_, s))| device(m)?.f32s(s.numel()))
            .collect::<Result<_>>()?;
        let out_buf = device_mut(out)?;
        let mut o = out_buf.f32s_mut(n_out)?;
        let s = &self.stream;
        if let Kind::MatMul(mm) = &plan.kind {
            let Some(blas) = &self.blas else {
                return Ok(false);
            };
            let blas = blas.lock().unwrap_or_else(|e| e.into_inner());
            if !blas::matmul(&blas, mm, &views[0], &views[1], &mut o)? {
                return Ok(false);
            }
            drop(blas);
            return self.finish();
        }
        let Some(k) = &self.kernels else {
            return Ok(false);
        };
        let rows_of = |len: usize| x_shape.numel() / len.max(1);
        match &plan.kind {
            Kind::Binary(op) => {
                let dims = plan.out_shape.dims();
                let (sa, sb) = (plan.operand_strides(0), plan.operand_strides(1));
                let dense = contiguous_strides(dims);
                // Same shapes: one flat run.
                let meta = if sa == dense && sb == dense {
                    vec![n_out, 1, 1]
                } else {
                    [dims, &sa, &sb].concat()
                };
                let rank = meta.len() / 3;
                let meta = self.meta(&meta)?;
                let op = match op {
                    Binary::Add => 0,
                    Binary::Sub => 1,
                    Binary::Mul => 2,
                    Binary::Div => 3,
                };
                k.binary(s, op, n_out, rank, &meta, &views[0], &views[1], &mut o)
                    .map_err(driver)?;
            }
            Kind::Activation(act) => {
                let op = match act {
                    Activation::Relu => 0,
                    Activation::Gelu => 1,
                    Activation::Silu => 2,
                };
                k.unary(s, op, n_out, &views[0], &mut o).map_err(driver)?;
            }
            Kind::Softmax => {
                let len = *x_shape.dims().last().unwrap_or(&1);
                k.softmax(s, rows_of(len), len, &views[0], &mut o)
                    .map_err(driver)?;
            }
            Kind::LayerNorm { eps, gamma, beta } => {
                let len = *x_shape.dims().last().unwrap_or(&1);
                let g = gamma.then(|| &views[1]);
                let b = beta.then(|| &views[2]);
                k.layer_norm(s, rows_of(len), len, *eps, g, b, &views[0], &mut o)
                    .map_err(driver)?;
            }
            Kind::RmsNorm { eps, weight } => {
                let len = *x_shape.dims().last().unwrap_or(&1);
                let w = weight.then(|| &views[1]);
                k.rms_norm(s, rows_of(len), len, *eps, w, &views[0], &mut o)
                    .map_err(driver)?;
            }
            Kind::Reduce { mean, reduce } => {
                let in_strides = contiguous_strides(x_shape.dims());
                let pick = |want: bool| -> (Vec<usize>, Vec<usize>) {
                    x_shape
                        .dims()
                        .iter()
                        .zip(&in_strides)
                        .zip(reduce)
                        .filter(|(_, &r)| r == want)
                        .map(|((&d, &st), _)| (d, st))
                        .unzip()
                };
                let (kept, kept_strides) = pick(false);
                let (red, red_strides) = pick(true);
                let n_red: usize = red.iter().product();
                let meta =
                    self.meta(&[kept.clone(), kept_strides, red.clone(), red_strides].concat())?;
                k.sum(
                    s,
                    n_out,
                    n_red,
                    kept.len(),
                    red.len(),
                    &meta,
                    *mean,
                    &views[0],
                    &mut o,
                )
                .map_err(driver)?;
            }
            Kind::MatMul(_) | Kind::Copy | Kind::Transpose { .. } => return Ok(false),
        }
        self.finish()
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> GpuBackend {
        GpuBackend::Cuda
    }

    fn describe(&self) -> String {
        let (total, _) = self.memory_info();
        let yes = |b: bool| if b { "yes" } else { "no (CPU fallback)" };
        format!(
            "cuda: {}, {} MiB; cuBLAS {}; kernels {}",
            self.name,
            total >> 20,
            yes(self.blas.is_some()),
            yes(self.kernels.is_some())
        )
    }

    fn memory_info(&self) -> (u64, u64) {
        // Frees are stream-ordered: let them finish (and the driver's pool give the
        // memory back) before asking.
        let _ = self.stream.synchronize();
        self.ctx
            .mem_get_info()
            .map_or((0, 0), |(free, total)| (total as u64, free as u64))
    }

    fn alloc(&self, len: usize) -> Result<Memory> {
        let bytes = self.stream.alloc_zeros::<u8>(len.max(1)).map_err(driver)?;
        // Zeroed before any other work on the stream can read it.
        self.stream.synchronize().map_err(driver)?;
        Ok(Memory::Cuda(DeviceBuf { bytes }))
    }

    fn write(&self, mem: &mut Memory, offset: usize, data: &[u8]) -> Result<()> {
        let buf = device_mut(mem)?;
        let end = offset
            .checked_add(data.len())
            .filter(|&e| e <= buf.len())
            .ok_or_else(too_small)?;
        let mut dst = buf.bytes.slice_mut(offset..end);
        self.stream.memcpy_htod(data, &mut dst).map_err(driver)?;
        self.stream.synchronize().map_err(driver)
    }

    fn read(&self, mem: &Memory, offset: usize, out: &mut [u8]) -> Result<()> {
        let buf = device(mem)?;
        let end = offset
            .checked_add(out.len())
            .filter(|&e| e <= buf.len())
            .ok_or_else(too_small)?;
        let src = buf.bytes.slice(offset..end);
        self.stream.memcpy_dtoh(&src, out).map_err(driver)?;
        self.stream.synchronize().map_err(driver)
    }

    fn run(&self, plan: &Plan, inputs: &[&Memory], out: &mut Memory) -> Result<bool> {
        let dt = plan.inputs[0].0;
        match &plan.kind {
            // Pure data movement works for every element type.
            Kind::Copy if plan.out_dtype == dt => {
                let len = plan.out_shape.numel() * dt.size();
                let src = device(inputs[0])?.bytes.slice(..len);
                let out = device_mut(out)?;
                if out.len() < len {
                    return Err(too_small());
                }
                let mut dst = out.bytes.slice_mut(..len);
                self.stream.memcpy_dtod(&src, &mut dst).map_err(driver)?;
                self.finish()
            }
            Kind::Transpose { perm } if matches!(dt.size(), 2 | 4) => {
                let Some(k) = &self.kernels else {
                    return Ok(false);
                };
                let dims = plan.inputs[0].1.dims();
                let strides = contiguous_strides(dims);
                let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
                let src: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
                let n = plan.out_shape.numel();
                let len = n * dt.size();
                let x = device(inputs[0])?;
                let out = device_mut(out)?;
                if x.len() < len || out.len() < len {
                    return Err(too_small());
                }
                let meta = self.meta(&[out_dims, src].concat())?;
                let xv = x.bytes.slice(..len);
                let mut ov = out.bytes.slice_mut(..len);
                k.permute(
                    &self.stream,
                    dt.size() == 4,
                    n,
                    perm.len(),
                    &meta,
                    &xv,
                    &mut ov,
                )
                .map_err(driver)?;
                self.finish()
            }
            _ if dt == DType::F32 && plan.out_dtype == DType::F32 => {
                self.run_f32(plan, inputs, out)
            }
            // f16, bf16, i32 and conversions: the host kernels.
            _ => Ok(false),
        }
    }

    fn saxpy(&self, op: Saxpy<'_>, alpha: f32, n: usize) -> Result<bool> {
        let Some(k) = &self.kernels else {
            return Ok(false);
        };
        let s = &self.stream;
        match op {
            Saxpy::Scale { x } => {
                let mut xv = device_mut(x)?.f32s_mut(n)?;
                k.scale(s, n, alpha, &mut xv).map_err(driver)?;
            }
            Saxpy::Axpy { x, y } => {
                let xv = device(x)?.f32s(n)?;
                let mut yv = device_mut(y)?.f32s_mut(n)?;
                k.axpy(s, n, alpha, Some(&xv), &mut yv).map_err(driver)?;
            }
            Saxpy::AxpySelf { y } => {
                let mut yv = device_mut(y)?.f32s_mut(n)?;
                k.axpy(s, n, alpha, None, &mut yv).map_err(driver)?;
            }
        }
        self.finish()
    }
}

//! The CUDA backend against the CPU backend: every operation on device
//! tensors gives what the CPU gives (to float rounding), f32 work really
//! runs on the device, device memory is allocated and given back, and
//! gaming priority moves device buffers to the host intact.
//!
//! These need an NVIDIA GPU and a build with the `cuda` feature:
//! `cargo test --release -p nexus-tensor --features cuda --test cuda_backend -- --ignored`.
//! Without them they are ignored (and fail with the reason if forced).

mod common;

use std::sync::Arc;

use common::*;
use nexus_abi::ring::{GpuBackend, OpCode, Placement, VramRegion};
use nexus_tensor::backend::{self, Backend};
use nexus_tensor::{Budgets, Command, Config, DType, Pool, Shape, Tenant, TensorService};

const NEEDS: &str = "needs a GPU: an NVIDIA driver and the cuda feature";

fn cuda() -> Arc<dyn Backend> {
    match backend::open_cuda() {
        Ok(b) => b,
        Err(why) => panic!("{NEEDS}: {why}"),
    }
}

fn on(backend: Arc<dyn Backend>) -> Arc<TensorService> {
    let mut c = Config::new(Budgets {
        bytes: [1 << 30, 1 << 30, 256 << 20, 1 << 30],
        graphics_owner: Some(Tenant::partition(0)),
    });
    c.threads = 2;
    c.max_wait = WAIT;
    TensorService::with_backend(c, backend)
}

/// The CPU service and the CUDA service side by side.
struct Pair {
    cpu: Arc<TensorService>,
    gpu: Arc<TensorService>,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            cpu: on(Arc::new(backend::cpu::CpuBackend)),
            gpu: on(cuda()),
        }
    }

    /// The same tensor on both, in device memory.
    fn put(&self, dt: DType, dims: &[u64], vals: &[f32]) -> u64 {
        let a = put_as(&self.cpu, T1, dt, dims, vals, Placement::Gpu);
        let b = put_as(&self.gpu, T1, dt, dims, vals, Placement::Gpu);
        assert_eq!(a, b, "both services number handles alike");
        a
    }

    /// Run `op` on both; compare within `tol` (relative); the GPU's values.
    fn check(&self, what: &str, op: OpCode, ins: &[u64], axes: &[u8], tol: f32) -> Vec<f32> {
        let (want, ws) = run(&self.cpu, op, ins, axes, 1e-5);
        let (got, gs) = run(&self.gpu, op, ins, axes, 1e-5);
        assert_eq!(gs, ws, "{what}: shapes");
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan());
            assert!(ok, "{what}: element {i}: GPU {g}, CPU {w}");
        }
        got
    }
}

#[test]
#[ignore = "needs a GPU: an NVIDIA driver and the cuda feature (cargo test -p nexus-tensor --features cuda -- --ignored)"]
fn the_backend_opens_with_cublas_and_kernels() {
    let b = cuda();
    assert_eq!(b.kind(), GpuBackend::Cuda);
    let d = b.describe();
    assert!(
        d.contains("cuBLAS yes") && d.contains("kernels yes"),
        "every f32 operation should run on the device: {d}"
    );
    let (total, free) = b.memory_info();
    assert!(total > 0 && free <= total, "{total} {free}");
}

#[test]
#[ignore = "needs a GPU: an NVIDIA driver and the cuda feature (cargo test -p nexus-tensor --features cuda -- --ignored)"]
fn matmul_on_the_device_matches_the_cpu() {
    let p = Pair::new();
    // Plain, odd sizes, and large enough for cuBLAS's tiled kernels.
    for (i, (m, k, n)) in [
        (1, 1, 1),
        (3, 7, 5),
        (31, 17, 33),
        (65, 129, 3),
        (300, 257, 190),
    ]
    .into_iter()
    .enumerate()
    {
        let a = p.put(
            DType::F32,
            &[m, k],
            &values((m * k) as usize, 2 * i as u64, 2.0),
        );
        let b = p.put(
            DType::F32,
            &[k, n],
            &values((k * n) as usize, 2 * i as u64 + 1, 2.0),
        );
        p.check("matmul", OpCode::MatMul, &[a, b], &[], 1e-4);
    }
    let (m, k, n) = (6, 10, 7);
    let v = |d: &[u64], s| values(d.iter().product::<u64>() as usize, s, 1.0);
    // Dense batches (strided batched sgemm), one matrix broadcast over all
    // batches (stride 0), and a partial broadcast (one sgemm per batch).
    let a = p.put(DType::F32, &[4, m, k], &v(&[4, m, k], 20));
    let b = p.put(DType::F32, &[4, k, n], &v(&[4, k, n], 21));
    p.check("batched matmul", OpCode::MatMul, &[a, b], &[], 1e-4);
    let a = p.put(DType::F32, &[2, 3, m, k], &v(&[2, 3, m, k], 22));
    let b = p.put(DType::F32, &[k, n], &v(&[k, n], 23));
    p.check("matmul, b broadcast", OpCode::MatMul, &[a, b], &[], 1e-4);
    let a = p.put(DType::F32, &[3, 1, m, k], &v(&[3, 1, m, k], 24));
    let b = p.put(DType::F32, &[2, k, n], &v(&[2, k, n], 25));
    p.check(
        "matmul, partial broadcast",
        OpCode::MatMul,
        &[a, b],
        &[],
        1e-4,
    );
    // i32 has no device kernel: the host computes it, same result.
    let a = p.put(
        DType::I32,
        &[5, 4],
        &v(&[5, 4], 26)
            .iter()
            .map(|x| (x * 100.0).round())
            .collect::<Vec<_>>(),
    );
    let b = p.put(
        DType::I32,
        &[4, 3],
        &v(&[4, 3], 27)
            .iter()
            .map(|x| (x * 100.0).round())
            .collect::<Vec<_>>(),
    );
    p.check(
        "i32 matmul (host fallback)",
        OpCode::MatMul,
        &[a, b],
        &[],
        0.0,
    );
}

#[test]
#[ignore = "needs a GPU: an NVIDIA driver and the cuda feature (cargo test -p nexus-tensor --features cuda -- --ignored)"]
fn elementwise_norms_layout_and_reductions_match_the_cpu() {
    let p = Pair::new();
    let a = p.put(DType::F32, &[4, 5, 3], &values(60, 1, 3.0));
    let b = p.put(DType::F32, &[5, 1], &values(5, 2, 3.0));
    let same = p.put(DType::F32, &[4, 5, 3], &values(60, 3, 3.0));
    for op in [OpCode::Add, OpCode::Sub, OpCode::Mul, OpCode::Div] {
        p.check("broadcast binary", op, &[a, b], &[], 1e-6);
        p.check("binary", op, &[a, same], &[], 1e-6);
    }
    // Large enough for many blocks and the grid-stride loop.
    let mut x = values(3 << 20, 4, 8.0);
    x[7] = f32::NAN;
    let hx = p.put(DType::F32, &[3, 1 << 20], &x);
    for op in [OpCode::Relu, OpCode::Gelu, OpCode::Silu] {
        p.check("activation", op, &[hx], &[], 1e-5);
    }
    // Rows longer and shorter than a block, large values.
    for (rows, len) in [(6u64, 37u64), (3, 5000), (1000, 1)] {
        let mut v = values((rows * len) as usize, 5, 5.0);
        v[0] = 1e4;
        let h = p.put(DType::F32, &[rows, len], &v);
        let g = p.put(DType::F32, &[len], &values(len as usize, 6, 1.0));
        let be = p.put(DType::F32, &[len], &values(len as usize, 7, 1.0));
        p.check("softmax", OpCode::Softmax, &[h], &[], 1e-5);
        p.check("layernorm", OpCode::LayerNorm, &[h, g, be], &[], 1e-5);
        p.check(
            "layernorm, gamma only",
            OpCode::LayerNorm,
            &[h, g],
            &[],
            1e-5,
        );
        p.check("rmsnorm", OpCode::RmsNorm, &[h, g], &[], 1e-5);
        p.check("rmsnorm, no weight", OpCode::RmsNorm, &[h], &[], 1e-5);
    }
    let t = p.put(DType::F32, &[2, 3, 4, 5], &values(120, 8, 9.0));
    p.check("transpose", OpCode::Transpose, &[t], &[3, 1, 0, 2], 0.0);
    p.check("transpose last two", OpCode::Transpose, &[t], &[], 0.0);
    let h16 = p.put(DType::F16, &[7, 9], &values(63, 9, 4.0));
    p.check(
        "f16 transpose (2-byte kernel)",
        OpCode::Transpose,
        &[h16],
        &[1, 0],
        0.0,
    );
    p.check("f16 gelu (host fallback)", OpCode::Gelu, &[h16], &[], 1e-3);
    let hb16 = p.put(DType::BF16, &[7, 9], &values(63, 10, 4.0));
    p.check(
        "bf16 add (host fallback)",
        OpCode::Add,
        &[hb16, hb16],
        &[],
        1e-2,
    );
    p.check("copy", OpCode::Copy, &[t], &[], 0.0);
    for axes in [&[][..], &[0], &[1, 3], &[0, 1, 2, 3], &[2]] {
        p.check("sum", OpCode::Sum, &[t], axes, 1e-6);
        p.check("mean", OpCode::Mean, &[t], axes, 1e-6);
    }
    let big = p.put(DType::F32, &[1 << 20], &values(1 << 20, 11, 1.0));
    p.check("sum of 1M", OpCode::Sum, &[big], &[], 1e-6);
}

#[test]
#[ignore = "needs a GPU: an NVIDIA driver and the cuda feature (cargo test -p nexus-tensor --features cuda -- --ignored)"]
fn launches_fills_and_command_buffers_on_device_memory() {
    let p = Pair::new();
    let x = p.put(DType::F32, &[1000], &values(1000, 12, 2.0));
    let y = p.put(DType::F32, &[1000], &values(1000, 13, 2.0));
    let params = |h: &[u64], alpha: f32| {
        let mut v: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
        v.extend(1000u64.to_le_bytes());
        v.extend(alpha.to_bits().to_le_bytes());
        v
    };
    for svc in [&p.cpu, &p.gpu] {
        for (f, hs) in [
            ("scale_f32", &[x][..]),
            ("axpy_f32", &[x, y]),
            ("axpy_f32", &[y, y]),
        ] {
            let fence = svc.launch(T1, "nexus", f, 0, &params(hs, 0.75)).unwrap();
            svc.sync(T1, fence, WAIT).unwrap();
        }
        let fill = nexus_tensor::Fill {
            kind: nexus_abi::ring::FillKind::Normal,
            seed: 42,
            a: 1.0,
            b: 2.0,
        };
        let fence = svc.fill(T1, x, 1, fill).unwrap();
        svc.sync(T1, fence, WAIT).unwrap();
        let cmds = [
            Command::Fill {
                handle: y,
                offset: 8,
                len: 16,
                value: 0x3f,
            },
            Command::Copy {
                src: x,
                src_offset: 0,
                dst: y,
                dst_offset: 100,
                len: 64,
            },
        ];
        let fence = svc.gpu_exec(T1, 2, &cmds).unwrap();
        svc.sync(T1, fence, WAIT).unwrap();
    }
    for h in [x, y] {
        close(&get(&p.gpu, T1, h), &get(&p.cpu, T1, h), 1e-6);
    }
}

#[test]
#[ignore = "needs a GPU: an NVIDIA driver and the cuda feature (cargo test -p nexus-tensor --features cuda -- --ignored)"]
fn device_memory_is_allocated_and_given_back() {
    let svc = on(cuda());
    let st = svc.status();
    assert_eq!(st.backend, GpuBackend::Cuda);
    let before = st.device_free;
    let (h, _) = svc
        .gpu_alloc(T1, 512 << 20, VramRegion::ModelStorage)
        .unwrap();
    let during = svc.status().device_free;
    assert!(
        before.saturating_sub(during) >= 500 << 20,
        "512 MiB allocated, free went {before} -> {during}"
    );
    svc.gpu_free(T1, h).unwrap();
    // Several loops of tensors in device memory leave nothing behind.
    for i in 0..50u64 {
        let t = put_as(
            &svc,
            T1,
            DType::F32,
            &[1 << 18],
            &values(1 << 18, i, 1.0),
            Placement::Gpu,
        );
        let (fence, out) = svc
            .op(T1, 0, OpCode::Relu, &[t], None, &[], 1e-5, None)
            .unwrap();
        // Freed while its work may still be queued: the bytes come back after.
        svc.free(T1, t).unwrap();
        svc.sync(T1, fence, WAIT).unwrap();
        svc.free(T1, out).unwrap();
    }
    let snap = svc.ledger().snapshot();
    assert!(snap.pools.iter().all(|p| p.used == 0), "{snap:?}");
    let after = svc.status().device_free;
    assert!(
        after + (64 << 20) >= before,
        "device memory not given back: free {before} -> {after}"
    );
}

#[test]
#[ignore = "needs a GPU: an NVIDIA driver and the cuda feature (cargo test -p nexus-tensor --features cuda -- --ignored)"]
fn gaming_priority_moves_device_buffers_to_the_host_intact() {
    let svc = on(cuda());
    let borrower = Tenant::partition(3);
    let x = values(4096, 14, 3.0);
    let t = svc
        .create(
            borrower,
            DType::F32,
            Shape::new(&[4096]).unwrap(),
            Placement::Gpu,
        )
        .unwrap()
        .handle;
    let mut bytes = vec![0u8; 4096 * 4];
    nexus_tensor::dtype::from_f32(DType::F32, &x, &mut bytes);
    svc.write(borrower, t, 0, &bytes).unwrap();
    let (buf, _) = svc
        .gpu_alloc(borrower, 64 << 20, VramRegion::Graphics)
        .unwrap();
    let back = svc.set_gaming(true).unwrap();
    assert_eq!(back.bytes, 64 << 20);
    let snap = svc.ledger().snapshot();
    assert_eq!(
        snap.tenant_bytes(Pool::Vram(VramRegion::Graphics), borrower),
        0
    );
    assert_eq!(get(&svc, borrower, t), x, "tensors elsewhere are untouched");
    svc.gpu_free(borrower, buf).unwrap();
}

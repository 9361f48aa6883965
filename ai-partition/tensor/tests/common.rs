//! Helpers shared by the tests: a service with small budgets, f32 tensors in
//! and out, and the plain reference definitions results are checked against.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use nexus_abi::ring::{OpCode, Placement};
use nexus_tensor::{Budgets, Config, DType, Shape, Tenant, TensorService};

pub const T1: Tenant = Tenant::partition(1);
pub const T2: Tenant = Tenant::partition(2);
pub const WAIT: Duration = Duration::from_secs(20);

/// Budgets: model storage, inference cache, graphics (owned by partition 0), host.
pub fn service_with(bytes: [u64; 4]) -> Arc<TensorService> {
    let mut c = Config::new(Budgets {
        bytes,
        graphics_owner: Some(Tenant::partition(0)),
    });
    c.threads = 2;
    c.max_wait = WAIT;
    TensorService::with_backend(c, Arc::new(nexus_tensor::backend::cpu::CpuBackend))
}

pub fn service() -> Arc<TensorService> {
    service_with([64 << 20, 64 << 20, 64 << 20, 256 << 20])
}

pub fn put(svc: &TensorService, t: Tenant, dims: &[u64], vals: &[f32]) -> u64 {
    put_as(svc, t, DType::F32, dims, vals, Placement::Host)
}

pub fn put_as(
    svc: &TensorService,
    t: Tenant,
    dt: DType,
    dims: &[u64],
    vals: &[f32],
    p: Placement,
) -> u64 {
    let info = svc.create(t, dt, Shape::new(dims).unwrap(), p).unwrap();
    let mut bytes = vec![0u8; vals.len() * dt.size()];
    nexus_tensor::dtype::from_f32(dt, vals, &mut bytes);
    svc.write(t, info.handle, 0, &bytes).unwrap();
    info.handle
}

pub fn get(svc: &TensorService, t: Tenant, h: u64) -> Vec<f32> {
    let info = svc.info(t, h).unwrap();
    let (bytes, rest) = svc.read(t, h, 0, info.bytes, WAIT).unwrap();
    assert_eq!(rest, 0);
    let mut out = vec![0f32; info.shape.numel()];
    nexus_tensor::dtype::to_f32(info.dtype, &bytes, &mut out);
    out
}

/// Run `op` creating its output; return the output's values and shape.
pub fn run(
    svc: &TensorService,
    op: OpCode,
    ins: &[u64],
    axes: &[u8],
    eps: f32,
) -> (Vec<f32>, Vec<usize>) {
    let (fence, out) = svc.op(T1, 0, op, ins, None, axes, eps, None).unwrap();
    svc.sync(T1, fence, WAIT).unwrap();
    let shape = svc.info(T1, out).unwrap().shape.dims().to_vec();
    (get(svc, T1, out), shape)
}

pub fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan()) || g == w;
        assert!(ok, "element {i}: got {g}, want {w}");
    }
}

/// Deterministic test values in roughly [-scale, scale].
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = nexus_tensor::cpu::fill::mix(seed, i);
            ((h >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

pub fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                .sum();
            c[i * n + j] = s as f32;
        }
    }
    c
}

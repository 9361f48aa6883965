//! Every operation against a straightforward reference: odd sizes, batched
//! and broadcast (non-contiguous) operands, large values, f16/bf16/i32.

mod common;

use common::*;
use nexus_abi::ring::{OpCode, Placement};
use nexus_tensor::DType;

#[test]
fn matmul_odd_sizes_and_batched_broadcast() {
    let svc = service();
    for (m, k, n) in [(1, 1, 1), (3, 7, 5), (31, 17, 33), (65, 129, 3)] {
        let a = values(m * k, 1, 2.0);
        let b = values(k * n, 2, 2.0);
        let ha = put(&svc, T1, &[m as u64, k as u64], &a);
        let hb = put(&svc, T1, &[k as u64, n as u64], &b);
        let (c, shape) = run(&svc, OpCode::MatMul, &[ha, hb], &[], 1e-5);
        assert_eq!(shape, [m, n]);
        close(&c, &naive_matmul(&a, &b, m, k, n), 1e-4);
    }
    // [2, 3, m, k] x [k, n]: b is broadcast over both batch axes (stride 0).
    let (m, k, n) = (4, 6, 5);
    let a = values(2 * 3 * m * k, 3, 1.0);
    let b = values(k * n, 4, 1.0);
    let ha = put(&svc, T1, &[2, 3, m as u64, k as u64], &a);
    let hb = put(&svc, T1, &[k as u64, n as u64], &b);
    let (c, shape) = run(&svc, OpCode::MatMul, &[ha, hb], &[], 1e-5);
    assert_eq!(shape, [2, 3, m, n]);
    for batch in 0..6 {
        let want = naive_matmul(&a[batch * m * k..][..m * k], &b, m, k, n);
        close(&c[batch * m * n..][..m * n], &want, 1e-4);
    }
    // [3, 1, m, k] x [2, k, n] -> [3, 2, m, n]
    let a = values(3 * m * k, 5, 1.0);
    let b = values(2 * k * n, 6, 1.0);
    let ha = put(&svc, T1, &[3, 1, m as u64, k as u64], &a);
    let hb = put(&svc, T1, &[2, k as u64, n as u64], &b);
    let (c, shape) = run(&svc, OpCode::MatMul, &[ha, hb], &[], 1e-5);
    assert_eq!(shape, [3, 2, m, n]);
    for i in 0..3 {
        for j in 0..2 {
            let want = naive_matmul(&a[i * m * k..][..m * k], &b[j * k * n..][..k * n], m, k, n);
            close(&c[(i * 2 + j) * m * n..][..m * n], &want, 1e-4);
        }
    }
}

#[test]
fn matmul_of_a_transposed_operand() {
    // b^T computed by the transpose op, then used: same as the naive product with b.
    let svc = service();
    let (m, k, n) = (9, 11, 7);
    let a = values(m * k, 7, 1.0);
    let bt = values(n * k, 8, 1.0); // stored n x k
    let ha = put(&svc, T1, &[m as u64, k as u64], &a);
    let hbt = put(&svc, T1, &[n as u64, k as u64], &bt);
    let (fence, hb) = svc
        .op(T1, 0, OpCode::Transpose, &[hbt], None, &[], 1e-5, None)
        .unwrap();
    svc.sync(T1, fence, WAIT).unwrap();
    let (c, _) = run(&svc, OpCode::MatMul, &[ha, hb], &[], 1e-5);
    let mut b = vec![0f32; k * n];
    for p in 0..k {
        for j in 0..n {
            b[p * n + j] = bt[j * k + p];
        }
    }
    close(&c, &naive_matmul(&a, &b, m, k, n), 1e-4);
}

#[test]
fn elementwise_broadcasting_and_activations() {
    let svc = service();
    let a = values(4 * 5 * 3, 9, 3.0);
    let b = values(5, 10, 3.0);
    let ha = put(&svc, T1, &[4, 5, 3], &a);
    let hb = put(&svc, T1, &[5, 1], &b);
    for (op, f) in [
        (OpCode::Add, (|x, y| x + y) as fn(f32, f32) -> f32),
        (OpCode::Sub, |x, y| x - y),
        (OpCode::Mul, |x, y| x * y),
        (OpCode::Div, |x, y| x / y),
    ] {
        let (c, shape) = run(&svc, op, &[ha, hb], &[], 1e-5);
        assert_eq!(shape, [4, 5, 3]);
        let want: Vec<f32> = (0..60).map(|i| f(a[i], b[(i / 3) % 5])).collect();
        close(&c, &want, 1e-6);
    }
    let x = values(1001, 11, 8.0);
    let hx = put(&svc, T1, &[7, 11, 13], &x);
    let erf = |v: f64| libm::erf(v);
    for (op, f) in [
        (OpCode::Relu, (|v: f32| v.max(0.0)) as fn(f32) -> f32),
        (OpCode::Gelu, |v| {
            (0.5 * v as f64 * (1.0 + libm::erf(v as f64 / 2f64.sqrt()))) as f32
        }),
        (OpCode::Silu, |v| {
            (v as f64 / (1.0 + (-(v as f64)).exp())) as f32
        }),
    ] {
        let (c, _) = run(&svc, op, &[hx], &[], 1e-5);
        let want: Vec<f32> = x.iter().map(|&v| f(v)).collect();
        close(&c, &want, 1e-5);
    }
    let _ = erf;
}

#[test]
fn softmax_and_norms_over_the_last_axis_with_large_values() {
    let svc = service();
    let rows = 6;
    let len = 37;
    let mut x = values(rows * len, 12, 5.0);
    x[0] = 1e4; // would overflow exp() without the max subtraction
    x[len] = -1e4;
    let hx = put(&svc, T1, &[rows as u64, len as u64], &x);
    let (s, _) = run(&svc, OpCode::Softmax, &[hx], &[], 1e-5);
    for r in 0..rows {
        let row = &x[r * len..][..len];
        let max = row
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, |a, b| a.max(b as f64));
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let want: Vec<f32> = row
            .iter()
            .map(|&v| ((v as f64 - max).exp() / sum) as f32)
            .collect();
        close(&s[r * len..][..len], &want, 1e-5);
    }
    let g = values(len, 13, 1.0);
    let b = values(len, 14, 1.0);
    let (hg, hb) = (
        put(&svc, T1, &[len as u64], &g),
        put(&svc, T1, &[len as u64], &b),
    );
    let (ln, _) = run(&svc, OpCode::LayerNorm, &[hx, hg, hb], &[], 1e-3);
    let (rms, _) = run(&svc, OpCode::RmsNorm, &[hx, hg], &[], 1e-6);
    for r in 0..rows {
        let row: Vec<f64> = x[r * len..][..len].iter().map(|&v| v as f64).collect();
        let mean = row.iter().sum::<f64>() / len as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / len as f64;
        let want: Vec<f32> = (0..len)
            .map(|j| ((row[j] - mean) / (var + 1e-3).sqrt() * g[j] as f64 + b[j] as f64) as f32)
            .collect();
        close(&ln[r * len..][..len], &want, 1e-4);
        let ms = row.iter().map(|v| v * v).sum::<f64>() / len as f64;
        let want: Vec<f32> = (0..len)
            .map(|j| (row[j] / (ms + 1e-6).sqrt() * g[j] as f64) as f32)
            .collect();
        close(&rms[r * len..][..len], &want, 1e-4);
    }
}

#[test]
fn transpose_reshape_and_reductions() {
    let svc = service();
    let x: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
    let hx = put(&svc, T1, &[2, 3, 4], &x);
    let (t, shape) = run(&svc, OpCode::Transpose, &[hx], &[2, 0, 1], 1e-5);
    assert_eq!(shape, [4, 2, 3]);
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                assert_eq!(t[k * 6 + i * 3 + j], x[i * 12 + j * 4 + k]);
            }
        }
    }
    let to = nexus_tensor::Shape::new(&[6, 4]).unwrap();
    let (fence, hr) = svc
        .op(T1, 0, OpCode::Reshape, &[hx], None, &[], 1e-5, Some(&to))
        .unwrap();
    svc.sync(T1, fence, WAIT).unwrap();
    assert_eq!(get(&svc, T1, hr), x);
    let (s, shape) = run(&svc, OpCode::Sum, &[hx], &[1], 1e-5);
    assert_eq!(shape, [2, 4]);
    for i in 0..2 {
        for k in 0..4 {
            let want: f32 = (0..3).map(|j| x[i * 12 + j * 4 + k]).sum();
            assert_eq!(s[i * 4 + k], want);
        }
    }
    let (m, shape) = run(&svc, OpCode::Mean, &[hx], &[], 1e-5);
    assert_eq!(shape, Vec::<usize>::new());
    assert_eq!(m, [11.5]);
    // keepdims through an existing output of shape [2, 1, 4]
    let out = svc
        .create(
            T1,
            DType::F32,
            nexus_tensor::Shape::new(&[2, 1, 4]).unwrap(),
            Placement::Host,
        )
        .unwrap();
    let (fence, _) = svc
        .op(
            T1,
            0,
            OpCode::Sum,
            &[hx],
            Some(out.handle),
            &[1],
            1e-5,
            None,
        )
        .unwrap();
    svc.sync(T1, fence, WAIT).unwrap();
    assert_eq!(get(&svc, T1, out.handle), s);
}

#[test]
fn half_precision_and_integers() {
    let svc = service();
    let a = values(64 * 48, 20, 4.0);
    let b = values(48 * 40, 21, 4.0);
    for dt in [DType::F16, DType::BF16] {
        // The reference works on the values as the type stores them.
        let round = |v: &[f32]| {
            let mut bytes = vec![0u8; v.len() * 2];
            nexus_tensor::dtype::from_f32(dt, v, &mut bytes);
            let mut out = vec![0f32; v.len()];
            nexus_tensor::dtype::to_f32(dt, &bytes, &mut out);
            out
        };
        let ha = put_as(&svc, T1, dt, &[64, 48], &a, Placement::Gpu);
        let hb = put_as(&svc, T1, dt, &[48, 40], &b, Placement::Gpu);
        let (c, _) = run(&svc, OpCode::MatMul, &[ha, hb], &[], 1e-5);
        let want = round(&naive_matmul(&round(&a), &round(&b), 64, 48, 40));
        let tol = if dt == DType::F16 { 2e-3 } else { 1e-2 };
        close(&c, &want, tol);
        // Converting to f32 with copy gives the stored values exactly.
        let out = svc
            .create(
                T1,
                DType::F32,
                nexus_tensor::Shape::new(&[64, 48]).unwrap(),
                Placement::Host,
            )
            .unwrap();
        let (fence, _) = svc
            .op(
                T1,
                0,
                OpCode::Copy,
                &[ha],
                Some(out.handle),
                &[],
                1e-5,
                None,
            )
            .unwrap();
        svc.sync(T1, fence, WAIT).unwrap();
        assert_eq!(get(&svc, T1, out.handle), round(&a));
    }
    let xi: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
    let hi = put_as(&svc, T1, DType::I32, &[3, 4], &xi, Placement::Host);
    let hj = put_as(
        &svc,
        T1,
        DType::I32,
        &[4, 2],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        Placement::Host,
    );
    let (c, _) = run(&svc, OpCode::MatMul, &[hi, hj], &[], 1e-5);
    let want = naive_matmul(&xi, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 3, 4, 2);
    assert_eq!(c, want);
    let (r, _) = run(&svc, OpCode::Relu, &[hi], &[], 1e-5);
    assert_eq!(r, xi.iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
    let (s, _) = run(&svc, OpCode::Sum, &[hi], &[], 1e-5);
    assert_eq!(s, [xi.iter().sum::<f32>()]);
}

#[test]
fn seeded_fills_are_reproducible() {
    use nexus_abi::ring::FillKind;
    let svc = service();
    let shape = nexus_tensor::Shape::new(&[1000]).unwrap();
    let mk = || {
        svc.create(T1, DType::F32, shape.clone(), Placement::Gpu)
            .unwrap()
            .handle
    };
    let (a, b, c) = (mk(), mk(), mk());
    let how = |seed| nexus_tensor::Fill {
        kind: FillKind::Normal,
        seed,
        a: 0.0,
        b: 1.0,
    };
    for (h, seed) in [(a, 5), (b, 5), (c, 6)] {
        let f = svc.fill(T1, h, 3, how(seed)).unwrap();
        svc.sync(T1, f, WAIT).unwrap();
    }
    assert_eq!(get(&svc, T1, a), get(&svc, T1, b));
    assert_ne!(get(&svc, T1, a), get(&svc, T1, c));
    let want: Vec<f32> = (0..1000)
        .map(|i| nexus_tensor::cpu::fill::normal(5, i, 0.0, 1.0) as f32)
        .collect();
    assert_eq!(get(&svc, T1, a), want);
}

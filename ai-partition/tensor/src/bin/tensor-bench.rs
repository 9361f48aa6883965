//! Measures the kernels for `cargo xtask bench tensor`: on the CPU, f32 GEMM
//! GFLOP/s per size, elementwise add and a plain memory copy in GB/s; with
//! `--gpu`, f32 GEMM through the CUDA backend (device memory, cuBLAS, each
//! product waited for). Prints one JSON object; the xtask compares it with
//! numpy (CPU) or PyTorch (GPU) run the same way.
//!
//! Usage: tensor-bench --threads N [--sizes 256,512,1024,2048]
//!        tensor-bench --gpu [--sizes ...]

use std::time::Instant;

use nexus_tensor::cpu::elementwise::{self, Binary, Operand};
use nexus_tensor::cpu::gemm::{self, MatRef};
use rayon::prelude::*;

/// Best time of `f` over repeated runs: at least 3 and about `budget` seconds.
fn best(budget: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::MAX;
    let mut runs = 0;
    while runs < 3 || start.elapsed().as_secs_f64() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
        if start.elapsed().as_secs_f64() > 4.0 * budget && runs >= 3 {
            break;
        }
    }
    best
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    if std::env::args().any(|a| a == "--gpu") {
        let sizes: Vec<usize> = arg("--sizes")
            .unwrap_or_else(|| "256,512,1024,2048,4096".into())
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect();
        println!("{}", gpu::measure(&sizes));
        return;
    }
    let threads: usize = arg("--threads").and_then(|t| t.parse().ok()).unwrap_or(1);
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "256,512,1024,2048".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let mut gemm_rows = Vec::new();
    for &n in &sizes {
        let a: Vec<f32> = (0..n * n).map(|i| ((i * 7 % 13) as f32) * 0.1).collect();
        let b: Vec<f32> = (0..n * n).map(|i| ((i * 5 % 11) as f32) * 0.1).collect();
        let mut c = vec![0f32; n * n];
        let am = MatRef {
            data: &a,
            rows: n,
            cols: n,
            row_stride: n,
            col_stride: 1,
        };
        let bm = MatRef {
            data: &b,
            rows: n,
            cols: n,
            row_stride: n,
            col_stride: 1,
        };
        let t = pool.install(|| best(1.0, || assert!(gemm::matmul(am, bm, &mut c, threads))));
        let gflops = 2.0 * (n as f64).powi(3) / t / 1e9;
        gemm_rows.push(format!("{{\"n\": {n}, \"gflops\": {gflops:.2}}}"));
    }
    // Elementwise add and a copy over 64 MiB arrays: well past the caches.
    let len = 16 << 20;
    let x = vec![1.5f32; len];
    let y = vec![2.5f32; len];
    let mut z = vec![0f32; len];
    let dims = [len];
    let strides = [1usize];
    let add = pool.install(|| {
        best(1.0, || {
            let a = Operand {
                data: &x,
                strides: &strides,
            };
            let b = Operand {
                data: &y,
                strides: &strides,
            };
            elementwise::binary(Binary::Add, a, b, &dims, &mut z)
        })
    });
    let copy = pool.install(|| {
        best(1.0, || {
            z.par_chunks_mut(1 << 15)
                .zip(x.par_chunks(1 << 15))
                .for_each(|(d, s)| d.copy_from_slice(s))
        })
    });
    let bytes = (len * 4) as f64;
    println!(
        "{{\"threads\": {threads}, \"gemm\": [{}], \"add_gbps\": {:.2}, \"copy_gbps\": {:.2}}}",
        gemm_rows.join(", "),
        3.0 * bytes / add / 1e9,
        2.0 * bytes / copy / 1e9
    );
}

/// GEMM on the GPU through the backend the service uses.
mod gpu {
    use nexus_abi::ring::OpCode;
    use nexus_tensor::backend::{self, Backend};
    use nexus_tensor::{plan, DType, Shape};

    fn json_str(s: &str) -> String {
        format!("{:?}", s)
    }

    /// One JSON object: the device and GFLOP/s per size, or why there is
    /// no GPU to measure.
    pub fn measure(sizes: &[usize]) -> String {
        let b = match backend::open_cuda() {
            Ok(b) => b,
            Err(why) => return format!("{{\"gpu_error\": {}}}", json_str(&why)),
        };
        let mut rows = Vec::new();
        for &n in sizes {
            match gemm(b.as_ref(), n) {
                Ok(gflops) => rows.push(format!("{{\"n\": {n}, \"gflops\": {gflops:.1}}}")),
                Err(e) => {
                    return format!("{{\"gpu_error\": {}}}", json_str(&format!("n = {n}: {e}")))
                }
            }
        }
        format!(
            "{{\"device\": {}, \"gemm\": [{}]}}",
            json_str(&b.describe()),
            rows.join(", ")
        )
    }

    fn gemm(b: &dyn Backend, n: usize) -> Result<f64, String> {
        let shape = Shape::from_usize(&[n, n]).map_err(|e| e.message)?;
        let plan = plan::plan(
            OpCode::MatMul,
            &[(DType::F32, shape.clone()), (DType::F32, shape)],
            &[],
            1e-5,
            None,
            None,
        )
        .map_err(|e| e.message)?;
        let bytes = n * n * 4;
        let fill = |seed: usize| -> Vec<u8> {
            (0..n * n)
                .flat_map(|i| (((i * seed) % 13) as f32 * 0.1).to_le_bytes())
                .collect()
        };
        let mut x = b.alloc(bytes).map_err(|e| e.message)?;
        let mut y = b.alloc(bytes).map_err(|e| e.message)?;
        let mut out = b.alloc(bytes).map_err(|e| e.message)?;
        b.write(&mut x, 0, &fill(7)).map_err(|e| e.message)?;
        b.write(&mut y, 0, &fill(5)).map_err(|e| e.message)?;
        let mut failed = None;
        let t = super::best(1.0, || match b.run(&plan, &[&x, &y], &mut out) {
            Ok(true) => {}
            Ok(false) => failed = Some("the backend has no cuBLAS: matmul ran nowhere".to_string()),
            Err(e) => failed = Some(e.message),
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(2.0 * (n as f64).powi(3) / t / 1e9),
        }
    }
}

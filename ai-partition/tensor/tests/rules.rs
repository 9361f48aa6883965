//! Hostile and mistaken input: each refusal has its status, nothing leaks,
//! and one tenant never reaches another's handles.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use nexus_abi::ring::{OpCode, Placement, VramRegion};
use nexus_abi::Status;
use nexus_tensor::{
    Command, DType, Pool, ResidentModel, ResidentModels, Shape, Tenant, TensorService,
};

fn status<T: std::fmt::Debug>(r: nexus_tensor::Result<T>) -> Status {
    r.unwrap_err().status
}

#[test]
fn bad_shapes_types_and_handles_have_their_status() {
    let svc = service();
    let a = put(&svc, T1, &[2, 3], &[0.0; 6]);
    let b = put(&svc, T1, &[4, 5], &[0.0; 20]);
    let i = put_as(&svc, T1, DType::I32, &[2, 3], &[0.0; 6], Placement::Host);
    let op = |op, ins: &[u64], out, axes: &[u8]| {
        svc.op(T1, 0, op, ins, out, axes, 1e-5, None).map(|_| ())
    };
    assert_eq!(
        status(op(OpCode::MatMul, &[a, b], None, &[])),
        Status::ShapeMismatch
    );
    assert_eq!(
        status(op(OpCode::Add, &[a, b], None, &[])),
        Status::ShapeMismatch
    );
    assert_eq!(
        status(op(OpCode::Add, &[a, i], None, &[])),
        Status::DTypeMismatch
    );
    assert_eq!(
        status(op(OpCode::Softmax, &[i], None, &[])),
        Status::DTypeMismatch
    );
    assert_eq!(
        status(op(OpCode::Div, &[i, i], None, &[])),
        Status::DTypeMismatch
    );
    assert_eq!(
        status(op(OpCode::Transpose, &[a], None, &[0])),
        Status::ShapeMismatch
    );
    assert_eq!(
        status(op(OpCode::Sum, &[a], None, &[5])),
        Status::ShapeMismatch
    );
    assert_eq!(
        status(op(OpCode::Add, &[a], None, &[])),
        Status::InvalidArgument
    );
    // An output of the wrong shape or type.
    assert_eq!(
        status(op(OpCode::Relu, &[a], Some(b), &[])),
        Status::ShapeMismatch
    );
    assert_eq!(
        status(op(OpCode::Relu, &[a], Some(i), &[])),
        Status::DTypeMismatch
    );
    let err = svc
        .op(T1, 0, OpCode::MatMul, &[a, b], None, &[], 1e-5, None)
        .unwrap_err();
    assert!(err.message.contains("inner dimensions"), "{}", err.message);
    // Unknown handles, double free.
    assert_eq!(
        status(op(OpCode::Relu, &[999], None, &[])),
        Status::NotFound
    );
    assert_eq!(svc.free(T1, a), Ok(24));
    assert_eq!(status(svc.free(T1, a)), Status::NotFound);
    assert_eq!(status(svc.info(T1, a)), Status::NotFound);
    let h = svc
        .gpu_alloc(T1, 4096, VramRegion::InferenceCache)
        .unwrap()
        .0;
    assert_eq!(svc.gpu_free(T1, h), Ok(4096));
    assert_eq!(status(svc.gpu_free(T1, h)), Status::NotFound);
    // Sizes: overflow, over the 16 GiB limit, over the budget, misaligned.
    assert_eq!(
        status(Shape::new(&[u64::MAX, u64::MAX])),
        Status::LimitExceeded
    );
    let big = Shape::new(&[1 << 33]).unwrap();
    assert_eq!(
        status(svc.create(T1, DType::F32, big, Placement::Host)),
        Status::LimitExceeded
    );
    let over = Shape::new(&[(256 << 20) / 4 + 1]).unwrap();
    assert_eq!(
        status(svc.create(T1, DType::F32, over, Placement::Host)),
        Status::NoMemory
    );
    assert_eq!(
        status(svc.gpu_alloc(T1, 65 << 20, VramRegion::ModelStorage)),
        Status::NoMemory
    );
    assert_eq!(
        status(svc.gpu_alloc(T1, 4095, VramRegion::ModelStorage)),
        Status::InvalidArgument
    );
    // Transfers past the end, with offsets that would wrap.
    assert_eq!(
        status(svc.write(T1, b, u64::MAX - 1, &[0; 4])),
        Status::InvalidArgument
    );
    assert_eq!(status(svc.write(T1, b, 80, &[0])), Status::InvalidArgument);
    assert_eq!(
        status(svc.read(T1, b, 81, 1, WAIT)),
        Status::InvalidArgument
    );
    // Fences never issued.
    assert_eq!(status(svc.sync(T1, 1 << 48 | 99, WAIT)), Status::NotFound);
    assert_eq!(status(svc.sync(T1, 0, WAIT)), Status::NotFound);
}

#[test]
fn a_tenant_never_reaches_another_tenants_handles() {
    let svc = service();
    let mine = put(&svc, T1, &[4], &[1.0, 2.0, 3.0, 4.0]);
    let alloc = svc
        .gpu_alloc(T1, 4096, VramRegion::InferenceCache)
        .unwrap()
        .0;
    // Tenant 2 has handles of its own with the same numbers...
    let theirs = put(&svc, T2, &[4], &[9.0; 4]);
    assert_eq!(theirs, mine, "handles are per tenant");
    // ...and every path with tenant 1's other handle values finds nothing.
    assert_eq!(status(svc.info(T2, alloc)), Status::NotFound);
    assert_eq!(status(svc.gpu_free(T2, alloc)), Status::NotFound);
    assert_eq!(status(svc.free(T2, alloc)), Status::NotFound);
    let copy = [Command::Copy {
        src: alloc,
        src_offset: 0,
        dst: theirs,
        dst_offset: 0,
        len: 4,
    }];
    assert_eq!(status(svc.gpu_exec(T2, 0, &copy)), Status::NotFound);
    let f = svc
        .fill(
            T1,
            mine,
            0,
            nexus_tensor::Fill {
                kind: nexus_abi::ring::FillKind::Constant,
                seed: 0,
                a: 7.0,
                b: 0.0,
            },
        )
        .unwrap();
    assert_eq!(status(svc.sync(T2, f, WAIT)), Status::NotFound);
    svc.sync(T1, f, WAIT).unwrap();
    // Tenant 2 freeing "its" handle leaves tenant 1's tensor alone.
    svc.free(T2, theirs).unwrap();
    assert_eq!(get(&svc, T1, mine), [7.0; 4]);
}

#[test]
fn allocating_and_freeing_in_a_loop_returns_the_ledger_to_zero() {
    let svc = service();
    for i in 0..200u64 {
        let t = if i % 2 == 0 { T1 } else { T2 };
        let a = put(&svc, t, &[16, 16], &values(256, i, 1.0));
        let g = svc
            .create(
                t,
                DType::BF16,
                Shape::new(&[33, 7]).unwrap(),
                Placement::Gpu,
            )
            .unwrap()
            .handle;
        let (h, _) = svc.gpu_alloc(t, 8192, VramRegion::ModelStorage).unwrap();
        let (fence, out) = svc
            .op(
                t,
                (i % 3) as u32,
                OpCode::MatMul,
                &[a, a],
                None,
                &[],
                1e-5,
                None,
            )
            .unwrap();
        // Free while the work may still be queued: memory goes back once it ran.
        svc.free(t, a).unwrap();
        svc.free(t, out).unwrap();
        svc.free(t, g).unwrap();
        svc.gpu_free(t, h).unwrap();
        svc.sync(t, fence, WAIT).unwrap();
    }
    // Work still referencing freed tensors drops them when it finishes.
    let deadline = Instant::now() + WAIT;
    loop {
        let snap = svc.status().ledger;
        if snap
            .pools
            .iter()
            .all(|p| p.used == 0 && p.by_tenant.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ledger did not return to zero: {snap:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(svc.list(T1).is_empty() && svc.list(T2).is_empty());
}

#[test]
fn command_buffers_are_checked_before_anything_runs() {
    let svc = service();
    let a = svc
        .gpu_alloc(T1, 4096, VramRegion::InferenceCache)
        .unwrap()
        .0;
    let t = put(&svc, T1, &[4], &[0.0; 4]);
    let mut buf = vec![1u8];
    buf.extend(a.to_le_bytes());
    buf.extend(0u64.to_le_bytes());
    buf.extend(4u64.to_le_bytes());
    buf.push(0x3f);
    buf.push(2);
    for v in [a, 0, t, 0, 4] {
        buf.extend(v.to_le_bytes());
    }
    let cmds = TensorService::parse_commands(&buf).unwrap();
    let f = svc.gpu_exec(T1, 1, &cmds).unwrap();
    svc.sync(T1, f, WAIT).unwrap();
    assert_eq!(get(&svc, T1, t)[0], f32::from_le_bytes([0x3f; 4]));
    for bad in [&buf[..buf.len() - 1], &[9u8][..], &[][..]] {
        assert_eq!(
            status(TensorService::parse_commands(bad)),
            Status::InvalidArgument
        );
    }
    let past = [Command::Fill {
        handle: a,
        offset: 4090,
        len: 7,
        value: 0,
    }];
    assert_eq!(status(svc.gpu_exec(T1, 0, &past)), Status::InvalidArgument);
    let wrap = [Command::Fill {
        handle: a,
        offset: u64::MAX,
        len: 2,
        value: 0,
    }];
    assert_eq!(status(svc.gpu_exec(T1, 0, &wrap)), Status::InvalidArgument);
    // Built-in kernels: scale in place; unknown module and function.
    let mut params = t.to_le_bytes().to_vec();
    params.extend(4u64.to_le_bytes());
    params.extend(2.0f32.to_bits().to_le_bytes());
    let before = get(&svc, T1, t);
    let f = svc.launch(T1, "nexus", "scale_f32", 0, &params).unwrap();
    svc.sync(T1, f, WAIT).unwrap();
    assert_eq!(
        get(&svc, T1, t),
        before.iter().map(|v| v * 2.0).collect::<Vec<_>>()
    );
    assert_eq!(
        status(svc.launch(T1, "other", "scale_f32", 0, &params)),
        Status::NotFound
    );
    assert_eq!(
        status(svc.launch(T1, "nexus", "nope", 0, &params)),
        Status::NotFound
    );
    assert_eq!(
        status(svc.launch(T1, "nexus", "scale_f32", 0, &params[..19])),
        Status::InvalidArgument
    );
    let mut huge = t.to_le_bytes().to_vec();
    huge.extend(u64::MAX.to_le_bytes());
    huge.extend(0u32.to_le_bytes());
    assert_eq!(
        status(svc.launch(T1, "nexus", "scale_f32", 0, &huge)),
        Status::LimitExceeded
    );
}

#[test]
fn work_on_one_stream_runs_in_order() {
    let svc = service();
    let x = put(&svc, T1, &[1000], &vec![1.0; 1000]);
    let mut last = 0;
    for _ in 0..50 {
        // x = x + x, fifty times on stream 7: 2^50 only if each saw the previous.
        let (f, _) = svc
            .op(T1, 7, OpCode::Add, &[x, x], Some(x), &[], 1e-5, None)
            .unwrap();
        assert!(f > last);
        last = f;
    }
    assert_eq!(svc.sync(T1, last, WAIT).unwrap(), last);
    assert!(get(&svc, T1, x).iter().all(|&v| v == 2f32.powi(50)));
}

/// A model manager stand-in: names, sizes, busy and keep-alive.
struct FakeModels(Mutex<Vec<ResidentModel>>);

impl ResidentModels for FakeModels {
    fn resident(&self) -> Vec<ResidentModel> {
        self.0.lock().unwrap().clone()
    }
    fn evict(&self, name: &str) -> bool {
        let mut v = self.0.lock().unwrap();
        let before = v.len();
        v.retain(|m| m.name != name || m.busy);
        v.len() < before
    }
}

#[test]
fn over_budget_evicts_idle_models_by_keep_alive_then_refuses() {
    let svc = service_with([100 << 20, 64 << 20, 64 << 20, 256 << 20]);
    let now = Instant::now();
    let model = |name: &str, mib: u64, busy, secs: Option<u64>| ResidentModel {
        name: name.into(),
        weights_bytes: mib << 20,
        cache_bytes: 0,
        busy,
        expires_at: secs.map(|s| now + Duration::from_secs(s)),
    };
    let models = Arc::new(FakeModels(Mutex::new(vec![
        model("old", 30, false, Some(10)),
        model("recent", 30, false, Some(300)),
        model("pinned", 20, false, None),
        model("busy", 10, true, Some(1)),
    ])));
    svc.ledger().set_resident_models(models.clone());
    let used = |svc: &TensorService| {
        svc.status()
            .ledger
            .pool(Pool::Vram(VramRegion::ModelStorage))
            .used
    };
    assert_eq!(used(&svc), 90 << 20);
    // 30 MiB needs one eviction: the soonest-expiring idle model goes.
    svc.gpu_alloc(T1, 30 << 20, VramRegion::ModelStorage)
        .unwrap();
    let names: Vec<String> = models.resident().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["recent", "pinned", "busy"]);
    assert_eq!(used(&svc), 90 << 20);
    // 40 more: "recent" goes; pinned and busy stay, so 50 MiB cannot fit.
    let err = svc
        .gpu_alloc(T1, 50 << 20, VramRegion::ModelStorage)
        .unwrap_err();
    assert_eq!(err.status, Status::NoMemory);
    assert!(err.message.contains("model-storage"), "{}", err.message);
    let names: Vec<String> = models.resident().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["pinned", "busy"]);
    assert_eq!(svc.status().ledger.evictions, 2);
}

#[test]
fn gaming_priority_reclaims_the_graphics_region_at_once() {
    let svc = service();
    let gaming = Tenant::partition(0);
    let (borrowed, _) = svc.gpu_alloc(T1, 1 << 20, VramRegion::Graphics).unwrap();
    let t = put(&svc, T1, &[4], &[1.0, 2.0, 3.0, 4.0]);
    let graphics = |svc: &TensorService| {
        svc.status()
            .ledger
            .pool(Pool::Vram(VramRegion::Graphics))
            .used
    };
    assert_eq!(graphics(&svc), 1 << 20);
    let back = svc.set_gaming(true).unwrap();
    assert_eq!((back.buffers, back.bytes), (1, 1 << 20));
    assert_eq!(graphics(&svc), 0, "given back at once");
    // The borrower's handle still works (its bytes now live in host memory)...
    let copy = [Command::Copy {
        src: t,
        src_offset: 0,
        dst: borrowed,
        dst_offset: 0,
        len: 16,
    }];
    let f = svc.gpu_exec(T1, 0, &copy).unwrap();
    svc.sync(T1, f, WAIT).unwrap();
    // ...new borrowing waits, the owner is served.
    assert_eq!(
        status(svc.gpu_alloc(T1, 4096, VramRegion::Graphics)),
        Status::Busy
    );
    svc.gpu_alloc(gaming, 4096, VramRegion::Graphics).unwrap();
    svc.set_gaming(false).unwrap();
    svc.gpu_alloc(T1, 4096, VramRegion::Graphics).unwrap();
    assert_eq!(
        svc.status().ledger.tenant_bytes(Pool::Host, T1),
        (1 << 20) + 16
    );
}

//! Property tests: decoders never panic on arbitrary or mutated input, and
//! valid values always survive encoding (alone and through a ring).

use nexus_abi::ring::*;
use nexus_abi::{decode, Hypercall, Status};
use proptest::collection::vec;
use proptest::prelude::*;

const RING_BYTES: usize = 64 * 1024;

// ---- owned generators for every request and reply ----

#[derive(Clone, Debug)]
enum Req {
    Load(String, i64),
    Unload(String),
    List(u32, u16),
    Info(String),
    Alloc(u64, u8, u32),
    Exec(u32, Vec<u8>),
    Sync(u64, u32),
    Cuda(String, String, [u32; 3], [u32; 3], u32, u32, Vec<u8>),
    Create(u8, Vec<u64>, u8),
    Compute(u8, u64, u64, u64),
    Transfer(u64, u8, u64, u32, u32),
    Stream(u64, u64, u32, u32, u32),
    CCreate(String, String, u32, u64),
    CExec(u64, u32, Vec<String>),
    Docker(u8, String, Vec<u8>),
    K8s(String, String),
    GpuFree(u64),
    GpuStatus,
    TensorFree(u64),
    Op(u8, u32, Vec<u64>, u64, Vec<u8>, f32),
    Fill(u64, u32, u8, u64, f64, f64),
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._:/-]{1,64}"
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        (name(), -1i64..=i64::MAX).prop_map(|(n, k)| Req::Load(n, k)),
        name().prop_map(Req::Unload),
        (any::<u32>(), 1u16..=256).prop_map(|(s, m)| Req::List(s, m)),
        name().prop_map(Req::Info),
        (1u64..=(4 << 20), 0u8..3, 0u32..2).prop_map(|(p, r, f)| Req::Alloc(p * 4096, r, f)),
        (any::<u32>(), vec(any::<u8>(), 1..200)).prop_map(|(s, c)| Req::Exec(s, c)),
        (any::<u64>(), any::<u32>()).prop_map(|(f, t)| Req::Sync(f, t)),
        (
            name(),
            name(),
            [1u32..100_000, 1..100, 1..100],
            [1u32..=16, 1..=8, 1..=8],
            any::<u32>(),
            any::<u32>(),
            vec(any::<u8>(), 0..100)
        )
            .prop_map(|(m, f, g, b, s, st, p)| Req::Cuda(m, f, g, b, s, st, p)),
        (0u8..10, vec(1u64..8, 0..=8), 0u8..2).prop_map(|(d, s, p)| Req::Create(d, s, p)),
        (0u8..7, 1u64.., 1u64.., 1u64..).prop_map(|(o, a, b, out)| Req::Compute(o, a, b, out)),
        (any::<u64>(), 0u8..2, any::<u64>(), 0u32..13, 1u32..=8192)
            .prop_map(|(t, d, o, p, l)| Req::Transfer(t, d, o, p * 4096, l)),
        (
            any::<u64>(),
            any::<u64>(),
            0u32..13,
            1u32..=8192,
            any::<u32>()
        )
            .prop_map(|(t, o, p, l, ms)| Req::Stream(t, o, p * 4096, l, ms)),
        (name(), "[a-z0-9-]{0,30}", 1u32..=256, 1u64..(1 << 20))
            .prop_map(|(i, n, c, m)| Req::CCreate(i, n, c, m * 4096)),
        (any::<u64>(), any::<u32>(), vec(text(), 1..=8)).prop_map(|(c, t, a)| Req::CExec(c, t, a)),
        (0u8..6, "/[a-z0-9/._-]{0,60}", vec(any::<u8>(), 0..200))
            .prop_map(|(m, p, b)| Req::Docker(m, p, b)),
        ("[a-z0-9-]{1,63}", "\\PC{1,200}").prop_map(|(n, m)| Req::K8s(n, m)),
        (1u64..).prop_map(Req::GpuFree),
        Just(Req::GpuStatus),
        (1u64..).prop_map(Req::TensorFree),
        (
            0u8..16,
            any::<u32>(),
            vec(1u64.., 1..=3),
            1u64..,
            Just(()).prop_perturb(|_, mut rng| {
                // A random permutation prefix: distinct axes below 8.
                let mut all: Vec<u8> = (0..8).collect();
                for i in (1..all.len()).rev() {
                    all.swap(i, rng.random_range(0..=i));
                }
                all.truncate(rng.random_range(0..=8));
                all
            }),
            prop_oneof![Just(0.0f32), 1e-12f32..1.0],
        )
            .prop_map(|(o, s, i, out, axes, eps)| Req::Op(o, s, i, out, axes, eps)),
        (
            1u64..,
            any::<u32>(),
            0u8..4,
            any::<u64>(),
            -1e9f64..1e9,
            0f64..1e9
        )
            .prop_map(|(t, s, k, seed, a, b)| Req::Fill(t, s, k, seed, a, b)),
    ]
}

impl Req {
    /// Borrow as a request; `argv` holds the `&str`s of a `CExec`.
    fn view<'a>(&'a self, argv: &'a mut Vec<&'a str>) -> RingRequest<'a> {
        match self {
            Req::Load(n, k) => RingRequest::ModelLoad(ModelLoadRequest {
                name: n,
                keep_alive_secs: *k,
            }),
            Req::Unload(n) => RingRequest::ModelUnload(ModelName { name: n }),
            Req::List(s, m) => RingRequest::ModelList(ModelListRequest {
                start: *s,
                max_entries: *m,
            }),
            Req::Info(n) => RingRequest::ModelInfo(ModelName { name: n }),
            Req::Alloc(b, r, f) => RingRequest::GpuAlloc(GpuAllocRequest {
                bytes: *b,
                region: VramRegion::from_u8(*r).unwrap(),
                flags: *f,
            }),
            Req::Exec(s, c) => RingRequest::GpuExec(GpuExecRequest {
                stream: *s,
                commands: c,
            }),
            Req::Sync(f, t) => RingRequest::GpuSync(GpuSyncRequest {
                fence: *f,
                timeout_ms: *t,
            }),
            Req::Cuda(m, f, g, b, s, st, p) => RingRequest::CudaLaunch(CudaLaunchRequest {
                module: m,
                function: f,
                grid: *g,
                block: *b,
                shared_mem_bytes: *s,
                stream: *st,
                params: p,
            }),
            Req::Create(d, s, p) => RingRequest::TensorCreate(TensorCreateRequest {
                dtype: DType::from_u8(*d).unwrap(),
                shape: Shape::new(s).unwrap(),
                placement: Placement::from_u8(*p).unwrap(),
            }),
            Req::Compute(o, a, b, out) => {
                let op = TensorOp::from_u8(*o).unwrap();
                let b = if op.arity() == 2 { *b } else { 0 };
                RingRequest::TensorCompute(TensorComputeRequest {
                    op,
                    a: *a,
                    b,
                    output: *out,
                })
            }
            Req::Transfer(t, d, o, p, l) => RingRequest::TensorTransfer(TensorTransferRequest {
                tensor: *t,
                direction: Direction::from_u8(*d).unwrap(),
                tensor_offset: *o,
                ring_offset: *p,
                len: *l,
            }),
            Req::Stream(t, o, p, l, ms) => RingRequest::TensorStream(TensorStreamRequest {
                tensor: *t,
                tensor_offset: *o,
                ring_offset: *p,
                max_len: *l,
                timeout_ms: *ms,
            }),
            Req::CCreate(i, n, c, m) => RingRequest::ContainerCreate(ContainerCreateRequest {
                image: i,
                name: n,
                cpus: *c,
                memory_bytes: *m,
            }),
            Req::CExec(c, t, a) => {
                argv.extend(a.iter().map(String::as_str));
                RingRequest::ContainerExec(ContainerExecRequest {
                    container: *c,
                    timeout_ms: *t,
                    argv: List::new(argv),
                })
            }
            Req::Docker(m, p, b) => RingRequest::DockerApi(DockerApiRequest {
                method: HttpMethod::from_u8(*m).unwrap(),
                path: p,
                body: b,
            }),
            Req::K8s(n, m) => RingRequest::K8sSchedule(K8sScheduleRequest {
                namespace: n,
                manifest: m,
            }),
            Req::GpuFree(h) => RingRequest::GpuFree(HandleRequest { handle: *h }),
            Req::GpuStatus => RingRequest::GpuStatus(GpuStatusRequest),
            Req::TensorFree(h) => RingRequest::TensorFree(HandleRequest { handle: *h }),
            Req::Op(o, s, i, out, axes, eps) => {
                // Shape the generated values to what the operation takes.
                let op = OpCode::from_u8(*o).unwrap();
                let (min, max) = op.inputs();
                let mut inputs = i.clone();
                inputs.resize(inputs.len().clamp(min, max), 1);
                let axes = if op.takes_axes() {
                    Axes::new(axes).unwrap()
                } else {
                    Axes::default()
                };
                let eps = if op.takes_eps() { *eps } else { 0.0 };
                RingRequest::TensorOp(
                    TensorOpRequest::new(op, *s, &inputs, *out, axes, eps).unwrap(),
                )
            }
            Req::Fill(t, s, k, seed, a, b) => {
                let kind = FillKind::from_u8(*k).unwrap();
                let (seed, a, b) = match kind {
                    FillKind::Zeros => (0, 0.0, 0.0),
                    FillKind::Constant => (0, *a, 0.0),
                    FillKind::Uniform => (*seed, *a, *a + 1.0 + *b),
                    FillKind::Normal => (*seed, *a, *b),
                };
                RingRequest::TensorFill(TensorFillRequest {
                    tensor: *t,
                    stream: *s,
                    kind,
                    seed,
                    a,
                    b,
                })
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Entry(String, u64, bool, String, String, String);

fn entry() -> impl Strategy<Value = Entry> {
    (name(), any::<u64>(), any::<bool>(), text(), text(), text())
        .prop_map(|(n, s, l, f, p, q)| Entry(n, s, l, f, p, q))
}

/// Replies of every call: (call index, numbers, strings, bytes, entries).
#[derive(Clone, Debug)]
struct Rep(usize, [u64; 3], [String; 5], Vec<u8>, Vec<Entry>);

fn rep() -> impl Strategy<Value = Rep> {
    (
        0usize..21,
        any::<[u64; 3]>(),
        (name(), text(), text(), text(), text()),
        vec(any::<u8>(), 0..200),
        vec(entry(), 0..6),
    )
        .prop_map(|(i, n, (a, b, c, d, e), bytes, entries)| {
            Rep(i, n, [a, b, c, d, e], bytes, entries)
        })
}

impl Rep {
    fn view<'a>(&'a self, entries: &'a mut Vec<ModelEntry<'a>>) -> RingReply<'a> {
        let Rep(i, [x, y, z], s, bytes, es) = self;
        let (x, y, z) = (*x, *y, *z);
        match i {
            0 => RingReply::ModelLoad(ModelLoadReply {
                size_bytes: x,
                load_duration_ns: y,
            }),
            1 => RingReply::ModelUnload(ModelUnloadReply {
                was_loaded: x & 1 == 1,
            }),
            2 => {
                entries.extend(es.iter().map(|Entry(n, s, l, f, p, q)| ModelEntry {
                    name: n,
                    size_bytes: *s,
                    loaded: *l,
                    family: f,
                    parameter_size: p,
                    quantization: q,
                }));
                RingReply::ModelList(ModelListReply {
                    total: x as u32,
                    entries: List::new(entries),
                })
            }
            3 => RingReply::ModelInfo(ModelInfo {
                name: &s[0],
                family: &s[1],
                format: &s[2],
                parameter_size: &s[3],
                quantization: &s[4],
                context_length: x as u32,
                embedding_length: y as u32,
                size_bytes: z,
                loaded: z & 1 == 0,
            }),
            4 => RingReply::GpuAlloc(GpuAllocReply {
                handle: x,
                bytes: y,
            }),
            5 => RingReply::GpuExec(FenceReply { fence: x }),
            6 => RingReply::GpuSync(GpuSyncReply { completed_fence: x }),
            7 => RingReply::CudaLaunch(FenceReply { fence: y }),
            8 => RingReply::TensorCreate(TensorCreateReply {
                tensor: x,
                bytes: y,
            }),
            9 => RingReply::TensorCompute(FenceReply { fence: z }),
            10 => RingReply::TensorTransfer(TensorDataReply {
                bytes: x as u32,
                remaining: y,
            }),
            11 => RingReply::TensorStream(TensorDataReply {
                bytes: y as u32,
                remaining: z,
            }),
            12 => RingReply::ContainerCreate(ContainerCreateReply { container: x }),
            13 => RingReply::ContainerExec(ContainerExecReply {
                exit_code: x as i32,
            }),
            14 => RingReply::DockerApi(DockerApiReply {
                http_status: x as u16,
                body: bytes,
            }),
            15 => RingReply::GpuFree(FreeReply { bytes: x }),
            16 => RingReply::GpuStatus(GpuStatusReply {
                backend: GpuBackend::from_u8((x & 1) as u8).unwrap(),
                gaming: y & 1 == 1,
                device_total: x,
                device_free: y,
                host_budget: z,
                host_used: x ^ y,
                host_caller: y ^ z,
                regions: List::new(&STATUS_REGIONS),
            }),
            17 => RingReply::TensorFree(FreeReply { bytes: y }),
            18 => RingReply::TensorOp(FenceReply { fence: z }),
            19 => RingReply::TensorFill(FenceReply { fence: x }),
            _ => RingReply::K8sSchedule(K8sScheduleReply { uid: &s[0] }),
        }
    }
}

static STATUS_REGIONS: [RegionStatus; 3] = [
    RegionStatus {
        region: VramRegion::ModelStorage,
        budget: 8 << 30,
        used: 5 << 30,
        caller: 1 << 30,
    },
    RegionStatus {
        region: VramRegion::InferenceCache,
        budget: 4 << 30,
        used: 0,
        caller: 0,
    },
    RegionStatus {
        region: VramRegion::Graphics,
        budget: 4 << 30,
        used: 4096,
        caller: 4096,
    },
];

// ---- a valid ring to mutate ----

fn valid_ring() -> Vec<u8> {
    let mut region = vec![0u8; RING_BYTES];
    let mut ring = RingMut::init(&mut region, 16).unwrap();
    let reqs = [
        RingRequest::ModelLoad(ModelLoadRequest {
            name: "llama3.2:1b",
            keep_alive_secs: -1,
        }),
        RingRequest::ModelList(ModelListRequest {
            start: 0,
            max_entries: 8,
        }),
        RingRequest::TensorTransfer(TensorTransferRequest {
            tensor: 1,
            direction: Direction::ToTensor,
            tensor_offset: 0,
            ring_offset: 8192,
            len: 4096,
        }),
        RingRequest::ContainerExec(ContainerExecRequest {
            container: 1,
            timeout_ms: 0,
            argv: List::new(&["sh", "-c", "true"]),
        }),
        RingRequest::DockerApi(DockerApiRequest {
            method: HttpMethod::Get,
            path: "/info",
            body: b"",
        }),
    ];
    for (i, r) in reqs.iter().enumerate() {
        ring.submit_in_slot(i as u32, i as u64, r).unwrap();
    }
    let entries = [ModelEntry {
        name: "llama3.2:1b",
        size_bytes: 1,
        loaded: true,
        family: "llama",
        parameter_size: "1B",
        quantization: "Q4_0",
    }];
    ring.complete(
        1,
        Ok(&RingReply::ModelList(ModelListReply {
            total: 1,
            entries: List::new(&entries),
        })),
    )
    .unwrap();
    ring.complete(4, Err(Status::ServiceUnavailable)).unwrap();
    region
}

/// Run every reader over `bytes`; checks that what decodes re-encodes to
/// the same bytes. Must never panic.
fn exercise(bytes: &mut [u8]) {
    if let Ok(ring) = Ring::new(bytes) {
        let cap = ring.header().capacity;
        for slot in 0..cap + 2 {
            let _ = ring.descriptor(slot);
            for call in Hypercall::ALL {
                if let Ok((d, req)) = ring.request(slot, call) {
                    let payload = ring.data(d.req_offset, d.req_len).unwrap();
                    let mut again = vec![0u8; payload.len()];
                    assert_eq!(req.encode(&mut again), Ok(payload.len()));
                    assert_eq!(again, payload);
                }
            }
            if let Ok((d, rep)) = ring.reply(slot) {
                assert_eq!(rep.encoded_len(), Ok(d.reply_len as usize));
            }
        }
    }
    if let Ok(mut ring) = RingMut::open(bytes) {
        for slot in 0..20 {
            let _ = ring.complete(slot, Err(Status::Busy));
            let _ = ring.complete(
                slot,
                Ok(&RingReply::GpuSync(GpuSyncReply { completed_fence: 1 })),
            );
            let _ = ring.slot_area(slot);
            let _ = ring.submit_in_slot(
                slot,
                1,
                &RingRequest::GpuSync(GpuSyncRequest {
                    fence: 1,
                    timeout_ms: 1,
                }),
            );
        }
    }
}

proptest! {
    // 512 cases by default; PROPTEST_CASES=N runs a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_requests_round_trip_alone_and_through_a_ring(r in req(), slot in 0u32..16, id in any::<u64>()) {
        let mut argv = Vec::new();
        let req = r.view(&mut argv);
        let mut buf = vec![0u8; 70_000];
        let n = req.encode(&mut buf).unwrap();
        prop_assert_eq!(RingRequest::decode(req.call(), &buf[..n]), Ok(req));

        let mut region = vec![0u8; RING_BYTES];
        let mut ring = RingMut::init(&mut region, 16).unwrap();
        ring.submit_in_slot(slot, id, &req).unwrap();
        let (d, back) = ring.ring().unwrap().request(slot, req.call()).unwrap();
        prop_assert_eq!(d.request_id, id);
        prop_assert_eq!(back, req);
    }

    #[test]
    fn generated_replies_round_trip_through_a_ring(r in rep(), slot in 0u32..16) {
        let mut entries = Vec::new();
        let rep = r.view(&mut entries);
        let call = rep.call();
        let mut region = vec![0u8; RING_BYTES];
        // Stand in for the guest: a pending descriptor of the same call (the
        // reply is what is tested, so the request payload is left empty).
        let area = RingMut::init(&mut region, 16).unwrap().slot_area(slot).unwrap();
        let d = Descriptor::new(9, call, area.req_offset, 0, area.reply_offset, area.reply_capacity);
        let at = HEADER_SIZE + slot as usize * DESCRIPTOR_SIZE;
        d.encode(&mut region[at..]).unwrap();
        region[32..36].copy_from_slice(&1u32.to_le_bytes()); // producer = 1
        let mut ring = RingMut::open(&mut region).unwrap();
        let done = ring.complete(slot, Ok(&rep)).unwrap();
        prop_assert_eq!(done.status, Status::Success);
        let (_, back) = ring.ring().unwrap().reply(slot).unwrap();
        prop_assert_eq!(back, rep);
    }

    #[test]
    fn random_payload_bytes_never_panic_and_decode_canonically(call in 0usize..16, bytes in vec(any::<u8>(), 0..300)) {
        let call = Hypercall::ALL.into_iter().filter(|c| c.uses_ring()).nth(call).unwrap();
        let mut again = vec![0u8; 400];
        if let Ok(req) = RingRequest::decode(call, &bytes) {
            prop_assert_eq!(req.encode(&mut again), Ok(bytes.len()));
            prop_assert_eq!(&again[..bytes.len()], &bytes[..]);
        }
        if let Ok(rep) = RingReply::decode(call, &bytes) {
            prop_assert_eq!(rep.encode(&mut again), Ok(bytes.len()));
            prop_assert_eq!(&again[..bytes.len()], &bytes[..]);
        }
        let _ = PartitionInfo::decode(&bytes);
    }

    #[test]
    fn mutated_valid_payloads_never_panic(r in req(), edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut argv = Vec::new();
        let req = r.view(&mut argv);
        let mut buf = vec![0u8; 70_000];
        let n = req.encode(&mut buf).unwrap();
        let bytes = &mut buf[..n];
        // gpu_status has no bytes to mutate.
        let edits = if n == 0 { Vec::new() } else { edits };
        for (i, v) in edits {
            let i = i.index(n);
            bytes[i] = v;
        }
        if let Ok(back) = RingRequest::decode(req.call(), bytes) {
            let mut again = vec![0u8; n];
            prop_assert_eq!(back.encode(&mut again), Ok(n));
            prop_assert_eq!(&again[..], &bytes[..]);
        }
    }

    #[test]
    fn random_regions_never_panic(bytes in vec(any::<u8>(), 0..9000)) {
        let mut bytes = bytes;
        exercise(&mut bytes);
    }

    #[test]
    fn random_bodies_under_a_valid_header_never_panic(capacity_log in 0u32..7, pages in 2usize..5, fill in vec(any::<u8>(), 0..20_000)) {
        let mut region = vec![0u8; pages * 4096];
        for (dst, src) in region.iter_mut().zip(fill.iter().cycle()) {
            *dst = *src;
        }
        let header = RingHeader::new(region.len() as u32, 1 << capacity_log).unwrap();
        header.encode(&mut region).unwrap();
        exercise(&mut region);
    }

    #[test]
    fn mutated_valid_rings_never_panic(edits in vec((0usize..RING_BYTES / 8, any::<u8>()), 1..12)) {
        let mut region = valid_ring();
        // Most edits land in the header, descriptors and payloads at the start.
        for (i, v) in edits {
            region[i] = v;
        }
        exercise(&mut region);
    }

    #[test]
    fn register_decode_is_total_and_canonical(number in prop_oneof![0u64..700, any::<u64>()], args in any::<[u64; 6]>(), zeros in any::<[bool; 6]>()) {
        let mut args = args;
        for (a, z) in args.iter_mut().zip(zeros) {
            if z { *a &= 0xff; }
        }
        if let Ok(req) = decode(number, &args) {
            let regs = req.encode();
            prop_assert_eq!(regs.number, number);
            prop_assert_eq!(regs.args, args);
        }
    }
}

#[test]
fn the_fixture_ring_is_valid_and_exercised() {
    let mut region = valid_ring();
    let ring = Ring::new(&region).unwrap();
    assert!(ring.request(0, Hypercall::AiModelLoad).is_ok());
    assert!(ring.reply(1).is_ok());
    assert_eq!(ring.reply(4).err(), Some(Status::ServiceUnavailable));
    exercise(&mut region);
}

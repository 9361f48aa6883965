//! Ring-level tests: every request and reply round trips through a ring,
//! and malformed rings are rejected with the documented status.

use super::*;
use crate::numbers::{Group, GroupSet, Hypercall};
use crate::status::Status;

const RING_BYTES: usize = 64 * 1024;

static MODELS: [ModelEntry<'static>; 2] = [
    ModelEntry {
        name: "llama3.2:1b",
        size_bytes: 1_321_098_329,
        loaded: true,
        family: "llama",
        parameter_size: "1.2B",
        quantization: "Q8_0",
    },
    ModelEntry {
        name: "qwen2.5:0.5b",
        size_bytes: 397_821_319,
        loaded: false,
        family: "",
        parameter_size: "",
        quantization: "",
    },
];
static ARGV: [&str; 3] = ["/bin/sh", "-c", "echo héllo"];
static REGIONS: [RegionStatus; 2] = [
    RegionStatus {
        region: VramRegion::ModelStorage,
        budget: 8 << 30,
        used: 1 << 30,
        caller: 0,
    },
    RegionStatus {
        region: VramRegion::Graphics,
        budget: 4 << 30,
        used: 0,
        caller: 0,
    },
];

/// One request of every AI call, with non-trivial values.
fn every_request() -> Vec<RingRequest<'static>> {
    vec![
        RingRequest::ModelLoad(ModelLoadRequest {
            name: "llama3.2:1b",
            keep_alive_secs: KEEP_ALIVE_FOREVER,
        }),
        RingRequest::ModelUnload(ModelName {
            name: "llama3.2:1b",
        }),
        RingRequest::ModelList(ModelListRequest {
            start: 3,
            max_entries: 256,
        }),
        RingRequest::ModelInfo(ModelName {
            name: "qwen2.5:0.5b",
        }),
        RingRequest::GpuAlloc(GpuAllocRequest {
            bytes: 8 << 30,
            region: VramRegion::InferenceCache,
            flags: GPU_ALLOC_ZERO,
        }),
        RingRequest::GpuExec(GpuExecRequest {
            stream: 2,
            commands: &[1, 2, 3, 0xff],
        }),
        RingRequest::GpuSync(GpuSyncRequest {
            fence: 99,
            timeout_ms: 250,
        }),
        RingRequest::CudaLaunch(CudaLaunchRequest {
            module: "kernels.ptx",
            function: "vector_add",
            grid: [1024, 1, 1],
            block: [256, 2, 2],
            shared_mem_bytes: 4096,
            stream: 1,
            params: &[0xaa; 24],
        }),
        RingRequest::TensorCreate(TensorCreateRequest {
            dtype: DType::BF16,
            shape: Shape::new(&[2, 3, 4096]).unwrap(),
            placement: Placement::Gpu,
        }),
        RingRequest::TensorCompute(TensorComputeRequest {
            op: TensorOp::MatMul,
            a: 1,
            b: 2,
            output: 3,
        }),
        RingRequest::TensorTransfer(TensorTransferRequest {
            tensor: 7,
            direction: Direction::ToRing,
            tensor_offset: 1 << 33,
            ring_offset: 8192,
            len: 4096,
        }),
        RingRequest::TensorStream(TensorStreamRequest {
            tensor: 7,
            tensor_offset: 12,
            ring_offset: 4096,
            max_len: 100,
            timeout_ms: 0,
        }),
        RingRequest::GpuFree(HandleRequest { handle: 0x10 }),
        RingRequest::GpuStatus(GpuStatusRequest),
        RingRequest::TensorFree(HandleRequest { handle: 9 }),
        RingRequest::TensorOp(
            TensorOpRequest::new(
                OpCode::LayerNorm,
                3,
                &[9, 10, 11],
                12,
                Axes::default(),
                1e-6,
            )
            .unwrap(),
        ),
        RingRequest::TensorFill(TensorFillRequest {
            tensor: 9,
            stream: 0,
            kind: FillKind::Normal,
            seed: 0xdead_beef,
            a: -0.5,
            b: 2.0,
        }),
        RingRequest::ContainerCreate(ContainerCreateRequest {
            image: "docker.io/library/alpine:3.20",
            name: "",
            cpus: 4,
            memory_bytes: 512 << 20,
        }),
        RingRequest::ContainerExec(ContainerExecRequest {
            container: 5,
            timeout_ms: 1000,
            argv: List::new(&ARGV),
        }),
        RingRequest::DockerApi(DockerApiRequest {
            method: HttpMethod::Post,
            path: "/v1.43/containers/create",
            body: br#"{"Image":"alpine"}"#,
        }),
        RingRequest::K8sSchedule(K8sScheduleRequest {
            namespace: "default",
            manifest: "apiVersion: v1\nkind: Pod\n",
        }),
    ]
}

/// One reply of every AI call.
fn every_reply() -> Vec<RingReply<'static>> {
    vec![
        RingReply::ModelLoad(ModelLoadReply {
            size_bytes: 1 << 30,
            load_duration_ns: 1_500_000_000,
        }),
        RingReply::ModelUnload(ModelUnloadReply { was_loaded: true }),
        RingReply::ModelList(ModelListReply {
            total: 7,
            entries: List::new(&MODELS),
        }),
        RingReply::ModelInfo(ModelInfo {
            name: "llama3.2:1b",
            family: "llama",
            format: "gguf",
            parameter_size: "1.2B",
            quantization: "Q8_0",
            context_length: 131_072,
            embedding_length: 2048,
            size_bytes: 1_321_098_329,
            loaded: false,
        }),
        RingReply::GpuAlloc(GpuAllocReply {
            handle: 0x10,
            bytes: 8 << 30,
        }),
        RingReply::GpuExec(FenceReply { fence: 41 }),
        RingReply::GpuSync(GpuSyncReply {
            completed_fence: 41,
        }),
        RingReply::CudaLaunch(FenceReply { fence: 42 }),
        RingReply::TensorCreate(TensorCreateReply {
            tensor: 9,
            bytes: 49152,
        }),
        RingReply::TensorCompute(FenceReply { fence: 43 }),
        RingReply::TensorTransfer(TensorDataReply {
            bytes: 4096,
            remaining: 0,
        }),
        RingReply::TensorStream(TensorDataReply {
            bytes: 17,
            remaining: u64::MAX,
        }),
        RingReply::GpuFree(FreeReply { bytes: 8 << 30 }),
        RingReply::GpuStatus(GpuStatusReply {
            backend: GpuBackend::Cuda,
            gaming: true,
            device_total: 16 << 30,
            device_free: 3 << 30,
            host_budget: 8 << 30,
            host_used: 4096,
            host_caller: 0,
            regions: List::new(&REGIONS),
        }),
        RingReply::TensorFree(FreeReply { bytes: 49152 }),
        RingReply::TensorOp(FenceReply { fence: 44 }),
        RingReply::TensorFill(FenceReply { fence: 45 }),
        RingReply::ContainerCreate(ContainerCreateReply { container: 3 }),
        RingReply::ContainerExec(ContainerExecReply { exit_code: -9 }),
        RingReply::DockerApi(DockerApiReply {
            http_status: 201,
            body: b"{\"Id\":\"abc\"}",
        }),
        RingReply::K8sSchedule(K8sScheduleReply {
            uid: "9f6c1e8e-3b5d-4b6a-8f0e-0d2c5e7a1b2c",
        }),
    ]
}

fn covers_every_ai_call(calls: impl Iterator<Item = Hypercall>) {
    let calls: Vec<_> = calls.collect();
    for call in Hypercall::ALL.into_iter().filter(|c| c.uses_ring()) {
        assert!(calls.contains(&call), "{call} not covered");
    }
}

#[test]
fn every_payload_round_trips_alone() {
    covers_every_ai_call(every_request().iter().map(|r| r.call()));
    covers_every_ai_call(every_reply().iter().map(|r| r.call()));
    let mut buf = [0u8; 1024];
    for req in every_request() {
        let n = req.encode(&mut buf).unwrap();
        assert_eq!(req.encoded_len(), Ok(n));
        assert_eq!(
            RingRequest::decode(req.call(), &buf[..n]),
            Ok(req),
            "{req:?}"
        );
        buf[n] = 0;
        assert_eq!(
            RingRequest::decode(req.call(), &buf[..n + 1]).err(),
            Some(Status::InvalidArgument)
        );
        if n == 0 {
            // gpu_status: nothing to truncate.
            continue;
        }
        // Too short a buffer says so instead of writing a prefix silently.
        assert_eq!(req.encode(&mut buf[..n - 1]), Err(Status::BufferTooSmall));
        // Truncated and extended payloads are rejected.
        assert_eq!(
            RingRequest::decode(req.call(), &buf[..n - 1]).err(),
            Some(Status::InvalidArgument),
            "{req:?}"
        );
    }
    for rep in every_reply() {
        let n = rep.encode(&mut buf).unwrap();
        assert_eq!(RingReply::decode(rep.call(), &buf[..n]), Ok(rep), "{rep:?}");
    }
}

#[test]
fn management_calls_have_no_payload() {
    assert_eq!(
        RingRequest::decode(Hypercall::Version, &[]).err(),
        Some(Status::InvalidCall)
    );
    assert_eq!(
        RingReply::decode(Hypercall::PartitionExit, &[]).err(),
        Some(Status::InvalidCall)
    );
}

#[test]
fn every_request_and_reply_round_trips_through_a_ring() {
    let mut region = vec![0u8; RING_BYTES];
    let mut ring = RingMut::init(&mut region, 16).unwrap();
    let requests = every_request();
    let replies = every_reply();
    for (i, (req, rep)) in requests.iter().zip(&replies).enumerate() {
        let slot = i as u32 % 16;
        let id = 0x1000 + i as u64;
        // Guest submits.
        let sent = ring.submit_in_slot(slot, id, req).unwrap();
        assert_eq!(sent.call, req.call());
        // Hypervisor/service reads it back exactly.
        let (d, got) = ring.ring().unwrap().request(slot, req.call()).unwrap();
        assert_eq!((d.request_id, got), (id, *req));
        // Service completes; guest reads the reply.
        let done = ring.complete(slot, Ok(rep)).unwrap();
        assert_eq!(done.status, Status::Success);
        let (d, got) = ring.ring().unwrap().reply(slot).unwrap();
        assert_eq!((d.request_id, d.reply_len, got), (id, done.reply_len, *rep));
        let h = ring.header().unwrap();
        assert_eq!((h.producer, h.consumer), (i as u32 + 1, i as u32 + 1));
    }
}

#[test]
fn failures_and_small_reply_buffers_complete_with_status() {
    let mut region = vec![0u8; RING_BYTES];
    let mut ring = RingMut::init(&mut region, 4).unwrap();
    let load = RingRequest::ModelLoad(ModelLoadRequest {
        name: "missing",
        keep_alive_secs: 0,
    });
    ring.submit_in_slot(0, 1, &load).unwrap();
    let d = ring.complete(0, Err(Status::NotFound)).unwrap();
    assert_eq!((d.status, d.reply_len), (Status::NotFound, 0));
    assert_eq!(ring.ring().unwrap().reply(0).err(), Some(Status::NotFound));
    // Completing twice is refused.
    assert_eq!(
        ring.complete(0, Err(Status::NotFound)).err(),
        Some(Status::InvalidArgument)
    );

    let list = RingRequest::ModelList(ModelListRequest {
        start: 0,
        max_entries: 10,
    });
    ring.submit(1, 2, &list, 0, 4096, 16).unwrap();
    let reply = RingReply::ModelList(ModelListReply {
        total: 2,
        entries: List::new(&MODELS),
    });
    let d = ring.complete(1, Ok(&reply)).unwrap();
    assert_eq!(d.status, Status::BufferTooSmall);
    assert_eq!(d.reply_len as usize, reply.encoded_len().unwrap());
    assert_eq!(
        ring.ring().unwrap().reply(1).err(),
        Some(Status::BufferTooSmall)
    );
    // A reply for another call is refused; so is "failing" with Success.
    ring.submit_in_slot(2, 3, &list).unwrap();
    let wrong = RingReply::ContainerCreate(ContainerCreateReply { container: 1 });
    assert_eq!(
        ring.complete(2, Ok(&wrong)).err(),
        Some(Status::InvalidArgument)
    );
    assert_eq!(
        ring.complete(2, Err(Status::Success)).err(),
        Some(Status::InvalidArgument)
    );
    // The guest sees Busy until it is done.
    assert_eq!(ring.ring().unwrap().reply(2).err(), Some(Status::Busy));
}

#[test]
fn submitting_more_than_capacity_is_busy() {
    let mut region = vec![0u8; RING_BYTES];
    let mut ring = RingMut::init(&mut region, 2).unwrap();
    let sync = RingRequest::GpuSync(GpuSyncRequest {
        fence: 1,
        timeout_ms: 0,
    });
    ring.submit_in_slot(0, 1, &sync).unwrap();
    ring.submit_in_slot(1, 2, &sync).unwrap();
    assert_eq!(ring.submit_in_slot(0, 3, &sync).err(), Some(Status::Busy));
    assert_eq!(
        ring.submit_in_slot(2, 3, &sync).err(),
        Some(Status::BadRing)
    );
}

// ---- malformed rings ----

/// A ring with one valid model-load request in slot 0.
fn valid_ring() -> Vec<u8> {
    let mut region = vec![0u8; RING_BYTES];
    let mut ring = RingMut::init(&mut region, 8).unwrap();
    let req = RingRequest::ModelLoad(ModelLoadRequest {
        name: "llama3.2:1b",
        keep_alive_secs: 300,
    });
    ring.submit_in_slot(0, 77, &req).unwrap();
    region
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Start of descriptor `slot` in a ring laid out by `RingHeader::new`.
fn desc(slot: usize) -> usize {
    HEADER_SIZE + slot * DESCRIPTOR_SIZE
}

fn request_status(region: &[u8]) -> Status {
    match Ring::new(region).and_then(|r| r.request(0, Hypercall::AiModelLoad)) {
        Ok(_) => Status::Success,
        Err(s) => s,
    }
}

#[test]
fn the_valid_ring_is_valid() {
    assert_eq!(request_status(&valid_ring()), Status::Success);
}

#[test]
fn header_corruption_is_rejected() {
    let cases: [(usize, u32, Status); 12] = [
        (0, 0x1234_5678, Status::BadRing),              // magic
        (4, 2, Status::VersionMismatch),                // major 2, minor 0
        (8, RING_BYTES as u32 + 4096, Status::BadRing), // size != region
        (8, 4096, Status::BadRing),                     // size below minimum
        (12, 3, Status::BadRing),                       // capacity not a power of two
        (12, 128, Status::BadRing),                     // capacity above maximum
        (12, 0, Status::BadRing),                       // no descriptors
        (16, 12, Status::BadRing),                      // table inside the header
        (20, 48, Status::VersionMismatch),              // descriptor size
        (24, 100, Status::BadRing),                     // data area not page-aligned
        (28, 4096, Status::BadRing),                    // data size inconsistent
        (40, 1, Status::BadRing),                       // reserved byte
    ];
    for (at, value, want) in cases {
        let mut r = valid_ring();
        put32(&mut r, at, value);
        assert_eq!(request_status(&r), want, "header word at {at} = {value:#x}");
    }
    // A newer minor version may use the reserved bytes.
    let mut r = valid_ring();
    put32(&mut r, 4, 1 | 1 << 16);
    put32(&mut r, 40, 0xdead);
    assert_eq!(request_status(&r), Status::Success);
}

#[test]
fn indices_beyond_capacity_are_bad_ring() {
    let mut r = valid_ring();
    put32(&mut r, 32, 9); // producer - consumer = 9 > capacity 8
    assert_eq!(request_status(&r), Status::BadRing);
    let mut r = valid_ring();
    put32(&mut r, 36, 2); // consumer ahead of producer: wraps to a huge count
    assert_eq!(request_status(&r), Status::BadRing);
    // Indices wrap: producer 1 after consumer u32::MAX is one pending.
    let mut r = valid_ring();
    put32(&mut r, 32, 0);
    put32(&mut r, 36, u32::MAX);
    assert_eq!(request_status(&r), Status::Success);
    let ring = Ring::new(&r).unwrap();
    assert_eq!(ring.descriptor(8).err(), Some(Status::BadRing));
    assert_eq!(ring.descriptor(u32::MAX).err(), Some(Status::BadRing));
}

#[test]
fn truncated_regions_and_descriptors_are_bad_ring() {
    let r = valid_ring();
    assert_eq!(
        Ring::new(&r[..HEADER_SIZE - 1]).err(),
        Some(Status::BadRing)
    );
    assert_eq!(Ring::new(&r[..4096]).err(), Some(Status::BadRing));
    assert_eq!(
        Descriptor::decode(&r[desc(0)..desc(0) + DESCRIPTOR_SIZE - 1]).err(),
        Some(Status::BadRing)
    );
    assert!(Descriptor::decode(&r[desc(0)..desc(0) + DESCRIPTOR_SIZE]).is_ok());
}

#[test]
fn descriptor_corruption_is_rejected() {
    let data_size = (RING_BYTES - 4096) as u32;
    let cases: [(usize, u32, Status); 11] = [
        (16, data_size, Status::BadRing),     // request starts at the end
        (16, u32::MAX - 4, Status::BadRing),  // offset + len overflows
        (20, data_size + 1, Status::BadRing), // request runs past the data area
        (20, MAX_PAYLOAD + 1, Status::LimitExceeded), // request longer than a payload may be
        (24, data_size - 8, Status::BadRing), // reply buffer past the end
        (28, u32::MAX, Status::LimitExceeded), // reply capacity above the limit
        (36, 1, Status::InvalidArgument),     // reserved word
        (8, 401, Status::InvalidArgument),    // descriptor for another call
        (8, 2, Status::InvalidArgument),      // a management call
        (8, 9999, Status::InvalidArgument),   // no such call
        (10, 1 << 5, Status::InvalidArgument), // unknown flag
    ];
    for (field, value, want) in cases {
        let mut r = valid_ring();
        let at = desc(0) + field;
        if field == 8 || field == 10 {
            r[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes());
        } else {
            put32(&mut r, at, value);
        }
        assert_eq!(
            request_status(&r),
            want,
            "descriptor field at {field} = {value:#x}"
        );
    }
    // A descriptor already DONE is not a request.
    let mut r = valid_ring();
    r[desc(0) + 10] = FLAG_DONE as u8;
    assert_eq!(request_status(&r), Status::InvalidArgument);
}

#[test]
fn payload_corruption_is_rejected() {
    let r = valid_ring();
    let d = Ring::new(&r).unwrap().descriptor(0).unwrap();
    let p = 4096 + d.req_offset as usize;
    // Name length beyond the payload.
    let mut bad = r.clone();
    bad[p..p + 2].copy_from_slice(&200u16.to_le_bytes());
    assert_eq!(request_status(&bad), Status::InvalidArgument);
    // Name above the limit.
    let mut bad = r.clone();
    bad[p..p + 2].copy_from_slice(&300u16.to_le_bytes());
    assert_eq!(request_status(&bad), Status::LimitExceeded);
    // Not UTF-8.
    let mut bad = r.clone();
    bad[p + 2] = 0xff;
    assert_eq!(request_status(&bad), Status::InvalidArgument);
    // keep_alive below -1.
    let mut bad = r.clone();
    let k = p + 2 + "llama3.2:1b".len();
    bad[k..k + 8].copy_from_slice(&(-2i64).to_le_bytes());
    assert_eq!(request_status(&bad), Status::InvalidArgument);
    // Request length shorter than the payload.
    let mut bad = r.clone();
    put32(&mut bad, desc(0) + 20, d.req_len - 1);
    assert_eq!(request_status(&bad), Status::InvalidArgument);
    // Request length longer than the payload: trailing bytes.
    let mut bad = r.clone();
    put32(&mut bad, desc(0) + 20, d.req_len + 1);
    assert_eq!(request_status(&bad), Status::InvalidArgument);
}

#[test]
fn bulk_spans_must_lie_in_the_data_area() {
    let mut region = vec![0u8; RING_BYTES];
    let mut ring = RingMut::init(&mut region, 8).unwrap();
    let data_size = ring.header().unwrap().data_size;
    let xfer = |ring_offset, len| {
        RingRequest::TensorTransfer(TensorTransferRequest {
            tensor: 1,
            direction: Direction::ToTensor,
            tensor_offset: 0,
            ring_offset,
            len,
        })
    };
    ring.submit_in_slot(0, 1, &xfer(data_size - 4096, 4096))
        .unwrap();
    ring.submit_in_slot(1, 2, &xfer(data_size - 4096, 4097))
        .unwrap();
    ring.submit_in_slot(2, 3, &xfer(u32::MAX - 4095, 4096))
        .unwrap();
    let view = ring.ring().unwrap();
    assert!(view.request(0, Hypercall::TensorTransfer).is_ok());
    assert_eq!(
        view.request(1, Hypercall::TensorTransfer).err(),
        Some(Status::BadRing)
    );
    assert_eq!(
        view.request(2, Hypercall::TensorTransfer).err(),
        Some(Status::BadRing)
    );
    // Misaligned ring offsets never encode.
    assert_eq!(
        xfer(100, 1).encoded_len().err(),
        Some(Status::InvalidArgument)
    );
}

#[test]
fn header_new_lays_out_the_standard_ring() {
    let h = RingHeader::new(RING_BYTES as u32, 64).unwrap();
    assert_eq!((h.desc_offset, h.data_offset), (64, 4096));
    assert_eq!(h.data_size as usize, RING_BYTES - 4096);
    assert_eq!(RingHeader::new(8192, 64).map(|h| h.data_size), Ok(4096));
    assert_eq!(RingHeader::new(4096, 1).err(), Some(Status::BadRing));
    assert_eq!(RingHeader::new(8193, 1).err(), Some(Status::BadRing));
    let mut buf = [0u8; HEADER_SIZE];
    h.encode(&mut buf).unwrap();
    assert_eq!(&buf[0..4], b"NXRG");
    assert_eq!(RingHeader::decode(&buf), Ok(h));
}

#[test]
fn partition_info_round_trips_and_checks() {
    let info = PartitionInfo {
        id: 2,
        vcpus: 1,
        groups: GroupSet::EMPTY.with(Group::Management).with(Group::Models),
        memory_base: 0x4000_0000,
        memory_size: 16 << 20,
        ring_gpa: 0x4100_0000,
        ring_size: 64 << 10,
        name: "test-guest",
        cmdline: "hypercalls",
    };
    let mut buf = [0u8; 256];
    let n = info.encode(&mut buf).unwrap();
    assert_eq!(PartitionInfo::decode(&buf[..n]), Ok(info));
    let mut other = buf;
    other[0] = 2;
    assert_eq!(
        PartitionInfo::decode(&other[..n]).err(),
        Some(Status::VersionMismatch)
    );
    let mut bad = info;
    bad.ring_gpa = 0x4100_0010;
    assert_eq!(bad.encode(&mut buf).err(), Some(Status::InvalidArgument));
    let none = PartitionInfo {
        ring_gpa: 0,
        ring_size: 0,
        cmdline: "",
        ..info
    };
    let n = none.encode(&mut buf).unwrap();
    assert_eq!(PartitionInfo::decode(&buf[..n]), Ok(none));
}

#[test]
fn partition_stats_round_trip_and_reject_bad_encodings() {
    let exits = [
        Counter {
            name: "cpuid",
            count: 2_000_001,
        },
        Counter {
            name: "npf",
            count: 7,
        },
    ];
    let calls = [Counter {
        name: "partition_stats",
        count: 1,
    }];
    let stats = PartitionStats {
        vcpus: 2,
        exits_total: 2_000_008,
        exits: List::new(&exits),
        calls: List::new(&calls),
        invalid_calls: 3,
    };
    let mut buf = [0u8; 256];
    let n = stats.encode(&mut buf).unwrap();
    let back = PartitionStats::decode(&buf[..n]).unwrap();
    assert_eq!(back, stats);
    assert_eq!(back.exits.iter().map(|c| c.count).sum::<u64>(), 2_000_008);
    // Another layout version, a truncated buffer, trailing bytes, a long name.
    let mut other = buf;
    other[0] = 2;
    assert_eq!(
        PartitionStats::decode(&other[..n]).err(),
        Some(Status::VersionMismatch)
    );
    assert!(PartitionStats::decode(&buf[..n - 1]).is_err());
    assert!(PartitionStats::decode(&buf[..n + 1]).is_err());
    let long = [Counter {
        name: "x".repeat(MAX_COUNTER_NAME + 1).leak(),
        count: 1,
    }];
    let bad = PartitionStats {
        exits: List::new(&long),
        ..stats
    };
    assert_eq!(bad.encode(&mut buf).err(), Some(Status::LimitExceeded));
    let empty = [Counter { name: "", count: 1 }];
    let bad = PartitionStats {
        calls: List::new(&empty),
        ..stats
    };
    assert_eq!(bad.encode(&mut buf).err(), Some(Status::InvalidArgument));
}

#[test]
fn field_rules_are_enforced_both_ways() {
    let mut buf = [0u8; 256];
    let bad: [RingRequest; 12] = [
        RingRequest::ModelLoad(ModelLoadRequest {
            name: "",
            keep_alive_secs: 0,
        }),
        RingRequest::ModelList(ModelListRequest {
            start: 0,
            max_entries: 0,
        }),
        RingRequest::GpuAlloc(GpuAllocRequest {
            bytes: 100,
            region: VramRegion::Graphics,
            flags: 0,
        }),
        RingRequest::GpuAlloc(GpuAllocRequest {
            bytes: 4096,
            region: VramRegion::Graphics,
            flags: 2,
        }),
        RingRequest::GpuExec(GpuExecRequest {
            stream: 0,
            commands: &[],
        }),
        RingRequest::CudaLaunch(CudaLaunchRequest {
            module: "m",
            function: "f",
            grid: [1, 0, 1],
            block: [1, 1, 1],
            shared_mem_bytes: 0,
            stream: 0,
            params: &[],
        }),
        RingRequest::TensorCompute(TensorComputeRequest {
            op: TensorOp::Relu,
            a: 1,
            b: 2,
            output: 3,
        }),
        RingRequest::TensorCompute(TensorComputeRequest {
            op: TensorOp::Add,
            a: 1,
            b: 0,
            output: 3,
        }),
        RingRequest::TensorStream(TensorStreamRequest {
            tensor: 1,
            tensor_offset: 0,
            ring_offset: 0,
            max_len: 0,
            timeout_ms: 0,
        }),
        RingRequest::ContainerCreate(ContainerCreateRequest {
            image: "a",
            name: "",
            cpus: 0,
            memory_bytes: 4096,
        }),
        RingRequest::ContainerExec(ContainerExecRequest {
            container: 1,
            timeout_ms: 0,
            argv: List::new(&[]),
        }),
        RingRequest::DockerApi(DockerApiRequest {
            method: HttpMethod::Get,
            path: "containers",
            body: &[],
        }),
    ];
    for req in bad {
        assert_eq!(
            req.encode(&mut buf).err(),
            Some(Status::InvalidArgument),
            "{req:?}"
        );
    }
    let too_big: [RingRequest; 4] = [
        RingRequest::GpuAlloc(GpuAllocRequest {
            bytes: 32 << 30,
            region: VramRegion::Graphics,
            flags: 0,
        }),
        RingRequest::CudaLaunch(CudaLaunchRequest {
            module: "m",
            function: "f",
            grid: [1, 1, 1],
            block: [64, 32, 1],
            shared_mem_bytes: 0,
            stream: 0,
            params: &[],
        }),
        RingRequest::TensorCreate(TensorCreateRequest {
            dtype: DType::F64,
            shape: Shape::new(&[1 << 20, 1 << 20]).unwrap(),
            placement: Placement::Host,
        }),
        RingRequest::ContainerCreate(ContainerCreateRequest {
            image: "a",
            name: "",
            cpus: 257,
            memory_bytes: 4096,
        }),
    ];
    for req in too_big {
        assert_eq!(
            req.encode(&mut buf).err(),
            Some(Status::LimitExceeded),
            "{req:?}"
        );
    }
    assert_eq!(Shape::new(&[1; 9]).err(), Some(Status::LimitExceeded));
    assert_eq!(Shape::new(&[2, 0]).err(), Some(Status::InvalidArgument));
    // Shape elements overflow is LimitExceeded, never a wrap.
    let huge = TensorCreateRequest {
        dtype: DType::F32,
        shape: Shape::new(&[u64::MAX, 2]).unwrap(),
        placement: Placement::Host,
    };
    assert_eq!(huge.bytes().err(), Some(Status::LimitExceeded));
    // Unknown enum values on the wire.
    let ok = RingRequest::GpuAlloc(GpuAllocRequest {
        bytes: 4096,
        region: VramRegion::Graphics,
        flags: 0,
    });
    let n = ok.encode(&mut buf).unwrap();
    buf[8] = 3;
    assert_eq!(
        RingRequest::decode(Hypercall::GpuAlloc, &buf[..n]).err(),
        Some(Status::InvalidArgument)
    );
}

#[test]
fn the_spec_example_numbers_hold() {
    // docs/abi.md section 13.
    let req = ModelLoadRequest {
        name: "llama3.2:1b",
        keep_alive_secs: -1,
    };
    let mut buf = [0u8; 64];
    let n = req.encode(&mut buf).unwrap();
    assert_eq!(n, 21);
    assert_eq!(&buf[..2], &[0x0b, 0]);
    assert_eq!(&buf[13..21], &[0xff; 8]);
    let mut region = vec![0u8; 65536];
    let ring = RingMut::init(&mut region, 8).unwrap();
    let h = ring.header().unwrap();
    assert_eq!(
        (h.desc_offset, h.data_offset, h.data_size),
        (64, 4096, 61440)
    );
    let a = ring.slot_area(0).unwrap();
    assert_eq!(
        (a.req_offset, a.reply_offset, a.reply_capacity),
        (0, 3840, 3840)
    );
    let reply = ModelLoadReply {
        size_bytes: 1,
        load_duration_ns: 2,
    };
    assert_eq!(reply.encoded_len(), Ok(16));
    // The signature words of section 1.
    let sig = crate::cpuid::signature_leaf(crate::cpuid::BASE_LEAF);
    assert_eq!(
        (sig.ebx, sig.ecx, sig.edx),
        (0x7578_654e, 0x4e53_4f73, 0x7375_7865)
    );
    assert_eq!(RING_MAGIC, 0x4752_584e);
}

#[test]
fn arithmetic_on_hostile_values_is_checked() {
    // Found by the fuzzer: a block of three huge dimensions overflowed u64.
    let launch = CudaLaunchRequest {
        module: "m",
        function: "f",
        grid: [1, 1, 1],
        block: [u32::MAX, u32::MAX, u32::MAX],
        shared_mem_bytes: 0,
        stream: 0,
        params: &[],
    };
    assert_eq!(launch.encoded_len().err(), Some(Status::LimitExceeded));
    let mut buf = [0u8; 64];
    let ok = CudaLaunchRequest {
        block: [1, 1, 1],
        ..launch
    };
    let n = ok.encode(&mut buf).unwrap();
    // Patch the block dimensions on the wire: bytes after module, function, grid.
    let at = 3 + 3 + 12;
    buf[at..at + 12].fill(0xff);
    assert_eq!(
        RingRequest::decode(Hypercall::CudaLaunch, &buf[..n]).err(),
        Some(Status::LimitExceeded)
    );
    // Absurd capacities and bases are refused, not overflowed.
    assert_eq!(RingHeader::new(8192, u32::MAX).err(), Some(Status::BadRing));
    let mut region = vec![0u8; 8192];
    assert_eq!(
        RingMut::init(&mut region, 1 << 31).err(),
        Some(Status::BadRing)
    );
    let sig = crate::cpuid::signature_leaf(u32::MAX);
    assert_eq!(crate::cpuid::parse_signature_leaf(u32::MAX, sig), None);
    assert_eq!(crate::cpuid::parse_signature_leaf(u32::MAX - 1, sig), None);
}

#[test]
fn tensor_op_checks_arity_axes_and_eps() {
    let none = Axes::default();
    let op = |op, inputs: &[u64], axes, eps| TensorOpRequest::new(op, 0, inputs, 9, axes, eps);
    assert!(op(OpCode::MatMul, &[1, 2], none, 0.0).is_ok());
    assert!(op(OpCode::LayerNorm, &[1], none, 0.0).is_ok());
    assert!(op(OpCode::LayerNorm, &[1, 2, 3], none, 1e-3).is_ok());
    let sum = Axes::new(&[0, 2]).unwrap();
    assert!(op(OpCode::Sum, &[1], sum, 0.0).is_ok());
    for (what, r) in [
        ("too few", op(OpCode::MatMul, &[1], none, 0.0)),
        ("too many", op(OpCode::Relu, &[1, 2], none, 0.0)),
        ("zero input", op(OpCode::Add, &[1, 0], none, 0.0)),
        ("axes on add", op(OpCode::Add, &[1, 2], sum, 0.0)),
        ("eps on relu", op(OpCode::Relu, &[1], none, 1e-5)),
        ("negative eps", op(OpCode::RmsNorm, &[1], none, -1.0)),
        ("nan eps", op(OpCode::RmsNorm, &[1], none, f32::NAN)),
        (
            "four inputs",
            op(OpCode::LayerNorm, &[1, 2, 3, 4], none, 0.0),
        ),
    ] {
        assert_eq!(r.err(), Some(Status::InvalidArgument), "{what}");
    }
    assert_eq!(
        TensorOpRequest::new(OpCode::Add, 0, &[1, 2], 0, none, 0.0).err(),
        Some(Status::InvalidArgument),
        "zero output"
    );
    assert_eq!(Axes::new(&[1, 1]).err(), Some(Status::InvalidArgument));
    assert_eq!(Axes::new(&[8]).err(), Some(Status::InvalidArgument));
    assert_eq!(Axes::new(&[0; 9]).err(), Some(Status::LimitExceeded));
    // Default eps, and the wire's own checks: count above 3, duplicate axes.
    assert_eq!(op(OpCode::RmsNorm, &[1], none, 0.0).unwrap().eps(), 1e-5);
    let mut buf = [0u8; 64];
    let n = op(OpCode::Sum, &[1], sum, 0.0)
        .unwrap()
        .encode(&mut buf)
        .unwrap();
    let decode = |b: &[u8]| RingRequest::decode(Hypercall::TensorOp, b).err();
    let mut bad = buf;
    bad[5] = 4; // count
    assert_eq!(decode(&bad[..n]), Some(Status::InvalidArgument));
    let mut bad = buf;
    bad[6 + 8 + 8 + 2] = 0; // second axis = first
    assert_eq!(decode(&bad[..n]), Some(Status::InvalidArgument));
    let mut bad = buf;
    bad[6 + 8 + 8] = 9; // axes count
    assert_eq!(decode(&bad[..n]), Some(Status::LimitExceeded));
    let mut bad = buf;
    bad[0] = 16; // op code
    assert_eq!(decode(&bad[..n]), Some(Status::InvalidArgument));
    // tensor_compute's op codes mean the same in tensor_op.
    for &op in TensorOp::ALL {
        assert_eq!(OpCode::from(op) as u8, op as u8);
    }
}

#[test]
fn tensor_fill_checks_parameters() {
    let fill = |kind, seed, a: f64, b: f64| {
        let req = TensorFillRequest {
            tensor: 1,
            stream: 0,
            kind,
            seed,
            a,
            b,
        };
        let mut buf = [0u8; 64];
        req.encode(&mut buf).map(|_| ())
    };
    assert_eq!(fill(FillKind::Zeros, 0, 0.0, 0.0), Ok(()));
    assert_eq!(fill(FillKind::Constant, 0, 3.5, 0.0), Ok(()));
    assert_eq!(fill(FillKind::Uniform, 7, -1.0, 1.0), Ok(()));
    assert_eq!(fill(FillKind::Normal, 7, 0.0, 0.0), Ok(()));
    for (kind, seed, a, b) in [
        (FillKind::Zeros, 1, 0.0, 0.0),
        (FillKind::Zeros, 0, -0.0, 0.0),
        (FillKind::Constant, 0, 1.0, 1.0),
        (FillKind::Uniform, 0, 1.0, 1.0),
        (FillKind::Normal, 0, 0.0, -1.0),
        (FillKind::Constant, 0, f64::INFINITY, 0.0),
        (FillKind::Uniform, 0, f64::NAN, 1.0),
    ] {
        assert_eq!(
            fill(kind, seed, a, b),
            Err(Status::InvalidArgument),
            "{kind:?} {seed} {a} {b}"
        );
    }
}

#[test]
fn handles_are_non_zero_and_status_has_no_fields() {
    let mut buf = [0u8; 16];
    assert_eq!(
        HandleRequest { handle: 0 }.encode(&mut buf).err(),
        Some(Status::InvalidArgument)
    );
    assert_eq!(
        RingRequest::decode(Hypercall::TensorFree, &[0; 8]).err(),
        Some(Status::InvalidArgument)
    );
    assert_eq!(
        RingRequest::decode(Hypercall::GpuStatus, &[]),
        Ok(RingRequest::GpuStatus(GpuStatusRequest))
    );
    assert_eq!(
        RingRequest::decode(Hypercall::GpuStatus, &[0]).err(),
        Some(Status::InvalidArgument)
    );
}

#[test]
fn data_mut_stays_inside_the_data_area() {
    let mut region = vec![0u8; RING_BYTES];
    let mut ring = RingMut::init(&mut region, 4).unwrap();
    let size = ring.header().unwrap().data_size;
    ring.data_mut(4096, 3).unwrap().copy_from_slice(b"abc");
    assert_eq!(ring.ring().unwrap().data(4096, 3).unwrap(), b"abc");
    assert!(ring.data_mut(0, size).is_ok());
    assert_eq!(ring.data_mut(size, 1).err(), Some(Status::BadRing));
    assert_eq!(ring.data_mut(u32::MAX, 2).err(), Some(Status::BadRing));
}

#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_abi::ring::{GpuSyncReply, Ring, RingMut, RingReply, RingRequest};
use nexus_abi::{Hypercall, Status};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let calls: Vec<Hypercall> = Hypercall::ALL
        .into_iter()
        .filter(|c| c.uses_ring())
        .collect();
    let call = calls[pick as usize % calls.len()];
    let mut again = vec![0u8; rest.len()];

    // Payloads: whatever decodes re-encodes to the same bytes.
    if let Ok(req) = RingRequest::decode(call, rest) {
        assert_eq!(req.encode(&mut again), Ok(rest.len()));
        assert_eq!(again, rest);
    }
    if let Ok(rep) = RingReply::decode(call, rest) {
        assert_eq!(rep.encode(&mut again), Ok(rest.len()));
        assert_eq!(again, rest);
    }

    // Rings: never panic, in any state. First the input as a whole region
    // (exercises header validation), then laid into a valid two-page ring:
    // 8 bytes of indices, then descriptors, then the data area, so the
    // fuzzer spends its time past the header checks.
    check_ring(call, rest.to_vec());
    let capacity = 1u32 << (pick as u32 / 16 % 7);
    let mut region = vec![0u8; 8192];
    RingMut::init(&mut region, capacity).unwrap();
    let (indices, rest) = rest.split_at(rest.len().min(8));
    region[32..32 + indices.len()].copy_from_slice(indices);
    let table = (capacity as usize * 40).min(rest.len());
    let (descriptors, data) = rest.split_at(table);
    region[64..64 + descriptors.len()].copy_from_slice(descriptors);
    let data = &data[..data.len().min(4096)];
    region[4096..4096 + data.len()].copy_from_slice(data);
    check_ring(call, region);
});

fn check_ring(call: Hypercall, mut region: Vec<u8>) {
    if let Ok(ring) = Ring::new(&region) {
        for slot in 0..ring.header().capacity + 1 {
            if let Ok((d, req)) = ring.request(slot, call) {
                let payload = ring.data(d.req_offset, d.req_len).unwrap();
                let mut bytes = vec![0u8; payload.len()];
                assert_eq!(req.encode(&mut bytes), Ok(payload.len()));
                assert_eq!(bytes, payload);
            }
            let _ = ring.reply(slot);
        }
    }
    if let Ok(mut ring) = RingMut::open(&mut region) {
        for slot in 0..4 {
            let _ = ring.complete(slot, Err(Status::Busy));
            let _ = ring.complete(
                slot,
                Ok(&RingReply::GpuSync(GpuSyncReply { completed_fence: 1 })),
            );
        }
    }
}

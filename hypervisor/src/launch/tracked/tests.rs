use super::*;
use crate::partition::plan::from_policy;
use crate::partition::plan::tests::compiled;
use crate::partition::Kind;
use nexus_policy::compiled::CompiledPolicy;

/// Hands out pages from 0x1_0000_0000 up; reports one range of its own.
struct FakeHost {
    next: u64,
}

impl LaunchHost for FakeHost {
    fn alloc_pages(&mut self, pages: usize) -> Result<u64, HostError> {
        let pa = self.next;
        self.next += pages as u64 * 4096;
        Ok(pa)
    }
    fn alloc_pages_aligned(&mut self, pages: usize, align: u64) -> Result<u64, HostError> {
        self.next = self.next.next_multiple_of(align);
        self.alloc_pages(pages)
    }
    fn facts(&self) -> crate::launch::Facts {
        crate::launch::Facts::default()
    }
    fn hand_over(&mut self, _: Option<(&str, &str)>) -> Result<crate::launch::HandOver, HostError> {
        Err(HostError("no firmware here"))
    }
    fn reserve_at(&mut self, _: u64, _: u64) -> Result<(), HostError> {
        Ok(())
    }
    fn image(&self, _: &str) -> Option<&'static [u8]> {
        None
    }
    fn start_on_cpu(&mut self, _: u32, _: ApEntry, _: *mut c_void) -> Result<(), HostError> {
        Err(HostError("no APs here"))
    }
    fn stall_us(&mut self, _: u64) {}
    fn hypervisor_ranges(&self, out: &mut dyn FnMut(u64, u64)) {
        out(0x7000_0000, 0x20_0000);
    }
}

fn overlaps(map: &PrimaryMap, hole: Range) -> bool {
    map.ranges
        .iter()
        .any(|r| r.start < hole.end && hole.start < r.end)
}

#[test]
fn allocations_are_recorded_and_left_out_of_the_primary_map() {
    let bytes = compiled("qemu-dev.toml");
    let policy = CompiledPolicy::decode(&bytes).unwrap();
    let plan = from_policy(&policy, &crate::launch::Facts::default()).unwrap();
    let primary = plan.iter().find(|c| c.kind == Kind::Primary).unwrap();
    let mut fake = FakeHost {
        next: 0x1_0000_0000,
    };
    let mut host = Tracked::new(&mut fake);
    let a = host.alloc_pages(3).unwrap();
    let b = host.alloc_pages(1).unwrap();
    assert_eq!(
        host.ranges,
        [Range::new(a, 3 * 4096), Range::new(b, 4096)],
        "every allocation is recorded"
    );

    // The trapped pages (an xAPIC page, a doorbell) are holes too.
    let trapped = [
        Range::new(0xfee0_0000, 4096),
        Range::new((64 << 30) - 4096, 4096),
    ];
    let map = host
        .primary_map(primary, &plan, 64 << 30, &trapped)
        .unwrap();
    let mut holes = std::vec![Range::new(a, 4 * 4096), Range::new(0x7000_0000, 0x20_0000)];
    holes.extend_from_slice(&trapped);
    for other in plan.iter().filter(|c| c.id != primary.id) {
        holes.extend_from_slice(other.regions());
    }
    for hole in &holes {
        assert!(!overlaps(&map, *hole), "{hole:?} is mapped: {map:?}");
    }
    // Low memory and the end of the limit stay mapped.
    assert!(map.ranges[0].start == 0 && map.ranges[0].end > 0x10_0000);
    assert_eq!(map.ranges.last().unwrap().end, (64 << 30) - 4096);
    // The two allocations touch: one hole; the other ranges are apart.
    let distinct = plan::normalize(&mut holes);
    assert_eq!(map.holes, distinct);
    // The doorbell hole ends the map.
    assert_eq!(map.ranges.len(), distinct);
}

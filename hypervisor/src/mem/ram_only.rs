//! A partition's table limited to its RAM, for the hypervisor's own accesses on its behalf
//! (hypercall buffers, instruction bytes).
//!
//! The primary's table maps device memory and everything up to its limit (512 GiB), which
//! the hypervisor must neither read nor write for it (a `console_write` from an MMIO address
//! would make the hypervisor touch a device), and which its own identity map may not even
//! cover (a host page fault; review finding M1). Every access the hypervisor makes for a
//! partition therefore goes through [`RamOnly`]: outside RAM, a buffer is `BadAddress`.

use super::second_level::{Mapping, SecondLevel};
use super::{PhysMem, Range};

/// `table`, answering only inside `ram` (`None`: the whole table is RAM, as a test
/// partition's, which maps nothing else).
pub struct RamOnly<'a, T> {
    pub table: &'a T,
    pub ram: Option<&'a [Range]>,
}

impl<M: PhysMem + ?Sized, T: SecondLevel<M>> SecondLevel<M> for RamOnly<'_, T> {
    fn translate_gpa(&self, mem: &mut M, gpa: u64) -> Option<Mapping> {
        if let Some(ram) = self.ram {
            if !ram.iter().any(|r| r.start <= gpa && gpa < r.end) {
                return None;
            }
        }
        self.table.translate_gpa(mem, gpa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Access;
    use crate::mem::fake::FakeMem;
    use crate::mem::second_level::Perm;
    use crate::npt::{Npt, NptOptions};

    /// A primary-style table: [0, 64 GiB) mapped, of which only two ranges are RAM.
    #[test]
    fn buffers_outside_ram_are_refused_even_where_the_table_maps() {
        let mut mem = FakeMem::new(0x20_0000_0000);
        let opts = NptOptions {
            huge_pages: false,
            nx: true,
        };
        let mut npt = Npt::new(&mut mem, opts).unwrap();
        npt.map_identity(&mut mem, 0, 64 << 30, Perm::RWX).unwrap();
        let ram = [
            Range::new(0, 0x4000_0000),
            Range::new(0x4500_0000, 0x1000_0000),
        ];
        let primary = RamOnly {
            table: &npt,
            ram: Some(&ram),
        };
        let mut pages = 0;
        let mut count = |_: &mut FakeMem, _, _, _| pages += 1;
        // Inside RAM: accepted, page by page.
        assert!(primary
            .for_each_page(&mut mem, 0x1000, 0x2000, Access::WRITE, &mut count)
            .is_ok());
        assert_eq!(pages, 2);
        // The table maps these, RAM does not: 63 GiB (beyond a 4 GiB host map), the local
        // APIC, the gap between the RAM ranges, and a buffer running off the end of RAM.
        for (gpa, len) in [
            (63 << 30, 8),
            (0xfee0_0000, 4),
            (0x4000_0000, 1),
            (0x4000_0000 - 4, 8),
            (0x5500_0000 - 8, 16),
        ] {
            assert!(
                primary
                    .for_each_page(&mut mem, gpa, len, Access::READ, &mut |_, _, _, _| {})
                    .is_err(),
                "{gpa:#x}+{len}"
            );
            assert!(npt.translate_gpa(&mut mem, gpa).is_some(), "{gpa:#x}");
        }
        // A test partition's table is all RAM.
        let test = RamOnly {
            table: &npt,
            ram: None,
        };
        assert!(test.translate_gpa(&mut mem, 63 << 30).is_some());
    }
}

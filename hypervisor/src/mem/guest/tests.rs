//! Checked guest-memory access, run against both second-level formats: the
//! NPT (SVM) and the EPT (VMX) built from the same partition must answer
//! every access the same way.

use super::*;
use crate::intel::ept::{Ept, EptCaps, EptPerms};
use crate::intel::memtype::Mtrrs;
use crate::mem::fake::FakeMem;
use crate::mem::second_level::{Denied, Perm};
use crate::npt::{Npt, NptOptions};

/// Frames for tables come from here up, far from the partition.
const FRAMES: u64 = 0x10_0000_0000;
/// EPT capabilities with 2 MiB pages (and 4-level walks, WB tables).
const EPT_CAPS: EptCaps = EptCaps(0x0f01_0633_4141 | (1 << 16));

/// The partition: 16..20 MiB read-write-execute (the guest's tables at
/// 16 MiB), a read-only pair of pages at 21 MiB, one read-write page at
/// 22 MiB, nothing between them.
const REGIONS: [(u64, u64, Perm); 3] = [
    (0x100_0000, 0x40_0000, Perm::RWX),
    (0x150_0000, 0x2000, Perm::RO),
    (0x160_0000, 0x1000, Perm::RW),
];
const CR3: u64 = 0x100_0000;

#[derive(Clone, Copy, Debug)]
enum Format {
    Npt,
    Ept,
}
const BOTH: [Format; 2] = [Format::Npt, Format::Ept];

fn build(mem: &mut FakeMem, format: Format) -> Box<dyn SecondLevel<FakeMem>> {
    match format {
        Format::Npt => {
            let opts = NptOptions {
                huge_pages: false,
                nx: true,
            };
            let mut npt = Npt::new(mem, opts).unwrap();
            for (start, size, perm) in REGIONS {
                npt.map_identity(mem, start, size, perm).unwrap();
            }
            Box::new(npt)
        }
        Format::Ept => {
            let mtrrs = Mtrrs::all_write_back(39);
            let mut ept = Ept::new(mem, EPT_CAPS).unwrap();
            for (start, size, perm) in REGIONS {
                ept.map_identity(mem, start, size, EptPerms::from(perm), &mtrrs)
                    .unwrap();
            }
            Box::new(ept)
        }
    }
}

/// The guest's own tables identity-map 0..1 GiB with 2 MiB pages, like the
/// test guests'.
fn write_guest_tables(mem: &mut FakeMem) {
    let (pml4, pdpt, pd) = (CR3, CR3 + 0x1000, CR3 + 0x2000);
    mem.write(pml4, &(pdpt | 3).to_le_bytes());
    mem.write(pdpt, &(pd | 3).to_le_bytes());
    for i in 0..512u64 {
        mem.write(pd + i * 8, &((i << 21) | 0x83).to_le_bytes());
    }
}

fn setup(format: Format) -> (FakeMem, Box<dyn SecondLevel<FakeMem>>) {
    let mut mem = FakeMem::new(FRAMES);
    let sl = build(&mut mem, format);
    write_guest_tables(&mut mem);
    (mem, sl)
}

#[test]
fn reads_and_writes_inside_the_partition() {
    for f in BOTH {
        let (mut mem, sl) = setup(f);
        let mut g = GuestMemory {
            second_level: &*sl,
            mem: &mut mem,
            paging: Paging::Long { cr3: CR3 },
        };
        assert_eq!(g.translate(0x123_4567), Ok(0x123_4567), "{f:?}");
        g.write(0x120_0ffe, b"hello").unwrap(); // crosses a page boundary
        let mut buf = [0u8; 5];
        g.read(0x120_0ffe, &mut buf).unwrap();
        assert_eq!(&buf, b"hello", "{f:?}");
    }
}

#[test]
fn refuses_memory_outside_the_partition() {
    for f in BOTH {
        let (mut mem, sl) = setup(f);
        let mut g = GuestMemory {
            second_level: &*sl,
            mem: &mut mem,
            paging: Paging::Long { cr3: CR3 },
        };
        let mut buf = [0u8; 4];
        // mapped by the guest's tables, but not in its partition
        assert_eq!(
            g.read(0x200_0000, &mut buf),
            Err(GuestMemError::OutsidePartition { gpa: 0x200_0000 }),
            "{f:?}"
        );
        // straddling the first region's end: nothing copied
        g.write(0x13f_fffc, &[1, 2, 3, 4]).unwrap();
        assert_eq!(
            g.write(0x13f_fffe, &[9, 9, 9, 9]),
            Err(GuestMemError::OutsidePartition { gpa: 0x140_0000 }),
            "{f:?}"
        );
        g.read(0x13f_fffc, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4], "{f:?}");
        // not mapped by the guest at all (above 1 GiB)
        assert_eq!(
            g.translate(0x4000_0000),
            Err(GuestMemError::NotMapped { gva: 0x4000_0000 }),
            "{f:?}"
        );
        assert!(g.read(u64::MAX - 1, &mut buf).is_err(), "{f:?}");
    }
}

#[test]
fn read_only_memory_is_readable_but_never_written() {
    for f in BOTH {
        let (mut mem, sl) = setup(f);
        mem.write(0x150_1ffc, b"ro!!");
        let mut g = GuestMemory {
            second_level: &*sl,
            mem: &mut mem,
            paging: Paging::None,
        };
        let mut buf = [0u8; 4];
        g.read(0x150_1ffc, &mut buf).unwrap();
        assert_eq!(&buf, b"ro!!", "{f:?}");
        assert_eq!(
            g.write(0x150_1ffc, b"rw!!"),
            Err(GuestMemError::OutsidePartition { gpa: 0x150_1ffc }),
            "{f:?}"
        );
        assert_eq!(g.check(0x150_0000, 0x2000, false), Ok(()), "{f:?}");
        // the read-only pages end where the partition does
        assert!(g.check(0x150_0000, 0x2001, false).is_err(), "{f:?}");
        g.read(0x150_1ffc, &mut buf).unwrap();
        assert_eq!(&buf, b"ro!!", "{f:?}");
    }
}

#[test]
fn guest_page_tables_outside_the_partition_are_refused() {
    for f in BOTH {
        let (mut mem, sl) = setup(f);
        let mut g = GuestMemory {
            second_level: &*sl,
            mem: &mut mem,
            paging: Paging::Long { cr3: 0x500_0000 },
        };
        assert_eq!(
            g.translate(0x100_0000),
            Err(GuestMemError::OutsidePartition { gpa: 0x500_0000 }),
            "{f:?}"
        );
        let mut g = GuestMemory {
            second_level: &*sl,
            mem: &mut mem,
            paging: Paging::None,
        };
        assert_eq!(g.translate(0x42), Ok(0x42), "{f:?}");
    }
}

/// The NPT and the EPT of one partition give the same answer for every
/// range: mapped, unmapped, partly mapped, read-only, wrapping.
#[test]
fn npt_and_ept_of_one_partition_answer_identically() {
    let mut mem = FakeMem::new(FRAMES);
    let npt = build(&mut mem, Format::Npt);
    let ept = build(&mut mem, Format::Ept);
    let (r, w, x) = (Access::READ, Access::WRITE, Access::EXEC);
    let deny = |gpa| Err(Denied { gpa });
    // (gpa, len, access, expected answer)
    let cases: [(u64, u64, Access, Result<(), Denied>); 16] = [
        // mapped
        (0x100_0000, 0x40_0000, w, Ok(())),
        (0x13f_f000, 0x1000, x, Ok(())),
        (0x160_0000, 0x1000, w, Ok(())),
        (0x123_4567, 1, r, Ok(())),
        // empty ranges touch nothing
        (0x900_0000, 0, w, Ok(())),
        // unmapped
        (0, 1, r, deny(0)),
        (0x140_0000, 0x1000, r, deny(0x140_0000)),
        (0x150_2000, 8, r, deny(0x150_2000)),
        (0xfee0_0000, 4, w, deny(0xfee0_0000)),
        // partly mapped: the first refused byte is reported
        (0x13f_fff0, 0x20, r, deny(0x140_0000)),
        (0x14f_fff0, 0x20, r, deny(0x14f_fff0)),
        (0x160_0ff0, 0x20, w, deny(0x160_1000)),
        // read-only and not executable
        (0x150_0000, 0x2000, r, Ok(())),
        (0x150_0ff0, 0x20, w, deny(0x150_0ff0)),
        (0x160_0000, 4, x, deny(0x160_0000)),
        // wrapping
        (u64::MAX - 3, 8, r, deny(u64::MAX - 3)),
    ];
    for (gpa, len, access, want) in cases {
        let a = npt.check_range(&mut mem, gpa, len, access);
        let b = ept.check_range(&mut mem, gpa, len, access);
        assert_eq!(a, want, "NPT {gpa:#x}+{len:#x} {}", access.name());
        assert_eq!(b, want, "EPT {gpa:#x}+{len:#x} {}", access.name());
    }
    // Page by page across the partition and around it: same host address
    // and rights (leaf sizes may differ between formats).
    for gpa in (0xf0_0000..0x170_0000u64).step_by(0x1000) {
        for probe in [gpa, gpa + 0x7ff] {
            let a = npt.translate_gpa(&mut mem, probe).map(|m| (m.hpa, m.perm));
            let b = ept.translate_gpa(&mut mem, probe).map(|m| (m.hpa, m.perm));
            assert_eq!(a, b, "{probe:#x}");
            let inside = REGIONS
                .iter()
                .find(|(s, n, _)| (*s..s + n).contains(&probe));
            assert_eq!(a, inside.map(|&(_, _, p)| (probe, p)), "{probe:#x}");
        }
    }
}

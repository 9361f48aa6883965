//! Local APIC interrupt command register (ICR): the encoding of inter-processor interrupts.
//!
//! Pure encoding and decoding, shared by the hypervisor (which sends INIT to a CPU and
//! checks the ICR writes of its guests) and by guests. The register layouts are the
//! Intel SDM's (vol. 3A, 11.6.1 "Interrupt Command Register"): in xAPIC mode the ICR is
//! two 32-bit MMIO registers (`ICR_LOW` at offset 0x300, `ICR_HIGH` at 0x310, destination
//! in bits 31:24 of the high half); in x2APIC mode it is one 64-bit MSR (0x830) with a
//! 32-bit destination in bits 63:32. Register access itself stays with the caller.

/// The x2APIC ICR MSR.
pub const X2APIC_ICR_MSR: u32 = 0x830;
/// IA32_APIC_BASE: the APIC's physical base (bits 51:12), x2APIC mode (bit 10),
/// global enable (bit 11).
pub const APIC_BASE_MSR: u32 = 0x1b;
pub const APIC_BASE_X2APIC: u64 = 1 << 10;
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
pub const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// xAPIC MMIO offsets of the ICR halves; the low half is written last (it sends).
pub const XAPIC_ICR_LOW: u64 = 0x300;
pub const XAPIC_ICR_HIGH: u64 = 0x310;
/// ICR low bit 12 (xAPIC only): the previous IPI is still being sent.
pub const ICR_DELIVERY_PENDING: u32 = 1 << 12;
/// xAPIC MMIO register offsets the hypervisor reads or emulates.
pub mod xapic {
    pub const ID: u64 = 0x20;
    pub const TPR: u64 = 0x80;
    pub const EOI: u64 = 0xb0;
    /// Logical destination register: bits 31:24 are the CPU's logical ID.
    pub const LDR: u64 = 0xd0;
    /// Destination format register: model in bits 31:28 (1111b flat, 0000b cluster).
    pub const DFR: u64 = 0xe0;
    pub const SVR: u64 = 0xf0;
    pub const ICR_LOW: u64 = super::XAPIC_ICR_LOW;
    pub const ICR_HIGH: u64 = super::XAPIC_ICR_HIGH;
    /// Size of the register page.
    pub const PAGE: u64 = 0x1000;
}
/// The x2APIC EOI MSR.
pub const X2APIC_EOI_MSR: u32 = 0x80b;
/// The x2APIC self-IPI MSR (a fixed IPI to the writing CPU, vector in bits 7:0).
pub const X2APIC_SELF_IPI_MSR: u32 = 0x83f;
/// The x2APIC MSR range (0x800..=0x8ff).
pub const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8ff;

const LEVEL_ASSERT: u64 = 1 << 14;
const TRIGGER_LEVEL: u64 = 1 << 15;
const DEST_LOGICAL: u64 = 1 << 11;
const SHORTHAND_SHIFT: u32 = 18;

/// ICR bits 10:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    /// 011b and 111b are reserved.
    Reserved(u8),
}

impl DeliveryMode {
    const fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            other => DeliveryMode::Reserved(other),
        }
    }

    const fn bits(self) -> u64 {
        match self {
            DeliveryMode::Fixed => 0,
            DeliveryMode::LowestPriority => 1,
            DeliveryMode::Smi => 2,
            DeliveryMode::Nmi => 4,
            DeliveryMode::Init => 5,
            DeliveryMode::StartUp => 6,
            DeliveryMode::Reserved(b) => (b & 7) as u64,
        }
    }
}

/// ICR bits 19:18.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    None,
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// One IPI as the ICR describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icr {
    pub vector: u8,
    pub mode: DeliveryMode,
    /// Logical (true) or physical destination mode.
    pub logical: bool,
    /// Level assert (an INIT with level de-assert is the obsolete "INIT level de-assert").
    pub assert: bool,
    pub level_triggered: bool,
    pub shorthand: Shorthand,
    /// Destination APIC ID (physical mode) or logical destination.
    pub destination: u32,
}

impl Icr {
    /// An IPI to one CPU by APIC ID (physical mode, no shorthand, level assert).
    pub const fn to_cpu(mode: DeliveryMode, vector: u8, apic_id: u32) -> Icr {
        Icr {
            vector,
            mode,
            logical: false,
            assert: true,
            level_triggered: false,
            shorthand: Shorthand::None,
            destination: apic_id,
        }
    }

    /// INIT to one CPU.
    pub const fn init(apic_id: u32) -> Icr {
        Icr::to_cpu(DeliveryMode::Init, 0, apic_id)
    }

    /// Start-up (SIPI) to one CPU: it begins in real mode at `vector << 12`.
    pub const fn startup(apic_id: u32, vector: u8) -> Icr {
        Icr::to_cpu(DeliveryMode::StartUp, vector, apic_id)
    }

    /// NMI to one CPU.
    pub const fn nmi(apic_id: u32) -> Icr {
        Icr::to_cpu(DeliveryMode::Nmi, 0, apic_id)
    }

    const fn low_bits(&self) -> u64 {
        let mut v = self.vector as u64 | (self.mode.bits() << 8);
        if self.logical {
            v |= DEST_LOGICAL;
        }
        if self.assert {
            v |= LEVEL_ASSERT;
        }
        if self.level_triggered {
            v |= TRIGGER_LEVEL;
        }
        let sh = match self.shorthand {
            Shorthand::None => 0,
            Shorthand::SelfOnly => 1,
            Shorthand::AllIncludingSelf => 2,
            Shorthand::AllExcludingSelf => 3,
        };
        v | (sh << SHORTHAND_SHIFT)
    }

    /// The x2APIC MSR value (destination in bits 63:32).
    pub const fn to_x2apic(&self) -> u64 {
        self.low_bits() | ((self.destination as u64) << 32)
    }

    /// The xAPIC `(ICR_HIGH, ICR_LOW)` values (destination in bits 31:24 of the high half;
    /// IDs above 255 do not fit xAPIC mode and are cut to 8 bits).
    pub const fn to_xapic(&self) -> (u32, u32) {
        ((self.destination & 0xff) << 24, self.low_bits() as u32)
    }

    /// Decode an x2APIC ICR value.
    pub const fn from_x2apic(value: u64) -> Icr {
        Icr {
            vector: value as u8,
            mode: DeliveryMode::from_bits((value >> 8) as u8),
            logical: value & DEST_LOGICAL != 0,
            assert: value & LEVEL_ASSERT != 0,
            level_triggered: value & TRIGGER_LEVEL != 0,
            shorthand: match (value >> SHORTHAND_SHIFT) & 3 {
                0 => Shorthand::None,
                1 => Shorthand::SelfOnly,
                2 => Shorthand::AllIncludingSelf,
                _ => Shorthand::AllExcludingSelf,
            },
            destination: (value >> 32) as u32,
        }
    }

    /// Decode the xAPIC register pair (`high` = ICR bits 63:32, destination in 31:24).
    pub const fn from_xapic(high: u32, low: u32) -> Icr {
        let mut icr = Icr::from_x2apic(low as u64);
        icr.destination = high >> 24;
        icr
    }

    /// The one CPU a physical-mode, no-shorthand IPI names; `None` for broadcasts,
    /// shorthands and logical destinations.
    pub const fn single_target(&self) -> Option<u32> {
        match (self.logical, self.shorthand) {
            (false, Shorthand::None) if self.destination != 0xffff_ffff => Some(self.destination),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_startup_encode_as_the_sdm_shows() {
        // INIT, level assert, physical, APIC 2: 0x4500; SIPI vector 0x20: 0x4620.
        assert_eq!(Icr::init(2).to_x2apic(), 0x0000_0002_0000_4500);
        assert_eq!(Icr::startup(2, 0x20).to_x2apic(), 0x0000_0002_0000_4620);
        assert_eq!(Icr::init(3).to_xapic(), (0x0300_0000, 0x4500));
        assert_eq!(Icr::startup(0x1f, 0x9a).to_xapic(), (0x1f00_0000, 0x469a));
    }

    #[test]
    fn decoding_inverts_encoding() {
        for icr in [
            Icr::init(7),
            Icr::startup(300, 0xff),
            Icr {
                vector: 0x41,
                mode: DeliveryMode::Fixed,
                logical: true,
                assert: true,
                level_triggered: true,
                shorthand: Shorthand::AllExcludingSelf,
                destination: 0x0001_0002,
            },
        ] {
            assert_eq!(Icr::from_x2apic(icr.to_x2apic()), icr);
        }
        assert_eq!(
            Icr::from_x2apic(0x700).mode,
            DeliveryMode::Reserved(7),
            "111b is reserved"
        );
    }

    #[test]
    fn xapic_pairs_decode_with_an_8_bit_destination() {
        for icr in [Icr::init(3), Icr::startup(0xfe, 0x9a), Icr::nmi(1)] {
            let (high, low) = icr.to_xapic();
            assert_eq!(Icr::from_xapic(high, low), icr);
        }
        // Bits 23:0 of the high half are reserved: ignored.
        assert_eq!(Icr::from_xapic(0x0200_abcd, 0x4500), Icr::init(2));
        assert_eq!(Icr::nmi(4).to_xapic(), (0x0400_0000, 0x4400));
    }

    #[test]
    fn only_physical_unicast_has_a_single_target() {
        assert_eq!(Icr::init(5).single_target(), Some(5));
        let mut broadcast = Icr::init(0xffff_ffff);
        assert_eq!(broadcast.single_target(), None);
        broadcast.destination = 1;
        broadcast.shorthand = Shorthand::AllExcludingSelf;
        assert_eq!(broadcast.single_target(), None);
        let logical = Icr {
            logical: true,
            ..Icr::init(1)
        };
        assert_eq!(logical.single_target(), None);
    }
}

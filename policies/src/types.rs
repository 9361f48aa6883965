//! Core policy vocabulary shared by the TOML schema and the compiled form.
//!
//! Everything here is `no_std` without `alloc`: the hypervisor decodes the
//! compiled policy into these types before it has an allocator.

use core::fmt;

/// Hybrid core class as reported by CPUID leaf 0x1A (`EAX[31:24]`):
/// 0x40 = Intel Core (performance), 0x20 = Intel Atom (efficiency).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
pub enum CoreClass {
    /// Performance core (logical CPU; Hyper-Threading siblings count twice).
    P,
    /// Efficiency core.
    E,
}

impl CoreClass {
    pub const ALL: [CoreClass; 2] = [CoreClass::P, CoreClass::E];

    pub const fn code(self) -> u8 {
        match self {
            CoreClass::P => 0,
            CoreClass::E => 1,
        }
    }

    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(CoreClass::P),
            1 => Some(CoreClass::E),
            _ => None,
        }
    }

    /// The core type CPUID leaf 0x1A reports for this class.
    pub const fn cpuid_1a_core_type(self) -> u8 {
        match self {
            CoreClass::P => 0x40,
            CoreClass::E => 0x20,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            CoreClass::P => "P",
            CoreClass::E => "E",
        }
    }
}

impl fmt::Display for CoreClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a partition is for; decides how the hypervisor starts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "kebab-case"))]
pub enum Role {
    /// The gaming/host guest booted by the firmware (blue-pill start). Exactly one.
    Primary,
    /// The AI partition (model cache, inference services).
    Ai,
    /// Container guests.
    Containers,
    /// A small `no_std` test guest started by the hypervisor itself.
    Test,
}

impl Role {
    pub const fn code(self) -> u8 {
        match self {
            Role::Primary => 0,
            Role::Ai => 1,
            Role::Containers => 2,
            Role::Test => 3,
        }
    }

    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Role::Primary),
            1 => Some(Role::Ai),
            2 => Some(Role::Containers),
            3 => Some(Role::Test),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Ai => "ai",
            Role::Containers => "containers",
            Role::Test => "test",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a memory region holds; the hypervisor maps all kinds as normal
/// write-back RAM, the kind tells it (and the guest) what the region is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "kebab-case"))]
pub enum MemoryType {
    /// General-purpose guest RAM.
    Ram,
    /// The AI partition's model cache (large, long-lived model weights).
    ModelCache,
    /// Owned by this partition and also mapped into the partitions named in
    /// `shared_with` (hypercall rings, bulk data).
    Shared,
}

impl MemoryType {
    pub const fn code(self) -> u8 {
        match self {
            MemoryType::Ram => 0,
            MemoryType::ModelCache => 1,
            MemoryType::Shared => 2,
        }
    }

    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(MemoryType::Ram),
            1 => Some(MemoryType::ModelCache),
            2 => Some(MemoryType::Shared),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            MemoryType::Ram => "ram",
            MemoryType::ModelCache => "model-cache",
            MemoryType::Shared => "shared",
        }
    }
}

impl fmt::Display for MemoryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A PCI function address: segment, bus, device (0..=31), function (0..=7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bdf {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// Why a BDF string was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BdfError {
    /// Not of the form `BB:DD.F` or `SSSS:BB:DD.F` with hex numbers.
    Syntax,
    /// Device above 0x1f or function above 7.
    OutOfRange,
}

impl fmt::Display for BdfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BdfError::Syntax => {
                f.write_str("expected a PCI address like \"01:00.0\" or \"0000:01:00.0\" (hex)")
            }
            BdfError::OutOfRange => f.write_str("PCI device must be <= 1f and function <= 7"),
        }
    }
}

impl Bdf {
    pub const fn new(segment: u16, bus: u8, device: u8, function: u8) -> Self {
        Bdf {
            segment,
            bus,
            device,
            function,
        }
    }

    /// Packs into `segment << 16 | bus << 8 | device << 3 | function`
    /// (the routing-ID layout PCIe and the IOMMUs use, plus the segment).
    pub const fn to_u32(self) -> u32 {
        (self.segment as u32) << 16
            | (self.bus as u32) << 8
            | ((self.device as u32) & 0x1f) << 3
            | (self.function as u32 & 0x7)
    }

    pub const fn from_u32(raw: u32) -> Self {
        Bdf {
            segment: (raw >> 16) as u16,
            bus: (raw >> 8) as u8,
            device: ((raw >> 3) & 0x1f) as u8,
            function: (raw & 0x7) as u8,
        }
    }

    /// Parses `BB:DD.F` or `SSSS:BB:DD.F` (hex digits, case-insensitive).
    pub fn parse(text: &str) -> Result<Self, BdfError> {
        let (head, function) = text.rsplit_once('.').ok_or(BdfError::Syntax)?;
        let mut parts = head.rsplitn(3, ':');
        let device = parts.next().ok_or(BdfError::Syntax)?;
        let bus = parts.next().ok_or(BdfError::Syntax)?;
        let segment = parts.next();
        let segment = match segment {
            Some(s) => hex(s, 4)? as u16,
            None => 0,
        };
        let bus = hex(bus, 2)? as u8;
        let device = hex(device, 2)?;
        let function = hex(function, 1)?;
        if device > 0x1f || function > 7 {
            return Err(BdfError::OutOfRange);
        }
        Ok(Bdf::new(segment, bus, device as u8, function as u8))
    }
}

fn hex(digits: &str, max_len: usize) -> Result<u32, BdfError> {
    if digits.is_empty() || digits.len() > max_len || !digits.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(BdfError::Syntax);
    }
    u32::from_str_radix(digits, 16).map_err(|_| BdfError::Syntax)
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segment != 0 {
            write!(f, "{:04x}:", self.segment)?;
        }
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

#[cfg(feature = "std")]
impl<'de> serde::Deserialize<'de> for Bdf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::string::String as serde::Deserialize>::deserialize(d)?;
        Bdf::parse(&text).map_err(|e| serde::de::Error::custom(format_args!("{text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_parses_short_and_long_forms() {
        assert_eq!(Bdf::parse("01:00.0"), Ok(Bdf::new(0, 1, 0, 0)));
        assert_eq!(Bdf::parse("0001:aB:1f.7"), Ok(Bdf::new(1, 0xab, 0x1f, 7)));
        assert_eq!(Bdf::parse("01:20.0"), Err(BdfError::OutOfRange));
        assert_eq!(Bdf::parse("01:00.8"), Err(BdfError::OutOfRange));
        for bad in [
            "",
            "01:00",
            "0100.0",
            "1:2:3:4.0",
            "xx:00.0",
            "001:00.0",
            "01:00.0.0",
        ] {
            assert_eq!(Bdf::parse(bad), Err(BdfError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn bdf_packs_and_prints() {
        let bdf = Bdf::new(2, 0x3c, 0x1d, 5);
        assert_eq!(Bdf::from_u32(bdf.to_u32()), bdf);
        assert_eq!(bdf.to_u32(), 0x0002_3ced);
        use std::string::ToString;
        assert_eq!(bdf.to_string(), "0002:3c:1d.5");
        assert_eq!(Bdf::new(0, 1, 0, 0).to_string(), "01:00.0");
    }

    #[test]
    fn codes_round_trip() {
        for c in CoreClass::ALL {
            assert_eq!(CoreClass::from_code(c.code()), Some(c));
        }
        for r in [Role::Primary, Role::Ai, Role::Containers, Role::Test] {
            assert_eq!(Role::from_code(r.code()), Some(r));
        }
        for m in [MemoryType::Ram, MemoryType::ModelCache, MemoryType::Shared] {
            assert_eq!(MemoryType::from_code(m.code()), Some(m));
        }
        assert_eq!(Role::from_code(4), None);
        assert_eq!(CoreClass::from_code(2), None);
        assert_eq!(MemoryType::from_code(3), None);
    }
}

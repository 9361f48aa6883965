//! Guests' XCR0 (the XSAVE feature mask): which values XSETBV may set, and the switch of
//! the physical XCR0 around guest entries, for both backends.
//!
//! XCR0 is in neither the VMCB nor the VMCS: VMRUN / VM entry and the exits leave it as it
//! is. A guest's XSETBV exits (always on VMX, intercepted on SVM); the shared handler checks
//! the value with [`valid`] and hands it to the backend (`Vcpu::set_xcr0`), which keeps it
//! in an [`Xcr0Switch`]. Around each entry the physical XCR0 is set to the guest's value and
//! back to the host's afterwards, only when the two differ (so exits stay cheap when they do
//! not). So a test partition run on the boot CPU cannot leave its XCR0 to the firmware, and
//! no partition's XCR0 reaches another.
//!
//! Initial values: the primary keeps the XCR0 the firmware had (it is the firmware's own
//! CPU, virtualized in place); a test partition starts with [`RESET`] (x87 only, XCR0 after
//! RESET/INIT, SDM Vol. 1 13.3), whatever the firmware left on its CPU.
//!
//! SVM reads XCR0 back after every exit ([`Xcr0Switch::reading_back`]): QEMU 7.2 TCG does
//! not implement the XSETBV intercept, so there a guest's XSETBV changes XCR0 without an
//! exit; the value it set is then taken as the guest's and the host's is put back. (Bochs
//! and newer QEMU intercept it; VMX always exits.) The cost is one XGETBV per exit.
//!
//! Host CR4.OSXSAVE: XGETBV and XSETBV need it in host mode, and firmware may run without it
//! while a guest sets its own (guest CR4 is loaded on entry, XCR0 is shared). [`HostXcr0`]
//! then sets CR4.OSXSAVE just around the instruction and clears it again, so the host's CR4
//! stays what the firmware had. Without XSAVE (CPUID.1:ECX bit 26) nothing is switched: a
//! guest cannot set CR4.OSXSAVE, and its XSETBV raises #UD before any exit.

use crate::platform::instructions::{read_cr4, write_cr4, xgetbv, xsetbv};

pub const X87: u64 = 1 << 0;
pub const SSE: u64 = 1 << 1;
pub const AVX: u64 = 1 << 2;
/// MPX BNDREGS and BNDCSR: both or neither.
pub const MPX: u64 = 0b11 << 3;
/// AVX-512 opmask, ZMM_Hi256, Hi16_ZMM: all or nothing, and only with AVX.
pub const AVX512: u64 = 0b111 << 5;
/// AMX XTILECFG and XTILEDATA: both or neither.
pub const AMX: u64 = 0b11 << 17;
/// XCR0 after RESET/INIT: x87 only.
pub const RESET: u64 = X87;

const CR4_OSXSAVE: u64 = 1 << 18;

/// Whether XSETBV of `value` to XCR `index` is valid, i.e. would not raise #GP on a CPU
/// whose CPUID.(EAX=0xD,ECX=0) EDX:EAX is `supported` (SDM Vol. 2, XSETBV): only XCR0,
/// x87 always set, nothing the CPU lacks, AVX only with SSE, the MPX, AVX-512 and AMX
/// groups whole, AVX-512 only with AVX. Guests' values pass this before they reach the
/// hardware, so the host never takes a #GP for them.
pub fn valid(index: u32, value: u64, supported: u64) -> bool {
    let whole = |group: u64| value & group == 0 || value & group == group;
    index == 0
        && value & X87 != 0
        && value & !supported == 0
        && (value & AVX == 0 || value & SSE != 0)
        && whole(MPX)
        && whole(AVX512)
        && (value & AVX512 == 0 || value & AVX != 0)
        && whole(AMX)
}

/// One XSAVE state component as CPUID.(EAX=0xD, ECX=i) describes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Component {
    /// EAX: size in bytes.
    pub size: u32,
    /// EBX: offset in the standard (non-compacted) format; 0 for supervisor states.
    pub offset: u32,
    /// ECX bit 1: 64-byte aligned in the compacted format.
    pub align64: bool,
}

/// Legacy region (512 bytes) plus the XSAVE header (64): the smallest XSAVE area.
pub const XSAVE_BASE: u32 = 576;

/// Size of the standard-format XSAVE area for the components in `features` (XCR0):
/// what CPUID.(0xD,0).EBX reports while XCR0 = `features` (SDM vol. 1 13.4, 13.5). The
/// processor answers for the XCR0 loaded when CPUID runs, which in host mode is the host's,
/// so the guest's answer is computed from the sub-leaves (`component(i)`).
pub fn standard_size(features: u64, component: impl Fn(u32) -> Component) -> u32 {
    (2..63)
        .filter(|i| features & (1 << i) != 0)
        .map(|i| {
            let c = component(i);
            c.offset.saturating_add(c.size)
        })
        .fold(XSAVE_BASE, u32::max)
}

/// Size of the compacted-format XSAVE area for the components in `features`
/// (XCR0 | IA32_XSS): what CPUID.(0xD,1).EBX reports (SDM vol. 1 13.4.3): components
/// follow the header in order, each 64-byte aligned where its sub-leaf says so.
pub fn compacted_size(features: u64, component: impl Fn(u32) -> Component) -> u32 {
    (2..63)
        .filter(|i| features & (1 << i) != 0)
        .fold(XSAVE_BASE, |at, i| {
            let c = component(i);
            let start = if c.align64 {
                at.saturating_add(63) & !63
            } else {
                at
            };
            start.saturating_add(c.size)
        })
}

/// IA32_XSS (0xDA0) of the running CPU, 0 where it has none (CPUID.(0xD,1).EAX bit 3).
/// No backend switches it: test partitions cannot write it (every MSR exits and is
/// refused), the primary writes the physical one, so it is in effect for both.
pub fn current_xss() -> u64 {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    const MSR_XSS: u32 = 0xda0;
    if __cpuid(0).eax < 0xd
        || __cpuid(1).ecx & (1 << 26) == 0
        || __cpuid_count(0xd, 1).eax & (1 << 3) == 0
    {
        return 0;
    }
    // SAFETY: the CPU reports IA32_XSS (checked above); reading it changes nothing.
    unsafe { crate::platform::instructions::rdmsr(MSR_XSS) }
}

/// The physical XCR0 of the running CPU (a fake in tests).
pub trait Xcr0Hw {
    /// Whether the CPU has XSAVE (and so XCR0).
    fn has_xsave(&mut self) -> bool;
    /// The current XCR0 (only called when [`Xcr0Hw::has_xsave`]).
    fn read(&mut self) -> u64;
    /// Set XCR0.
    ///
    /// # Safety
    /// `value` is valid for this CPU ([`valid`] against its CPUID 0xD, or read from it).
    unsafe fn write(&mut self, value: u64);
}

/// What the host of a vCPU's CPU has in XCR0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Host {
    /// Not read yet (read on the first entry, on the CPU that runs the vCPU).
    Unknown,
    /// The CPU has no XSAVE: nothing to switch.
    Absent,
    Value(u64),
}

/// One vCPU's XCR0 and the host value of the CPU it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xcr0Switch {
    guest: u64,
    host: Host,
    read_back: bool,
}

impl Xcr0Switch {
    /// A vCPU whose guest starts with XCR0 = `guest` (valid on its CPU).
    pub const fn new(guest: u64) -> Self {
        Xcr0Switch {
            guest,
            host: Host::Unknown,
            read_back: false,
        }
    }

    /// Also catch XSETBVs that did not exit: after each exit XCR0 is read back
    /// (one XGETBV) and a change is taken as the guest's own. For SVM, whose
    /// XSETBV intercept QEMU 7.2 TCG does not implement; VMX always exits.
    pub const fn reading_back(mut self) -> Self {
        self.read_back = true;
        self
    }

    pub fn guest(&self) -> u64 {
        self.guest
    }

    /// The guest's XSETBV, already checked with [`valid`].
    pub fn set_guest(&mut self, value: u64) {
        self.guest = value;
    }

    /// Before an entry: load the guest's XCR0 when the host's differs. The host's XCR0 is
    /// read once, on the first entry: a vCPU never changes CPUs, and while a CPU runs
    /// guests only this switch writes its XCR0.
    ///
    /// # Safety
    /// `hw` is the CPU that enters, in host mode at CPL 0; the guest value was set by
    /// [`Xcr0Switch::new`] or [`Xcr0Switch::set_guest`] under their rules.
    pub unsafe fn enter(&mut self, hw: &mut impl Xcr0Hw) {
        if self.host == Host::Unknown {
            self.host = if hw.has_xsave() {
                Host::Value(hw.read())
            } else {
                Host::Absent
            };
        }
        if let Host::Value(host) = self.host {
            if host != self.guest {
                // SAFETY: the caller's contract: the guest's value is valid on this CPU.
                unsafe { hw.write(self.guest) };
            }
        }
    }

    /// After the exit: take a guest change that did not exit (when reading back), then give
    /// the host its XCR0 back if the guest's differs.
    ///
    /// # Safety
    /// As [`Xcr0Switch::enter`], on the same CPU, right after the exit that followed it.
    pub unsafe fn leave(&mut self, hw: &mut impl Xcr0Hw) {
        let Host::Value(host) = self.host else {
            return;
        };
        if self.read_back {
            // The CPU accepted it, so it is valid there.
            self.guest = hw.read();
        }
        if self.guest != host {
            // SAFETY: a value read from this CPU.
            unsafe { hw.write(host) };
        }
    }
}

/// The running CPU's XCR0, through XGETBV/XSETBV.
pub struct HostXcr0(());

impl HostXcr0 {
    /// # Safety
    /// Used at CPL 0 on the running CPU, in host mode (or by the firmware's code before the
    /// blue-pill): XGETBV/XSETBV and CR4 writes are privileged.
    pub unsafe fn new() -> Self {
        HostXcr0(())
    }

    /// The CPU's current XCR0, or [`RESET`] without XSAVE: the initial value of a vCPU that
    /// keeps what the firmware had (the primary).
    ///
    /// # Safety
    /// CPL 0, host mode (or the firmware before the blue-pill).
    pub unsafe fn current_or_reset() -> u64 {
        let mut hw = HostXcr0(());
        if hw.has_xsave() {
            hw.read()
        } else {
            RESET
        }
    }
}

/// Run `f` with CR4.OSXSAVE set, then give CR4 its old value back.
///
/// # Safety
/// CPL 0 on a CPU with XSAVE (OSXSAVE is then a valid CR4 bit, also under VMX's fixed bits).
unsafe fn with_osxsave<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: the caller's contract; setting OSXSAVE changes nothing but XSAVE's availability.
    unsafe {
        let cr4 = read_cr4();
        if cr4 & CR4_OSXSAVE != 0 {
            return f();
        }
        write_cr4(cr4 | CR4_OSXSAVE);
        let r = f();
        write_cr4(cr4);
        r
    }
}

impl Xcr0Hw for HostXcr0 {
    fn has_xsave(&mut self) -> bool {
        core::arch::x86_64::__cpuid(1).ecx & (1 << 26) != 0
    }

    fn read(&mut self) -> u64 {
        // SAFETY: the CPU has XSAVE (the trait's rule); `new`'s contract: CPL 0 in host
        // mode; XCR0 always exists.
        unsafe { with_osxsave(|| xgetbv(0)) }
    }

    unsafe fn write(&mut self, value: u64) {
        // SAFETY: only called once `has_xsave` said yes; the caller guarantees the value.
        unsafe { with_osxsave(|| xsetbv(0, value)) }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// [`Xcr0Switch::enter`] on a fake CPU.
    fn enter(sw: &mut Xcr0Switch, hw: &mut FakeXcr0) {
        // SAFETY: a fake CPU records XSETBVs; no hardware state is touched.
        unsafe { sw.enter(hw) }
    }

    /// [`Xcr0Switch::leave`] on a fake CPU.
    fn leave(sw: &mut Xcr0Switch, hw: &mut FakeXcr0) {
        // SAFETY: as in `enter`.
        unsafe { sw.leave(hw) }
    }

    /// CPUID 0xD sub-leaves of an AVX-512 part with PKRU (Skylake-SP layout).
    pub(crate) fn skylake_component(i: u32) -> Component {
        let (size, offset) = match i {
            2 => (256, 576),
            5 => (64, 1088),
            6 => (512, 1152),
            7 => (1024, 1664),
            9 => (8, 2688),
            _ => (0, 0),
        };
        Component {
            size,
            offset,
            align64: false,
        }
    }

    #[test]
    fn xsave_sizes_follow_the_components_enabled() {
        // The review's case: guest XCR0 0x7 needs 832 bytes whatever the host has.
        assert_eq!(standard_size(0x7, skylake_component), 832);
        assert_eq!(standard_size(0x3, skylake_component), XSAVE_BASE);
        assert_eq!(standard_size(0x1, skylake_component), XSAVE_BASE);
        assert_eq!(standard_size(0x2e7, skylake_component), 2696);
        // Standard format keeps fixed offsets: PKRU alone still sits at 2688.
        assert_eq!(standard_size(0x203, skylake_component), 2696);
        // Compacted: packed in order.
        assert_eq!(compacted_size(0x203, skylake_component), 584);
        assert_eq!(compacted_size(0x207, skylake_component), 840);
        let aligned = |i| Component {
            align64: i == 9,
            ..skylake_component(i)
        };
        assert_eq!(compacted_size(0x207, aligned), 576 + 256 + 8);
        assert_eq!(
            compacted_size(0x203 | 1 << 8, |i| match i {
                // A supervisor state (PT, 8) of 72 bytes, then aligned PKRU.
                8 => Component {
                    size: 72,
                    offset: 0,
                    align64: false
                },
                _ => aligned(i),
            }),
            576 + 72 + 56 + 8
        );
    }

    /// A CPU's XCR0 that counts its writes.
    struct FakeXcr0 {
        value: Option<u64>,
        writes: usize,
    }

    impl Xcr0Hw for FakeXcr0 {
        fn has_xsave(&mut self) -> bool {
            self.value.is_some()
        }
        fn read(&mut self) -> u64 {
            self.value.expect("XGETBV without XSAVE would #UD")
        }
        unsafe fn write(&mut self, value: u64) {
            assert!(self.value.is_some(), "XSETBV without XSAVE would #UD");
            self.value = Some(value);
            self.writes += 1;
        }
    }

    fn cpu(value: u64) -> FakeXcr0 {
        FakeXcr0 {
            value: Some(value),
            writes: 0,
        }
    }

    #[test]
    fn rules_of_xsetbv() {
        let cpu = X87 | SSE | AVX | AVX512 | (1 << 9); // with PKRU
        assert!(valid(0, X87, cpu));
        assert!(valid(0, X87 | SSE, cpu));
        assert!(valid(0, X87 | SSE | AVX, cpu));
        assert!(valid(0, X87 | SSE | AVX | AVX512, cpu));
        assert!(!valid(1, X87, cpu), "only XCR0");
        assert!(!valid(0, SSE, cpu), "x87 must stay set");
        assert!(!valid(0, 0, cpu));
        assert!(!valid(0, X87 | AVX, cpu), "AVX needs SSE");
        assert!(
            !valid(0, X87 | SSE | AVX | (1 << 5), cpu),
            "AVX-512 is all or nothing"
        );
        assert!(!valid(0, X87 | SSE | AVX512, cpu), "AVX-512 needs AVX");
        assert!(!valid(0, X87 | SSE | MPX, cpu), "not supported by this CPU");
        assert!(!valid(0, X87 | (1 << 63), cpu));
        let mpx_amx = X87 | SSE | MPX | AMX;
        assert!(valid(0, X87 | MPX, mpx_amx) && valid(0, X87 | AMX, mpx_amx));
        assert!(!valid(0, X87 | (1 << 3), mpx_amx), "MPX is both or neither");
        assert!(
            !valid(0, X87 | (1 << 18), mpx_amx),
            "AMX is both or neither"
        );
    }

    #[test]
    fn switches_only_when_guest_and_host_differ() {
        let host = X87 | SSE | AVX;
        let mut hw = cpu(host);
        let mut sw = Xcr0Switch::new(host);
        enter(&mut sw, &mut hw);
        leave(&mut sw, &mut hw);
        assert_eq!(hw.writes, 0, "same value: no XSETBV");
        sw.set_guest(X87 | SSE);
        enter(&mut sw, &mut hw);
        assert_eq!(hw.value, Some(X87 | SSE), "the guest runs with its value");
        leave(&mut sw, &mut hw);
        assert_eq!(hw.value, Some(host), "the host gets its own back");
        assert_eq!(hw.writes, 2);
        assert_eq!(sw.guest(), X87 | SSE);
    }

    #[test]
    fn reading_back_takes_a_change_that_did_not_exit() {
        let mut hw = cpu(X87);
        let mut sw = Xcr0Switch::new(RESET).reading_back();
        enter(&mut sw, &mut hw);
        hw.value = Some(X87 | SSE | AVX); // the guest's XSETBV, not intercepted
        leave(&mut sw, &mut hw);
        assert_eq!(sw.guest(), X87 | SSE | AVX, "the guest keeps its value");
        assert_eq!(hw.value, Some(X87), "the host gets its own back");
        enter(&mut sw, &mut hw);
        assert_eq!(hw.value, Some(X87 | SSE | AVX), "and the guest its own");
        // Without reading back, a change that did not exit would stay with the host.
        let mut hw = cpu(X87);
        let mut blind = Xcr0Switch::new(RESET);
        enter(&mut blind, &mut hw);
        hw.value = Some(X87 | SSE);
        leave(&mut blind, &mut hw);
        assert_eq!(hw.value, Some(X87 | SSE));
    }

    #[test]
    fn nothing_to_switch_without_xsave() {
        let mut hw = FakeXcr0 {
            value: None,
            writes: 0,
        };
        let mut sw = Xcr0Switch::new(RESET).reading_back();
        sw.set_guest(X87 | SSE);
        enter(&mut sw, &mut hw);
        leave(&mut sw, &mut hw);
        assert_eq!(hw.writes, 0);
    }
}
